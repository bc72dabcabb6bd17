import numpy as np
import pytest
import torch

from neogen.errors import NeogenError
from neogen.multilabel import NO_LABEL, MultiLabelCodec, load_codec
from neogen.tasks import task_for


def label_probabilities(model, codec, ids, mask):
    return task_for(codec).probabilities(model, ids, mask)


def multilabel_loss(model, codec, ids, mask, targets):
    return task_for(codec).loss(model, ids, mask, targets, None, "vocab")

SETS = [("anger",), ("joy", "anger"), ("fear",), ("joy",), ("fear", "joy"), ("anger",)]


def test_independent_codec_gives_every_label_its_own_token(gpt2_bpe, tmp_path):
    codec = MultiLabelCodec.fit(SETS, gpt2_bpe, "independent")
    assert codec.labels == ["anger", "fear", "joy"]
    assert codec.classes.completions == [" anger", " fear", " joy"]
    assert codec.multi_hot(["joy", "anger"]) == [1.0, 0.0, 1.0]
    with pytest.raises(KeyError):
        codec.multi_hot(["surprise"])
    codec.save(tmp_path / "labels.json")
    assert load_codec(tmp_path / "labels.json", gpt2_bpe) == codec


def test_label_words_serve_per_label_encodings_and_not_powerset(gpt2_bpe):
    codec = MultiLabelCodec.fit(SETS, gpt2_bpe, "independent", words={"joy": "happy"})
    assert codec.classes.completions == [" anger", " fear", " happy"]
    with pytest.raises(NeogenError, match="powerset encoding gives a token to each label set"):
        MultiLabelCodec.fit(SETS, gpt2_bpe, "powerset", words={"joy": "happy"})


def test_powerset_codec_maps_each_seen_set_to_one_token(gpt2_bpe, tmp_path):
    codec = MultiLabelCodec.fit([*SETS, ()], gpt2_bpe, "powerset", allow_empty=True)
    assert codec.classes.labels == [NO_LABEL, "anger", "anger,joy", "fear", "fear,joy", "joy"]
    assert len(set(codec.token_ids)) == 6
    assert codec.class_index(("joy", "anger")) == 2 and codec.class_index(("anger", "fear")) is None
    np.testing.assert_array_equal(codec.membership(), [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1],
                                                       [0, 0, 1]])
    codec.save(tmp_path / "labels.json")
    assert load_codec(tmp_path / "labels.json", gpt2_bpe) == codec


def test_powerset_keeps_labels_with_commas_whole(gpt2_bpe):
    sets = [("Texas", "Washington, D.C."), ("Texas",), ("Washington, D.C.",)]
    codec = MultiLabelCodec.fit(sets, gpt2_bpe, "powerset")
    assert codec.labels == ["Texas", "Washington, D.C."]
    assert dict(zip(codec.classes.labels, codec.combinations, strict=True)) == {
        "Texas": ["Texas"], "Texas,Washington, D.C.": ["Texas", "Washington, D.C."],
        "Washington, D.C.": ["Washington, D.C."]}
    assert codec.class_index(["Washington, D.C.", "Texas"]) == codec.classes.labels.index("Texas,Washington, D.C.")


def test_powerset_refuses_sets_that_would_share_a_class(gpt2_bpe):
    with pytest.raises(NeogenError, match=r"\['a', 'b'\] and \['a,b'\] would share the powerset class 'a,b'"):
        MultiLabelCodec.fit([("a", "b"), ("a,b",), ("a",)], gpt2_bpe, "powerset")
    with pytest.raises(NeogenError, match=r"would share the powerset class '\(none\)'"):
        MultiLabelCodec.fit([(), ("(none)",), ("a",)], gpt2_bpe, "powerset", allow_empty=True)


@pytest.mark.parametrize("encoding", ["independent", "yes_no", "powerset"])
def test_labels_are_stripped_so_columns_and_tokens_agree(gpt2_bpe, encoding):
    codec = MultiLabelCodec.fit([(" toxic",), ("insult",), ("insult", " toxic")], gpt2_bpe, encoding)
    assert codec.labels == ["insult", "toxic"]
    assert codec.multi_hot([" toxic"]) == [0.0, 1.0]
    if encoding != "powerset":
        assert codec.classes.labels == codec.labels  # token j is label j's


def test_yes_no_codec_uses_single_token_answers(gpt2_bpe):
    codec = MultiLabelCodec.fit(SETS, gpt2_bpe, "yes_no")
    assert codec.answers == [" yes", " no"]
    assert [gpt2_bpe.decode([t]) for t in codec.answer_ids] == [" yes", " no"]


def test_bad_encodings_and_label_sets_are_refused(gpt2_bpe):
    with pytest.raises(NeogenError, match="unknown multi-label encoding 'softmax'"):
        MultiLabelCodec.fit(SETS, gpt2_bpe, "softmax")
    with pytest.raises(NeogenError, match="at least two labels"):
        MultiLabelCodec.fit([("a",), ("a",)], gpt2_bpe)


@pytest.mark.parametrize("encoding", ["independent", "powerset", "yes_no"])
def test_probabilities_and_loss_of_every_encoding(tiny_neo, gpt2_bpe, encoding):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_neo).eval()
    codec = MultiLabelCodec.fit(SETS, gpt2_bpe, encoding)
    ids = torch.tensor([[464, 3290, 318, 628, 21017, 628], [1212, 628, 21017, 628, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        probs, mass = label_probabilities(model, codec, ids, mask)
    assert probs.shape == (2, 3) and bool(((probs >= 0) & (probs <= 1)).all())
    assert (mass is None) == (encoding == "yes_no")
    # A padded row scores as it does alone: padding never leaks into the answer.
    with torch.no_grad():
        alone, _ = label_probabilities(model, codec, ids[1:, :4], mask[1:, :4])
    torch.testing.assert_close(probs[1:], alone, atol=1e-5, rtol=1e-4)

    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    loss, eval_probs = multilabel_loss(model, codec, ids, mask, y)
    torch.testing.assert_close(eval_probs, probs)
    expected = torch.nn.functional.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), y)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_yes_no_copies_the_prompt_cache_in_bounded_passes(tiny_neo, gpt2_bpe, monkeypatch):
    # Copying the cache for every (text, label) row at once grows with batch x labels; scoring must not.
    from transformers import AutoModelForCausalLM

    import neogen.tasks as tasks

    model = AutoModelForCausalLM.from_pretrained(tiny_neo).eval()
    codec = MultiLabelCodec.fit(SETS, gpt2_bpe, "yes_no")
    ids = torch.tensor([[464, 3290, 318, 628, 21017, 628], [1212, 628, 21017, 628, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        whole, _ = label_probabilities(model, codec, ids, mask)
    rows_seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args, kwargs: rows_seen.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    monkeypatch.setattr(tasks, "YES_NO_CACHE_TOKENS", 2 * ids.shape[1])  # two (text, label) rows per pass
    with torch.no_grad():
        parts, _ = label_probabilities(model, codec, ids, mask)
    hook.remove()
    assert rows_seen == [2, 2, 2, 2]  # the prompt pass, then 2 x 3 rows in passes of 2
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("encoding", ["independent", "powerset", "yes_no"])
def test_each_encoding_trains_saves_loads_classifies_and_scores(tiny_neo, tmp_path, encoding):
    import json

    from conftest import toy_multilabel_rows, write_csv

    from neogen.classify import Classifier
    from neogen.recipe import Recipe
    from neogen.score import score_jsonl
    from neogen.thresholds import Thresholds
    from neogen.train import train

    csv = write_csv(tmp_path / "toy.csv", toy_multilabel_rows(36))
    run = train(Recipe.from_dict({
        "model": {"name": tiny_neo}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "valid_ratio": 0.25, "test_ratio": 0.25, "shuffle": True},
        "train": {"epochs": 1, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "eval_batch_size": 5},
        "multilabel": {"encoding": encoding},
        "output_dir": str(tmp_path / "run"),
    }))
    for name in ("labels.json", "thresholds.json", "eval/test/metrics.json", "eval/test/roc_curves.png",
                 "eval/valid/confusion_matrix.png", "data_report.json"):
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["encoding"] == encoding and results["test"]["n"] == 9
    report = json.loads((run / "data_report.json").read_text())
    assert report["label_sets"]["encoding"] == encoding and report["classes"] == {"anger": 18, "fear": 18, "joy": 18}
    thresholds = Thresholds.load(run / "thresholds.json")
    assert thresholds.tuned_on is not None and thresholds.at_least_one

    clf = Classifier.load(run, batch_size=3)
    assert clf.codec.encoding == encoding and clf.thresholds == thresholds
    texts = ["post 1: furious", "post 2: happy and scared", "post 3: delight"]
    sets = clf.classify(texts)
    assert len(sets) == 3 and all(isinstance(s, list) and s for s in sets)  # at least one label each
    assert clf.classify(texts[0]) == sets[0]
    rows = clf.scores(texts)
    probs = clf.predict_proba(texts).probs
    for row, s, p in zip(rows, sets, probs, strict=True):
        assert row["labels"] == s and list(row["scores"]) == ["anger", "fear", "joy"]
        np.testing.assert_allclose(list(row["scores"].values()), p, atol=1e-6)
        assert ("label_mass" in row) == (encoding != "yes_no")

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), progress=False)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert stats.scored == 3 and [o["labels"] for o in out] == sets and [o["id"] for o in out] == [0, 1, 2]


def test_balanced_positive_weights_train_and_are_recorded(tiny_neo, tmp_path):
    """multi-label class_weight=balanced: BCE's pos_weight = negatives / positives per label, in results.json."""
    import json

    from conftest import toy_multilabel_rows, write_csv

    from neogen.recipe import Recipe
    from neogen.train import train

    rows = toy_multilabel_rows(24)
    csv = write_csv(tmp_path / "toy.csv", rows)
    run = train(Recipe.from_dict({
        "model": {"name": tiny_neo}, "lora": {"r": 4, "alpha": 8}, "data": {"train": str(csv), "valid_ratio": 0.25},
        "train": {"epochs": 1, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "class_weight": "balanced", "evaluate": ["valid"]},
        "output_dir": str(tmp_path / "run"),
    }))
    results = json.loads((run / "results.json").read_text())
    train_rows = rows[:18]  # unshuffled: the last quarter is the validation split
    for label, weight in results["class_weights"].items():
        positives = sum(label in labels.split(";") for _, labels in train_rows)
        assert weight == pytest.approx((len(train_rows) - positives) / positives, rel=1e-6)
    assert results["valid"]["n"] == 6


def test_a_powerset_label_alone_is_not_the_set_whose_completion_it_spells(gpt2_bpe):
    codec = MultiLabelCodec.fit([("anger", "joy"), ("joy",), ("joy", "love")], gpt2_bpe, "powerset")
    assert codec.classes.completions[0] == " anger"  # the set "anger,joy" takes its first label's token
    assert codec.class_index(("anger",)) is None  # unseen as a set: not class 0


def test_powerset_marginals_stay_fp32_and_within_0_1_under_autocast(gpt2_bpe):
    codec = MultiLabelCodec.fit([("a", "b"), ("a",), ("a", "c")], gpt2_bpe, "powerset")  # "a" is in every set
    logits = torch.randn(64, len(codec.classes), generator=torch.Generator().manual_seed(0)) * 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        marginals = task_for(codec).marginals(logits)
    assert marginals.dtype == torch.float32 and marginals.max() <= 1.0 and marginals.min() >= 0.0
    expected = torch.softmax(logits.double(), -1) @ torch.as_tensor(codec.membership()).double()
    torch.testing.assert_close(marginals.double(), expected.clamp(0, 1), rtol=1e-6, atol=1e-6)


def test_a_run_without_thresholds_keeps_its_rule_and_eval_splits_label_sets_as_training(tiny_neo, tmp_path):
    import json

    from conftest import toy_multilabel_rows, write_csv

    from neogen.classify import Classifier
    from neogen.cli import main
    from neogen.recipe import Recipe
    from neogen.train import train

    csv = write_csv(tmp_path / "toy.csv", toy_multilabel_rows(36))
    run = train(Recipe.from_dict({
        "model": {"name": tiny_neo}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "valid_ratio": 0.25, "test_ratio": 0.25, "shuffle": True},
        "train": {"epochs": 1, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32"},
        "multilabel": {"encoding": "independent", "at_least_one": False},
        "output_dir": str(tmp_path / "run"),
    }))
    (run / "thresholds.json").unlink()
    clf = Classifier.load(run)
    assert clf.thresholds.tuned_on is None and clf.thresholds.at_least_one is False  # the recipe's, not the default

    # Every row holds two labels, so no value of the file alone shows that ';' joins labels; the run's labels do.
    pairs = write_csv(tmp_path / "pairs.csv", [row for row in toy_multilabel_rows(12) if ";" in row[1]])
    assert main(["eval", str(run), str(pairs), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 6 and metrics["label_cardinality"]["true"] == 2.0

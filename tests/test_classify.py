import re

import numpy as np
import pytest

import neogen
from neogen.classify import Classifier
from neogen.errors import NeogenError

TEXTS = ["what is a cell", "a much longer question about the angle, the prime and the sum of things", "volt?",
         "acid and atom and bond and more acid", "lens", "force " * 40]


@pytest.fixture(scope="module")
def clf(tiny_run) -> Classifier:
    return Classifier.load(tiny_run, batch_size=2)


def test_classify_keeps_the_input_shape(clf):
    one = clf.classify("what is a cell")
    assert isinstance(one, str) and one in clf.labels
    many = clf.classify(TEXTS)
    assert isinstance(many, list) and len(many) == len(TEXTS) and set(many) <= set(clf.labels)
    assert clf.classify([]) == []


def test_one_text_is_one_row_of_scores(clf):
    one, listed = clf.predict_proba(TEXTS[0]), clf.predict_proba(TEXTS[:1])
    assert one.probs.shape == (1, 4)
    np.testing.assert_array_equal(one.probs, listed.probs)


def test_batches_hold_batch_size_rows_unless_a_token_budget_is_given(clf):
    lengths = [30, 20, 10, 10, 5]
    assert [len(b) for b in clf._batches(lengths)] == [2, 2, 1]  # batch_size 2, no budget
    budgeted = Classifier(clf.model, clf.tokenizer, clf.codec, batch_size=8, max_batch_tokens=45)
    assert budgeted._batches(lengths) == [[0], [1, 2], [3, 4]]  # 30 alone, 2 x 20 <= 45, 2 x 10 <= 45


def test_load_takes_a_token_budget_that_changes_batches_not_scores(clf, tiny_run):
    budgeted = Classifier.load(tiny_run, batch_size=8, max_batch_tokens=40)
    assert budgeted.max_batch_tokens == 40
    batches = budgeted._batches([len(p) for p in budgeted.encoder(TEXTS)])
    assert len(batches) > 1 and sorted(i for b in batches for i in b) == list(range(len(TEXTS)))
    np.testing.assert_allclose(budgeted.predict_proba(TEXTS).probs, clf.predict_proba(TEXTS).probs, atol=1e-5)


def test_batch_sizes_below_one_are_refused_with_both_problems(clf):
    with pytest.raises(NeogenError, match=r"batch_size must be at least 1, got 0; max_batch_tokens must be at least "
                                          r"1, got -5 \(fix"):
        Classifier(clf.model, clf.tokenizer, clf.codec, batch_size=0, max_batch_tokens=-5)


def test_batching_and_sorting_do_not_change_scores(clf):
    together = clf.predict_proba(TEXTS)
    assert together.probs.shape == (len(TEXTS), 4) and together.label_mass.shape == (len(TEXTS),)
    np.testing.assert_allclose(together.probs.sum(axis=1), 1.0, atol=1e-6)
    assert ((together.label_mass > 0) & (together.label_mass <= 1)).all()
    for i, text in enumerate(TEXTS):
        alone = clf.predict_proba([text])
        np.testing.assert_allclose(alone.probs[0], together.probs[i], atol=1e-5)
        np.testing.assert_allclose(alone.label_mass[0], together.label_mass[i], rtol=1e-4)


def test_scores_are_restricted_softmax_of_label_logits(clf):
    import torch

    row = clf.scores("what is a cell")
    assert set(row) == {"label", "scores", "label_mass"} and list(row["scores"]) == clf.labels
    ids = clf.encoder(["what is a cell"])[0]
    with torch.no_grad():
        logits = clf.model(torch.tensor([ids])).logits[0, -1]  # (V,) plain forward, no batching
    expected = torch.softmax(logits[clf.codec.token_ids], -1).numpy()
    np.testing.assert_allclose(list(row["scores"].values()), expected, atol=1e-5)
    assert row["label"] == clf.labels[int(expected.argmax())]
    assert row["label_mass"] == pytest.approx(float(torch.softmax(logits, -1)[clf.codec.token_ids].sum()), rel=1e-4)


def test_top_level_classify(tiny_run):
    assert neogen.classify(["lens", "cell"], model=tiny_run) == Classifier.load(tiny_run).classify(["lens", "cell"])
    assert isinstance(neogen.classify("lens", model=tiny_run), str)


def test_unmerged_adapter_gives_the_same_answers(tiny_run, clf):
    unmerged = Classifier.load(tiny_run, merge=False)
    np.testing.assert_allclose(unmerged.predict_proba(TEXTS).probs, clf.predict_proba(TEXTS).probs, atol=1e-5)


def test_weights_cast_once_for_bf16_scoring_give_the_same_scores(tiny_run):
    import torch

    from neogen.models import cast_for_inference

    loaded = Classifier.load(tiny_run, precision="bf16")  # merged and cast at load
    linear = [m.weight for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(w.dtype == torch.bfloat16 for w in linear)
    assert loaded.model.get_input_embeddings().weight.dtype == torch.float32  # the tied head got its own copy

    merged = Classifier.load(tiny_run, precision="fp32")
    merged.precision = "bf16"
    reference = merged.predict_proba(TEXTS).probs  # autocast casting the fp32 weights at every batch
    cast_for_inference(merged.model, "bf16")
    np.testing.assert_array_equal(merged.predict_proba(TEXTS).probs, reference)
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS).probs, reference)


def test_incomplete_run_dir(tmp_path):
    with pytest.raises(NeogenError, match="not a complete neogen run"):
        Classifier.load(tmp_path)


def test_eval_calibrate_fits_saves_and_applies_a_temperature(tiny_run, tmp_path, capsys):
    """`neogen eval RUN valid.csv --calibrate`: calibration.json, loaded by every later Classifier."""
    import shutil

    from conftest import toy_rows, write_csv

    from neogen.calibration import Temperature
    from neogen.cli import main

    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays uncalibrated
    valid = write_csv(tmp_path / "valid.csv", toy_rows(6))
    assert main(["eval", str(run), str(valid), "--calibrate", "--out", str(tmp_path / "eval")]) == 0
    assert "fitted on" in capsys.readouterr().out
    fitted = Temperature.load(run / "calibration.json")
    assert fitted.n == 24 and fitted.split == str(valid)
    calibrated = Classifier.load(run)
    assert calibrated.calibration == fitted
    raw = Classifier.load(tiny_run).predict_proba(["cell gene"]).probs
    np.testing.assert_allclose(calibrated.predict_proba(["cell gene"]).probs, fitted.apply(raw), atol=1e-6)
    # Fitting again starts from the model's own scores, not from the already-scaled ones.
    assert main(["eval", str(run), str(valid), "--calibrate", "--out", str(tmp_path / "eval")]) == 0
    assert Temperature.load(run / "calibration.json").temperature == pytest.approx(fitted.temperature, rel=1e-3)


# A broken run directory names the problem and the fix, before any model is loaded.

def _broken_copy(tiny_run, tmp_path):
    import shutil

    return shutil.copytree(tiny_run, tmp_path / "run")


def test_a_run_dir_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(NeogenError, match=r"run does not exist \(fix: give the run directory `neogen train` wrote"):
        Classifier.load(tmp_path / "run")


def test_a_file_given_for_the_run_dir_points_at_its_folder(tiny_run):
    folder = re.escape(str(tiny_run))
    with pytest.raises(NeogenError, match=f"is a file, not a run directory .*this file's folder {folder} is one"):
        Classifier.load(tiny_run / "recipe.yaml")


def test_a_folder_of_runs_lists_the_runs_inside_it(tiny_run):
    with pytest.raises(NeogenError, match=r"recipe.yaml is missing \(fix: .*runs inside it: run\)"):
        Classifier.load(tiny_run.parent)


def test_a_tilde_in_the_run_dir_is_expanded(tiny_run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_run, tmp_path / "run")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Classifier.load("~/run").classify(["lens"]) == Classifier.load(tiny_run).classify(["lens"])
    assert neogen.classify("lens", model="~/run") in neogen.classify(["lens"], model=tiny_run)


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json"])
def test_a_missing_adapter_file_is_named_not_taken_for_a_hub_repo(tiny_run, tmp_path, name):
    run = _broken_copy(tiny_run, tmp_path)
    (run / "adapter" / name).unlink()
    with pytest.raises(NeogenError, match=f"adapter/{name}.* is missing .*fix: copy the whole adapter/ folder"):
        Classifier.load(run)


def test_an_unfinished_run_says_how_to_resume_or_which_weights_it_has(tiny_run, tmp_path):
    import shutil

    from neogen.resume import checkpoints

    run = _broken_copy(tiny_run, tmp_path)
    shutil.rmtree(run / "adapter")
    newest = checkpoints(run)[-1].name
    with pytest.raises(NeogenError, match=r"is an unfinished run: adapter/ is missing.*neogen train RECIPE --resume"
                                          r".*adapter='last'"):
        Classifier.load(run)
    shutil.rmtree(run / "last")  # killed mid-training: only Trainer checkpoints
    with pytest.raises(NeogenError, match=f"unfinished run.*--resume.*adapter='checkpoints/{newest}'"):
        Classifier.load(run)
    assert Classifier.load(run, adapter=f"checkpoints/{newest}").classify("lens") in CLASSES
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(NeogenError, match=r"not a complete neogen run: adapter/ is missing \(fix: "):
        Classifier.load(run)


@pytest.mark.parametrize(("name", "text"), [("labels.json", "{bad"), ("labels.json", '{"version": 1}'),
                                            ("thresholds.json", "{bad"), ("thresholds.json", "[1, 2]"),
                                            ("calibration.json", "{bad"), ("calibration.json", '{"temperature": 1}')])
def test_a_corrupt_run_file_is_named_with_the_fix(tiny_run, tmp_path, name, text):
    run = _broken_copy(tiny_run, tmp_path)
    (run / name).write_text(text)
    with pytest.raises(NeogenError, match=f"{re.escape(str(run / name))} .*\\(fix: "):
        Classifier.load(run)


def test_thresholds_for_other_labels_are_refused(tiny_run, tmp_path):
    from neogen.thresholds import Thresholds

    run = _broken_copy(tiny_run, tmp_path)
    Thresholds.default(["a", "b"]).save(run / "thresholds.json")
    with pytest.raises(NeogenError, match=r"thresholds.json does not match the run's labels in .*labels.json: it "
                                          r"lacks 'Biology', .* and has 'a', 'b' \(fix: delete it"):
        Classifier.load(run)
    Thresholds.default(CLASSES).save(run / "thresholds.json")  # the run's own labels load
    assert Classifier.load(run).classify("lens") in CLASSES


def test_multilabel_thresholds_must_hold_the_codec_labels_in_its_order(gpt2_bpe, tmp_path):
    from neogen.multilabel import MultiLabelCodec
    from neogen.run import check_threshold_labels
    from neogen.thresholds import Thresholds

    codec = MultiLabelCodec.fit([("anger",), ("joy", "fear")], gpt2_bpe, "independent")
    check_threshold_labels(Thresholds.default(["anger", "fear", "joy"]), codec.labels, True, tmp_path)
    cases = {("joy", "fear", "anger"): "the same labels in another order",
             ("anger", "fear"): "it lacks 'joy' \\(fix: delete it \\(0.5 for every label\\) and re-tune with "
                                "`neogen eval .* VALID --tune-thresholds`\\)",
             ("anger", "fear", "joy", "love"): "it has labels the run does not: 'love'"}
    for labels, message in cases.items():
        with pytest.raises(NeogenError, match=message):
            check_threshold_labels(Thresholds.default(labels), codec.labels, True, tmp_path)


# Texts that are not strings are refused up front, naming the index, instead of failing inside the tokenizer.

CLASSES = ["Biology", "Chemistry", "Maths", "Physics"]


@pytest.mark.parametrize(("bad", "message"), [
    (None, r"texts\[1\] is NoneType \(None\), not str \(fix: drop or fill missing texts"),
    (float("nan"), r"texts\[1\] is float \(nan\), not str \(fix: drop or fill missing texts"),
    (3, r"texts\[1\] is int \(3\), not str \(fix: convert it"),
    (b"bytes", r"texts\[1\] is bytes \(b'bytes'\), not str \(fix: decode it"),
    ("ok \ud83d", r"texts\[1\] holds a lone surrogate '\\ud83d' at character 3, which is not valid Unicode \(fix: "),
])
@pytest.mark.parametrize("method", ["predict_proba", "classify", "scores"])
def test_a_text_that_is_not_a_string_is_named_by_its_index(clf, bad, message, method):
    with pytest.raises(NeogenError, match=message):
        getattr(clf, method)(["fine", bad, "also fine"])


def test_texts_must_be_a_string_or_an_iterable_of_strings(clf):
    for bad in (None, 3, b"lens"):
        with pytest.raises(NeogenError, match=r"texts is \w+, not a str or a list of str"):
            clf.classify(bad)
    assert clf.classify(np.array(["lens", "héllo 日本語 🎉"])) == clf.classify(["lens", "héllo 日本語 🎉"])
    assert clf.classify(t for t in ["lens", "cell"]) == clf.classify(["lens", "cell"])


class NotATensor:
    """A pickled object of a class torch's weights-only loader does not allow."""


def test_a_pickled_adapter_torch_refuses_is_one_clear_error(tiny_run, tmp_path):
    import shutil

    import torch

    from neogen.errors import ModelRefusedError

    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / "adapter" / "adapter_model.safetensors").unlink()
    torch.save({"weights": NotATensor()}, run / "adapter" / "adapter_model.bin")
    with pytest.raises(ModelRefusedError, match=r"adapter: the adapter's pickled weights .* adapter_model.safetensors"):
        Classifier.load(run)

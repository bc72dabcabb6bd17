import json
import logging
from collections import Counter

import pytest
from conftest import write_csv, write_lines

from neogen.errors import DataError
from neogen.labels import LabelCodec
from neogen.prepare import clean, data_report, format_report, prepared_words, split, write_prepared
from neogen.prompt import PromptEncoder
from neogen.read import Example, load_examples


def ex(i: int, label: str = "a", text: str | None = None) -> Example:
    return Example(text if text is not None else f"text {i}", label, "f.csv", i + 2)


def test_clean_drops_and_counts_empty_and_duplicate_texts():
    rows = [ex(0), ex(1, text=""), ex(2, text="text 0"), ex(3, "b", text="text 0"), ex(4)]
    kept, report = clean(rows)
    assert [e.line for e in kept] == [2, 6]
    assert (report.empty, report.duplicates, report.conflicting) == ([3], [4], [5])
    assert report.to_dict()["rows_read"] == 5


def test_unshuffled_split_holds_out_the_last_rows():
    rows = [ex(i) for i in range(10)]
    parts = split(rows, test_ratio=0.2)
    assert [e.line for e in parts["test"]] == [10, 11]
    assert len(parts["train"]) == 8 and parts["valid"] == []
    # 1741 rows at 80/20 give the tutorial's 1392/349.
    parts = split([ex(i) for i in range(1741)], test_ratio=0.2)
    assert (len(parts["train"]), len(parts["test"])) == (1392, 349)


def test_shuffled_and_stratified_splits_are_seeded():
    rows = [ex(i, "a" if i < 80 else "b") for i in range(100)]
    one = split(rows, 0.1, 0.2, shuffle=True, seed=1)
    assert one == split(rows, 0.1, 0.2, shuffle=True, seed=1) != split(rows, 0.1, 0.2, shuffle=True, seed=2)
    strat = split(rows, 0.1, 0.2, stratify=True, seed=1)
    assert Counter(e.label for e in strat["test"]) == {"a": 16, "b": 4}
    assert Counter(e.label for e in strat["valid"]) == {"a": 8, "b": 2}
    lines = [e.line for part in strat.values() for e in part]
    assert sorted(lines) == [e.line for e in rows]


def test_stratified_splits_keep_every_class_in_train():
    rows = [ex(i, "a" if i < 20 else "b" if i < 30 else "c") for i in range(31)]  # "c": one row
    parts = split(rows, 0.1, 0.2, stratify=True, seed=0)
    assert Counter(e.label for e in parts["train"]) == {"a": 14, "b": 7, "c": 1}
    assert sum(map(len, parts.values())) == 31
    two = split([ex(0, "a"), ex(1, "a"), ex(2, "b"), ex(3, "b")], 0.0, 0.5, stratify=True)
    assert Counter(e.label for e in two["train"]) == Counter(e.label for e in two["test"]) == {"a": 1, "b": 1}


def sizes(parts: dict) -> tuple[int, int, int]:
    return len(parts["train"]), len(parts["valid"]), len(parts["test"])


def test_stratified_split_sizes_follow_the_ratios_over_many_small_classes(caplog):
    """100 classes of 3 rows: held-out rows are shared over the classes, not one taken from each."""
    rows = [ex(i, f"c{i % 100:02d}") for i in range(300)]
    with caplog.at_level(logging.WARNING, logger="neogen.prepare"):
        parts = split(rows, 0.0, 0.1, stratify=True)
        assert sizes(parts) == (270, 0, 30)
        parts = split(rows, 0.1, 0.1, stratify=True, seed=3)
        assert sizes(parts) == (240, 30, 30)
    assert caplog.text == ""
    assert len({e.label for e in parts["train"]}) == 100
    held = Counter(e.label for name in ("valid", "test") for e in parts[name])
    assert set(held.values()) == {1} and sorted(held) == [f"c{i:02d}" for i in range(60)]  # ties: by name
    assert sorted(e.line for part in parts.values() for e in part) == [e.line for e in rows]
    assert parts == split(rows, 0.1, 0.1, stratify=True, seed=3)


def test_stratified_ties_go_to_the_larger_class_then_the_name():
    rows = [ex(i, "a" if i < 2 else "z") for i in range(8)]  # quotas at 0.25: a 0.5, z 1.5
    assert Counter(e.label for e in split(rows, test_ratio=0.25, stratify=True)["test"]) == {"z": 2}
    rows = [ex(i, "b" if i < 3 else "a") for i in range(6)]  # quotas at 0.5: 1.5 each
    assert Counter(e.label for e in split(rows, test_ratio=0.5, stratify=True)["test"]) == {"a": 2, "b": 1}


def test_split_sizes_are_exact_where_floats_are_not():
    """90 x (1 - 0.3) is 62.99999999999999 in floats; the split has 63 training rows, stratified or not."""
    rows = [ex(i, "a" if i % 3 else "b") for i in range(90)]
    assert sizes(split(rows, test_ratio=0.3)) == (63, 0, 27)
    assert sizes(split(rows, test_ratio=0.3, shuffle=True)) == (63, 0, 27)
    assert sizes(split(rows, test_ratio=0.3, stratify=True)) == (63, 0, 27)
    assert [e.line for e in split(rows, 0.1, 0.3)["test"]] == [e.line for e in rows[63:]]  # still the last rows
    # Stratified totals round half up: 5 x 0.1 is one test row, 25 x 0.1 three.
    assert sizes(split([ex(i, "ab"[i % 2]) for i in range(5)], test_ratio=0.1, stratify=True)) == (4, 0, 1)
    assert sizes(split([ex(i, "ab"[i % 2]) for i in range(25)], test_ratio=0.1, stratify=True)) == (22, 0, 3)


def test_an_empty_requested_split_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="neogen.prepare"):
        assert sizes(split([ex(i) for i in range(3)], 0.1, 0.1)) == (2, 0, 1)
    assert "the valid split is empty: 0.1 of 3 rows" in caplog.text and "--valid-ratio" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="neogen.prepare"):
        assert sizes(split([ex(i, f"c{i}") for i in range(10)], 0.0, 0.2, stratify=True)) == (10, 0, 0)
    assert "the test split is empty" in caplog.text and "keeping a training row" in caplog.text
    caplog.clear()
    # 50 classes of 2 rows can give up 50; asked 30 + 60, the held-out splits shrink in proportion.
    rows = [ex(i, f"c{i % 50:02d}") for i in range(100)]
    with caplog.at_level(logging.WARNING, logger="neogen.prepare"):
        assert sizes(split(rows, 0.3, 0.6, stratify=True)) == (50, 17, 33)
    assert "only 50 of 100 rows can be held out" in caplog.text


@pytest.fixture(scope="module")
def tokenizer_dir(gpt2_bpe, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("gpt2-tokenizer")
    gpt2_bpe.save_pretrained(path)
    return str(path)


def test_prepare_refuses_a_class_held_out_whole(tokenizer_dir, tmp_path, capsys):
    """A class only in the last rows would be in labels.json but never trained: refused before anything is written."""
    from neogen.cli import main

    rows = [(f"question number {i} about {'ab'[i % 2]}", "BA"[i % 2]) for i in range(16)]
    csv = write_csv(tmp_path / "tail.csv", rows + [(f"question number {i} about c", "C") for i in range(16, 20)])
    out = tmp_path / "prepared"
    assert main(["prepare", str(csv), "--out", str(out), "--model", tokenizer_dir]) == 65
    err = capsys.readouterr().err
    assert "tail.csv:18: label 'C' in the test split is not in the training labels ['A', 'B']" in err
    assert "--stratify" in err and not out.exists()
    assert main(["prepare", str(csv), "--out", str(out), "--model", tokenizer_dir, "--test-ratio", "0.1",
                 "--valid-ratio", "0.2"]) == 65
    assert "tail.csv:18: label 'C' in the valid split" in capsys.readouterr().err and not out.exists()
    assert main(["prepare", str(csv), "--out", str(out), "--model", tokenizer_dir, "--stratify"]) == 0
    assert json.loads((out / "labels.json").read_text())["labels"] == ["A", "B", "C"]
    train = [json.loads(line)["label"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert Counter(train) == {"A": 6, "B": 7, "C": 3}  # test: C by remainder, then A by name


def test_report_and_written_files(tmp_path, gpt2_bpe):
    rows = [ex(i, "Maths" if i % 3 else "Physics", text=f"question {i} \n\n###\n\n tail" if i == 4 else None)
            for i in range(30)]
    parts = split(rows, test_ratio=0.2)
    codec = LabelCodec.fit(["Maths", "Physics"], gpt2_bpe)
    report = data_report(parts, codec, PromptEncoder(gpt2_bpe, 8), None, None)
    assert report["classes"] == {"Maths": 20, "Physics": 10}
    assert report["imbalance_ratio"] == 2.0
    assert report["texts_with_separator"] == 1
    assert report["aliases"] == {"Maths": " Math"}
    assert report["prompt_tokens"]["over_max_length"] >= 1
    text = format_report(report)
    assert "'Maths' -> ' Math'" in text and "imbalance ratio 2.0" in text
    written = write_prepared(tmp_path, parts, codec, report, tmp_path.parent / "raw.csv")
    assert [p.name for p in written] == ["train.jsonl", "test.jsonl", "labels.json", "report.json"]
    back, choice = load_examples(tmp_path / "test.jsonl")
    assert choice.prompt_completion
    assert [(e.text, e.label) for e in back] == [(e.text, e.label) for e in parts["test"]]
    first = (tmp_path / "train.jsonl").read_text().splitlines()[1]
    assert '"completion": " Math"' in first and first.count("\\n\\n###\\n\\n") == 1


def test_a_prepared_file_with_two_completions_for_one_label_names_both_lines(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [
        {"prompt": "a cell\n\n###\n\n", "completion": " biology", "label": "Biology"},
        {"prompt": "a lens\n\n###\n\n", "completion": " physics", "label": "Physics"},
        {"prompt": "a gene\n\n###\n\n", "completion": " life", "label": "Biology"}])
    examples, _ = load_examples(path)
    with pytest.raises(DataError, match=r"train.jsonl:3: label 'Biology' has completion ' life' here and ' biology' "
                                        r"on line 1"):
        prepared_words(examples, None)

from collections import Counter

import pytest
from conftest import write_lines

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
    written = write_prepared(tmp_path, parts, codec, report)
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

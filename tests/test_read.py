import json

import pytest
from conftest import write_csv

from neogen.errors import DataError
from neogen.read import detect_columns, load_examples, read_records


def test_csv_with_named_columns_keeps_lines(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("multi\nline text", "a"), ("second", "b")], header=("eng", "Subject"))
    examples, choice = load_examples(path, "eng", "Subject")
    assert [(e.text, e.label, e.line) for e in examples] == [("multi\nline text", "a", 2), ("second", "b", 4)]
    assert choice.reason == "columns named by the user"


def test_detects_text_and_label_columns_and_says_why(tmp_path):
    rows = [("x" if i % 2 else "y", f"a fairly long question number {i} about things", str(i)) for i in range(20)]
    path = tmp_path / "d.tsv"
    path.write_text("kind\teng\tid\n" + "".join("\t".join(r) + "\n" for r in rows))
    examples, choice = load_examples(path)
    assert (choice.text, choice.label) == ("eng", "kind")
    assert "longest values" in choice.reason and "fewest distinct values (2)" in choice.reason
    assert examples[0].label == "y"


def test_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": "one", "label": "a"}, {"text": "two", "label": "b"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        examples, _ = load_examples(tmp_path / name, "text", "label")
        assert [(e.text, e.label, e.line) for e in examples] == [("one", "a", 1), ("two", "b", 2)]


def test_prompt_completion_jsonl(tmp_path):
    rows = [{"prompt": "What is DNA?\n\n###\n\n", "completion": " Biology"},
            {"prompt": "What is 2+2?\n\n###\n\n", "completion": " Maths", "label": "Maths"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    examples, choice = load_examples(tmp_path / "p.jsonl")
    assert choice.prompt_completion
    assert [(e.text, e.label) for e in examples] == [("What is DNA?", "Biology"), ("What is 2+2?", "Maths")]


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", \n')
    with pytest.raises(DataError) as err:
        list(read_records(path))
    assert err.value.line == 2 and str(path) in str(err.value) and "fix:" in str(err.value)


def test_wrong_field_count_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nfine,a\ntoo,many,fields\n")
    with pytest.raises(DataError, match=r"bad.csv:3: expected 2 fields"):
        list(read_records(path))


def test_missing_label_is_an_error_not_a_drop(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("one", "a"), ("two", ""), ("three", "b")])
    with pytest.raises(DataError, match=r"d.csv:3: no label"):
        load_examples(path, "text", "label")


def test_unknown_column_and_file_type(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("one", "a"), ("two", "b")])
    with pytest.raises(DataError, match="no text column 'body'"):
        load_examples(path, "body", None)
    with pytest.raises(DataError, match="unknown file type"):
        list(read_records(tmp_path / "d.xlsx"))
    with pytest.raises(DataError, match="file not found"):
        list(read_records(tmp_path / "missing.csv"))


def test_detect_columns_needs_a_label_column(tmp_path):
    records = [(i + 2, {"text": f"text {i}"}) for i in range(3)]
    with pytest.raises(DataError, match="no label column"):
        detect_columns(tmp_path / "d.csv", records)


def test_labels_joined_by_a_separator_are_detected_and_reported(tmp_path):
    rows = [("I love this, thank you", "joy;gratitude"), ("so sad today", "sadness"), ("thanks a lot", "gratitude"),
            ("what a day", "joy"), ("ugh and yay", "sadness;joy")]
    examples, choice = load_examples(write_csv(tmp_path / "d.csv", rows))
    assert choice.multi_label and choice.label_separator == ";"
    assert "labels joined by ';' (2 rows hold several)" in choice.reason
    assert examples[0].labels == ("gratitude", "joy") and examples[0].label == "gratitude,joy"
    assert examples[1].labels == ("sadness",)


def test_commas_inside_single_labels_are_not_a_label_set(tmp_path):
    rows = [(f"where is the capital number {i}", "Washington, D.C." if i % 2 else "Paris") for i in range(6)]
    examples, choice = load_examples(write_csv(tmp_path / "d.csv", rows))
    assert not choice.multi_label and examples[1].label == "Washington, D.C." and examples[1].labels is None


def test_one_zero_one_column_per_label(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("comment,toxic,obscene,insult\n\"you are great, really\",0,0,0\nsome rude words,1,1,0\n"
                    "\"a longer, polite text\",0,0,1\n")
    examples, choice = load_examples(path, allow_empty=True)
    assert choice.multi_label and choice.label_columns == ("toxic", "obscene", "insult")
    assert "3 columns hold only 0/1 values" in choice.reason
    assert [ex.labels for ex in examples] == [(), ("obscene", "toxic"), ("insult",)]


def test_jsonl_label_lists(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "happy and grateful", "labels": ["joy", "gratitude", "joy"]}\n'
                    '{"text": "nothing much", "labels": ["neutral"]}\n')
    examples, choice = load_examples(path)
    assert choice.multi_label and choice.label == "labels"
    assert examples[0].labels == ("gratitude", "joy") and examples[1].labels == ("neutral",)
    with pytest.raises(DataError, match=r"d.jsonl:1: the label in column 'labels' is a list.*multi_label=true"):
        load_examples(path, multi_label=False)


def test_rows_without_labels_need_allow_empty(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "labels": ["x", "y"]}\n{"text": "b", "labels": []}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: no label in column 'labels'.*allow_empty=true"):
        load_examples(path)
    examples, _ = load_examples(path, allow_empty=True)
    assert examples[1].labels == () and examples[1].label == ""


def test_bad_cell_in_a_label_column_names_line_and_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,a,b\nfirst text here,1,0\nsecond text here,0,1\nthird text,2,0\n")
    # "2" is not 0/1: no 0/1 shape, and two columns that could each be the label: named, not guessed.
    with pytest.raises(DataError, match=r"columns 'a' \(3 distinct values, 0/1 except '2' at line 4\), 'b' \(2 "
                                        r"distinct values\) could each hold the labels"):
        load_examples(path)
    with pytest.raises(DataError, match=r"d.csv:4: column 'a' holds '2', not 0 or 1"):
        from neogen.read import ColumnChoice, _label_set

        _label_set(path, 4, {"text": "third text", "a": "2", "b": "0"},
                   ColumnChoice("text", "a,b", "", multi_label=True, label_columns=("a", "b")))


def test_multi_label_true_reads_single_values_as_one_label_sets(tmp_path):
    rows = [(f"text number {i}", "x" if i % 2 else "y") for i in range(4)]
    examples, choice = load_examples(write_csv(tmp_path / "d.csv", rows), multi_label=True)
    assert choice.multi_label and [ex.labels for ex in examples] == [("y",), ("x",), ("y",), ("x",)]


def test_flag_columns_beside_a_label_column_are_not_taken_for_labels(tmp_path):
    rows = [(f"question number {i} about the physics of things", "Physics" if i % 2 else "Maths",
             str(i % 2), str(i // 3 % 2)) for i in range(12)]
    path = tmp_path / "d.csv"
    path.write_text("text,label,verified,has_url\n" + "".join(",".join(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"d.csv: column 'label' and the 0/1 columns \['verified', 'has_url'\] "
                                        r"could each hold the labels.*data.label_column=label .*"
                                        r"data.label_column=verified,has_url"):
        load_examples(path)
    examples, choice = load_examples(path, label_column="label")
    assert not choice.multi_label and examples[1].label == "Physics"
    examples, choice = load_examples(path, label_column="verified,has_url", allow_empty=True)
    assert choice.label_columns == ("verified", "has_url") and examples[1].labels == ("verified",)
    with pytest.raises(DataError, match=r"no label column 'has_link'"):
        load_examples(path, label_column="verified,has_link")
    with pytest.raises(DataError, match=r"multi-label data"):
        load_examples(path, label_column="verified,has_url", multi_label=False)


def test_jsonl_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "a", "label": "x"}).encode() + b"\n"
                     + json.dumps({"text": "b", "label": "y"}).encode() + b"\n")
    examples, _ = load_examples(path)
    assert [(e.text, e.label, e.line) for e in examples] == [("a", "x", 1), ("b", "y", 2)]


def _csv(path, header, rows):
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


QUESTIONS = [f"question number {i} about the physics of things" for i in range(40)]


@pytest.mark.parametrize("other", [("verified", ("0", "1")), ("split", ("train", "test"))])
def test_a_column_named_label_wins_over_other_columns_of_few_values(tmp_path, other):
    name, values = other
    subjects = ("Physics", "Maths", "Biology", "Chemistry")
    rows = [(q, subjects[i % 4], values[i // 3 % 2]) for i, q in enumerate(QUESTIONS)]
    examples, choice = load_examples(_csv(tmp_path / "d.csv", f"text,label,{name}", rows))
    assert choice.label == "label" and not choice.multi_label and "named so (4 distinct values)" in choice.reason
    assert examples[1].label == "Maths"


def test_a_0_1_column_named_label_is_a_binary_label_not_a_flag(tmp_path):
    rows = [(q, str(i % 2), str(i // 3 % 2)) for i, q in enumerate(QUESTIONS)]
    examples, choice = load_examples(_csv(tmp_path / "d.csv", "text,label,has_url", rows))
    assert choice.label == "label" and not choice.multi_label and examples[1].label == "1"


def test_two_columns_that_could_hold_the_labels_are_named_not_guessed(tmp_path):
    rows = [(q, ("pos", "neg")[i % 2], ("books", "films", "games")[i % 3]) for i, q in enumerate(QUESTIONS)]
    path = _csv(tmp_path / "d.csv", "review,sentiment,topic", rows)
    with pytest.raises(DataError, match=r"d.csv: columns 'sentiment' \(2 distinct values\), 'topic' \(3 distinct "
                                        r"values\) could each hold the labels.*data.label_column=sentiment"):
        load_examples(path)
    assert load_examples(path, label_column="topic")[0][2].label == "games"
    # A named label column beside a column of label lists is just as ambiguous.
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"text": q, "label": "a" if i % 2 else "b", "tags": ["x"]}) + "\n"
                             for i, q in enumerate(QUESTIONS)))
    with pytest.raises(DataError, match=r"columns 'label' \(2 distinct values\), 'tags' \(lists of labels\)"):
        load_examples(jsonl)


def test_a_stray_value_in_a_0_1_column_is_pointed_out(tmp_path):
    rows = [(q, str(i % 2), str(i // 2 % 2), "2" if i == 7 else str(i // 4 % 2)) for i, q in enumerate(QUESTIONS)]
    with pytest.raises(DataError, match=r"column 'c', 0/1 except '2' at line 9 and the 0/1 columns \['a', 'b'\]"):
        load_examples(_csv(tmp_path / "d.csv", "text,a,b,c", rows))


def test_files_that_are_not_utf8_name_the_line(tmp_path):
    (tmp_path / "d.csv").write_bytes("text,label\nfine,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "fine", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    for name in ("d.csv", "d.jsonl"):
        with pytest.raises(DataError, match=rf"{name}:\d: not UTF-8: byte 0xe9 .*save the file as UTF-8"):
            load_examples(tmp_path / name)


def test_a_lone_surrogate_in_jsonl_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine \\u00e9 \\ud83d\\ude00", "label": "a"}\n{"text": "half \\ud83d", "label": "b"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: the line holds a lone UTF-16 surrogate \\ud83d"):
        load_examples(path)


def test_an_unclosed_quote_in_tsv_is_refused_not_merged(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('text\tlabel\n"no way\tanger\nfine then\tjoy\nok" whatever\tsad\nlast one\tjoy\n')
    with pytest.raises(DataError, match=r"d.tsv:2: a quoted field runs over lines 2-4.*close the quote"):
        load_examples(path, "text", "label")


def test_a_long_field_is_no_malformed_row(tmp_path):
    path = _csv(tmp_path / "d.csv", "text,label", [("x" * 200_000, "a"), ("short", "b")])
    assert len(load_examples(path, "text", "label")[0][0].text) == 200_000


def test_a_label_with_a_comma_beside_its_first_part_stays_whole(tmp_path):
    rows = [(q, ("Washington", "Oregon", "Washington, D.C.")[i % 3]) for i, q in enumerate(QUESTIONS[:9])]
    examples, choice = load_examples(write_csv(tmp_path / "d.csv", rows))
    assert not choice.multi_label and examples[2].label == "Washington, D.C."


def test_cells_that_are_no_single_value(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [b"bytes text", b"more"], "label": [1.0, float("nan")]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d.parquet:2: no label in column 'label'"):
        load_examples(tmp_path / "d.parquet", "text", "label")
    examples, _ = load_examples(tmp_path / "d.parquet", "text", "label", require_label=False)
    assert examples[0].text == "bytes text" and examples[0].label == "1.0" and examples[1].label == ""
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": ["a", "b"], "label": "x"}\n')
    with pytest.raises(DataError, match=r'd.jsonl:1: .text. is a list \(\["a", "b"\]\), not a string'):
        load_examples(path, "text", "label")
    path.write_text('{"text": "a", "label": "x"}\n{"body": "b", "label": "y"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: no field 'text' \(fields: \['body', 'label'\]\)"):
        load_examples(path, "text", "label")


def test_a_corrupt_parquet_file_names_the_file(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"d.parquet: not a readable Parquet file"):
        load_examples(tmp_path / "d.parquet", "text", "label")


def test_naming_columns_of_a_prepared_file_says_to_drop_the_names(tmp_path):
    path = tmp_path / "train.jsonl"
    row = {"prompt": "What is DNA?\n\n###\n\n", "completion": " Biology", "label": "Biology"}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"no text column 'text'.*data.text_column=null data.label_column=null"):
        load_examples(path, "text", "label")


INTENTS = ("balance_not_updated_after_cheque_or_cash_deposit", "card_payment_wrong_exchange_rate",
           "declined_transfer_after_top_up", "why_verify_identity_in_app", "lost_or_stolen_card",
           "pending_cash_withdrawal")
SHORT_TEXTS = ("cheque missing", "bad rate", "transfer failed", "verify why?", "card stolen", "cash pending",
               "deposit gone", "rate off", "no transfer", "id check")


@pytest.mark.parametrize("header", ["text,label", "label,text", "sentence,category", "utterance,intent"])
def test_columns_named_text_and_label_keep_their_roles_before_any_statistics(tmp_path, header):
    # Both columns mostly distinct and the labels (intent names) longer than the texts: by statistics alone the
    # labels looked like the text, and training swapped prompts and classes.
    text_name = next(c for c in header.split(",") if c in ("text", "sentence", "utterance"))
    label_name = next(c for c in header.split(",") if c != text_name)
    cells = [{text_name: t, label_name: INTENTS[i % 6]} for i, t in enumerate(SHORT_TEXTS)]
    rows = [tuple(cell[c] for c in header.split(",")) for cell in cells]
    examples, choice = load_examples(_csv(tmp_path / "d.csv", header, rows))
    assert (choice.text, choice.label) == (text_name, label_name) and not choice.multi_label
    assert f"text column '{text_name}': named so" in choice.reason
    assert (examples[0].text, examples[0].label) == ("cheque missing", INTENTS[0])


def test_a_column_named_label_is_never_taken_for_the_text(tmp_path):
    rows = [(t, INTENTS[i % 6]) for i, t in enumerate(SHORT_TEXTS)]
    examples, choice = load_examples(_csv(tmp_path / "d.csv", "sms,label", rows))
    assert (choice.text, choice.label) == ("sms", "label") and examples[3].label == INTENTS[3]


def test_one_list_in_the_text_column_is_refused_at_its_line_not_read_as_label_sets(tmp_path):
    # One list-valued text made the column "lists of labels": the labels became the texts and 37 of 41 rows were
    # dropped as conflicting duplicates, without an error.
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": ["a", "b"] if i == 3 else f"text number {i} here",
                                        "label": INTENTS[i % 4]}) + "\n" for i in range(41)))
    with pytest.raises(DataError, match=r'd.jsonl:4: .text. is a list \(\["a", "b"\]\), not a string'):
        load_examples(path)
    (tmp_path / "u.jsonl").write_text(path.read_text().replace('"text"', '"msg"'))  # no name to go by
    with pytest.raises(DataError, match=r"u.jsonl:4: 'msg' is a list"):
        load_examples(tmp_path / "u.jsonl")


@pytest.mark.parametrize(("line", "reason"), [
    ('{"text": 42, "label": "b"}', "'text' is a number (42), not a string"),
    ('{"text": false, "label": "b"}', "'text' is a boolean (false), not a string"),
    ('{"text": "", "label": "b"}', "'text' is empty"),
    ('{"text": " \\u00a0\\t", "label": "b"}', "'text' holds only whitespace"),
    ('{"text": {"en": "hi"}, "label": "b"}', "'text' is an object ({\"en\": \"hi\"}), not a string"),
])
def test_a_text_that_is_no_string_or_empty_stops_at_its_line(tmp_path, line, reason):
    # A number or boolean used to become its Python spelling ("42", "False") and an empty text a row that cleaning
    # dropped; score refused the first and scored the second. text_value's rule now holds on every path.
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n' + line + "\n")
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert (err.value.line, err.value.reason) == (2, reason) and "fix:" in str(err.value)


def test_an_empty_csv_or_parquet_text_is_refused_not_dropped(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(DataError, match=r"d.csv:3: 'text' is empty \(fix: write the text, or remove the row\)"):
        load_examples(_csv(tmp_path / "d.csv", "text,label", [("one", "a"), ("", "b"), ("three", "a")]))
    pq.write_table(pa.table({"text": ["one", None], "label": ["a", "b"]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d.parquet:2: 'text' is null, not a string"):
        load_examples(tmp_path / "d.parquet", "text", "label")
    pq.write_table(pa.table({"text": [float("nan")], "label": ["a"]}), tmp_path / "d.parquet")  # pandas' missing
    with pytest.raises(DataError, match=r"d.parquet:1: 'text' is NaN \(a missing value\), not a string"):
        load_examples(tmp_path / "d.parquet", "text", "label")


def test_text_value_returns_the_string_as_given():
    from neogen.read import TextRefused, text_value

    assert text_value("  keep me \n") == "  keep me \n" and text_value(b"caf\xc3\xa9") == "café"
    with pytest.raises(TextRefused, match="'body' holds bytes that are not UTF-8"):
        text_value(b"caf\xe9", "body")


def test_jsonl_lines_that_once_crashed_or_vanished_are_refused_at_their_line(tmp_path):
    # Found by tests/test_fuzz.py: deep nesting raised RecursionError and a 5,000-digit number a bare ValueError
    # (tracebacks); a line of U+00A0 or \x1c was skipped as blank though it is no JSON at all.
    path = tmp_path / "d.jsonl"
    for line, reason in [(b"[" * 3000, "invalid JSON: nested too deeply to read"),
                         (b'{"text": "a", "n": ' + b"9" * 5000 + b"}", "invalid JSON: Exceeds the limit"),
                         ("\u00a0".encode(), "invalid JSON: Expecting value"), (b"\x1c", "invalid JSON")]:
        path.write_bytes(b'{"text": "fine", "label": "a"}\n\n' + line + b"\n")
        with pytest.raises(DataError) as err:
            list(read_records(path))
        assert err.value.line == 3 and err.value.reason.startswith(reason), err.value


def test_a_lone_carriage_return_is_json_whitespace_not_a_line_end(tmp_path):
    # Score reads lines split at \n alone; the readers split at a lone \r too, so the same line parsed in one and
    # was "invalid JSON" in the other, and line numbers disagreed.
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text":\r"a", "label": "x"}\r\n{"text": "b", "label": "y"}\n')
    assert list(read_records(path)) == [(1, {"text": "a", "label": "x"}), (2, {"text": "b", "label": "y"})]


def test_not_utf8_in_a_csv_of_carriage_returns_names_its_own_line(tmp_path):
    # A classic Mac CSV ends its lines in \r: the csv module reads it row by row, and the error now counts its lines
    # the same way instead of calling the whole file line 1.
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\rfine,a\rcaf\xe9,b\r".encode("latin-1"))
    with pytest.raises(DataError, match=r"d.csv:3: not UTF-8: byte 0xe9 at byte 4 of the line"):
        list(read_records(path))

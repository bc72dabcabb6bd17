import json

import numpy as np
import pytest
from conftest import write_lines

from neogen.classify import Classifier
from neogen.errors import DataError, NeogenError
from neogen.score import check_options, score_jsonl


@pytest.fixture(scope="module")
def clf(tiny_run) -> Classifier:
    return Classifier.load(tiny_run, batch_size=3)


def test_every_line_comes_back_in_order_with_scores(clf, tmp_path):
    rows = [{"id": i, "text": "cell " * (i % 7 + 1), "keep": [i]} for i in range(25)]
    src = write_lines(tmp_path / "in.jsonl", rows)
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), chunk_size=4, progress=False)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (stats.read, stats.scored, stats.rejected) == (25, 25, 0)
    assert [o["id"] for o in out] == list(range(25)) and out[3]["keep"] == [3]
    probs = clf.predict_proba([r["text"] for r in rows]).probs
    for o, p in zip(out, probs, strict=True):
        assert o["label"] == clf.labels[int(p.argmax())]
        np.testing.assert_allclose(list(o["scores"].values()), p, atol=1e-5)
        assert sum(o["scores"].values()) == pytest.approx(1.0, abs=1e-6)


def test_prompt_field_and_custom_field(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"prompt": "lens\n\n###\n\n"}, {"text": "lens"}, {"body": "lens"}])
    score_jsonl(clf, str(src), str(tmp_path / "a.jsonl"), rejects=str(tmp_path / "rej.jsonl"), progress=False)
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(a) == 2 and a[0]["scores"] == pytest.approx(a[1]["scores"], abs=1e-6)  # an OpenAI prompt serves
    # A field the user names is never swapped for another: the prompt-only line is malformed, not scored.
    stats = score_jsonl(clf, str(src), str(tmp_path / "b.jsonl"), text_field="body",
                        rejects=str(tmp_path / "rej.jsonl"), progress=False)
    assert (stats.scored, stats.rejected) == (1, 2)
    rejected = [json.loads(line) for line in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [1, 2] and "no 'body' field" in rejected[0]["error"]
    b = json.loads((tmp_path / "b.jsonl").read_text())
    assert b["scores"] == pytest.approx(a[1]["scores"], abs=1e-6)


def test_null_text_bom_and_blank_lines(clf, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + b'{"text": "lens"}\n\n   \n{"text": null}\n{"text": "lens"}\n')
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), rejects=str(tmp_path / "rej.jsonl"),
                        progress=False)
    assert (stats.read, stats.scored, stats.rejected) == (3, 2, 1)  # blank lines hold no record
    assert json.loads((tmp_path / "rej.jsonl").read_text())["error"] == "'text' is null, not a string"


def test_missing_input_or_output_folder_is_refused_before_loading(tmp_path):
    from neogen.distributed import World

    world = World(rank=0, size=1, local_rank=0)
    src = write_lines(tmp_path / "in.jsonl", [{"text": "a"}])
    with pytest.raises(NeogenError, match=r"input .*missing.jsonl is not a file"):
        check_options(str(tmp_path / "missing.jsonl"), str(tmp_path / "out.jsonl"), None, False, world)
    with pytest.raises(NeogenError, match=r"the output file's folder .*nowhere does not exist"):
        check_options(str(src), str(tmp_path / "nowhere" / "out.jsonl"), None, False, world)
    with pytest.raises(NeogenError, match=r"the rejects file's folder"):
        check_options(str(src), "-", str(tmp_path / "nowhere" / "rej.jsonl"), False, world)
    check_options(str(src), str(tmp_path / "out.jsonl"), None, False, world)
    with pytest.raises(NeogenError, match=r"--rejects needs a file path"):
        check_options(str(src), str(tmp_path / "out.jsonl"), "-", False, world)


def test_malformed_line_stops_with_file_and_line(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"text": "a"}, "{not json", {"text": "b"}])
    with pytest.raises(DataError, match=r"in.jsonl:2: .*--rejects"):
        score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), progress=False)


def test_rejects_file_keeps_and_counts_bad_lines(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"text": "a"}, "{not json", {"txt": "x"}, {"text": 5}, "[1]",
                                              {"text": "b"}])
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), rejects=str(tmp_path / "rej.jsonl"),
                        progress=False)
    assert (stats.read, stats.scored, stats.rejected) == (6, 2, 4)
    rejected = [json.loads(line) for line in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [2, 3, 4, 5]
    assert rejected[0]["raw"] == "{not json" and "no 'text' field" in rejected[1]["error"]
    assert [json.loads(line)["text"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == ["a", "b"]


def test_a_gold_label_in_the_input_is_kept_beside_the_prediction(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"prompt": "lens\n\n###\n\n", "completion": " Physics",
                                               "label": "Physics"}])
    score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), progress=False)
    out = json.loads((tmp_path / "out.jsonl").read_text())
    assert out["input_label"] == "Physics" and out["label"] in clf.labels and set(out["scores"]) == set(clf.labels)
    assert list(out)[:3] == ["prompt", "completion", "input_label"]


def test_scoring_an_already_scored_file_keeps_every_input_field(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"text": "lens", "label": "Biology", "input_label": "GOLD"}])
    score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), progress=False)
    out = json.loads((tmp_path / "out.jsonl").read_text())
    assert (out["input_label"], out["input_input_label"]) == ("GOLD", "Biology") and out["label"] in clf.labels


def test_a_named_text_field_never_falls_back_to_prompt(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"prompt": "lens\n\n###\n\n"}, {"text": "lens"}])
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), text_field="text",
                        rejects=str(tmp_path / "rej.jsonl"), progress=False)
    assert (stats.scored, stats.rejected) == (1, 1)
    assert "no 'text' field" in json.loads((tmp_path / "rej.jsonl").read_text())["error"]


def test_a_lone_surrogate_is_a_malformed_line_not_a_crash(clf, tmp_path):
    # Half an emoji as a JSON escape: it parses, but neither the tokenizer nor a UTF-8 output file takes it.
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "lens"}\n{"text": "broken \\ud83d emoji"}\n{"text": "whole \\ud83d\\ude00 emoji"}\n')
    with pytest.raises(DataError, match=r"in.jsonl:2: .*lone UTF-16 surrogate \\ud83d"):
        score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), progress=False)
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), rejects=str(tmp_path / "rej.jsonl"),
                        progress=False)
    assert (stats.read, stats.scored, stats.rejected) == (3, 2, 1)
    rejected = json.loads((tmp_path / "rej.jsonl").read_text())
    assert rejected["line"] == 2 and rejected["raw"] == '{"text": "broken \\ud83d emoji"}'
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[1])["text"] == "whole \U0001f600 emoji"


def test_chunk_size_below_one_is_refused(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"text": "a"}])
    with pytest.raises(NeogenError, match="chunk_size must be at least 1"):
        score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), chunk_size=0, progress=False)


TEXTS_REFUSED = [(5, "'text' is a number (5), not a string"), (True, "'text' is a boolean (true), not a string"),
                 (None, "'text' is null, not a string"), ("", "'text' is empty"),
                 (" \t\n ", "'text' holds only whitespace"),
                 (["a"], "'text' is a list ([\"a\"]), not a string")]


@pytest.mark.parametrize(("value", "reason"), TEXTS_REFUSED)
def test_one_rule_for_what_is_a_text_in_score_and_in_the_readers(clf, tmp_path, value, reason):
    # A number text was read as a string in training but rejected by score; an empty text was scored but dropped
    # in training. Now both refuse it, with the same reason.
    from neogen.read import load_examples

    src = write_lines(tmp_path / "in.jsonl", [{"text": "lens", "label": "a"}, {"text": value, "label": "b"}])
    with pytest.raises(DataError) as err:
        load_examples(src)
    assert (err.value.line, err.value.reason) == (2, reason)
    with pytest.raises(DataError, match=r"in.jsonl:2: ") as err:
        score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), progress=False)
    assert err.value.reason == reason
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), rejects=str(tmp_path / "rej.jsonl"),
                        progress=False)
    assert (stats.read, stats.scored, stats.rejected) == (2, 1, 1)
    assert json.loads((tmp_path / "rej.jsonl").read_text())["error"] == reason


def test_a_line_that_is_not_utf8_keeps_its_own_bytes_in_the_rejects_file(clf, tmp_path):
    import base64

    bad = b'{"text": "caf\xe9 cr\xe8me"}'
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "lens"}\n' + bad + b"\r\n" + b'{"text": "volt"}\n')
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), rejects=str(tmp_path / "rej.jsonl"),
                        progress=False)
    assert (stats.scored, stats.rejected) == (2, 1)
    rejected = json.loads((tmp_path / "rej.jsonl").read_text(encoding="utf-8"))
    assert rejected["line"] == 2 and rejected["raw"] == '{"text": "caf\ufffd cr\ufffdme"}'
    assert base64.b64decode(rejected["raw_base64"]) == bad
    # A line UTF-8 reads keeps only the readable copy: its bytes are that text's UTF-8.
    assert "raw_base64" not in json.loads(score_rejects_of(clf, tmp_path, b'{"txt": "caf\xc3\xa9"}\n'))


def score_rejects_of(clf: Classifier, tmp_path, data: bytes) -> str:
    """The rejects file of scoring `data` with --rejects."""
    (tmp_path / "one.jsonl").write_bytes(data)
    score_jsonl(clf, str(tmp_path / "one.jsonl"), str(tmp_path / "one-out.jsonl"),
                rejects=str(tmp_path / "one-rej.jsonl"), progress=False)
    return (tmp_path / "one-rej.jsonl").read_text(encoding="utf-8")


def test_lines_that_once_crashed_or_vanished_are_rejected_with_a_reason(clf, tmp_path):
    # Found by tests/test_fuzz.py: a line nested deeper than the recursion limit crashed score with a
    # RecursionError, and a line of U+00A0 or \x1c was skipped as blank, neither output nor rejected.
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "lens"}\n' + b"[" * 3000 + b"\n" + "\u00a0".encode() + b"\n\x1c\n \t\n"
                    + b'{"text": "volt"}\n')
    stats = score_jsonl(clf, str(src), str(tmp_path / "out.jsonl"), rejects=str(tmp_path / "rej.jsonl"),
                        progress=False)
    assert (stats.read, stats.scored, stats.rejected) == (5, 2, 3)  # the line of space and tab alone is blank
    rejected = [json.loads(line) for line in (tmp_path / "rej.jsonl").read_text(encoding="utf-8").split("\n")[:-1]]
    assert [(r["line"], r["error"]) for r in rejected] == [
        (2, "nested too deeply to read"), (3, "Expecting value"), (4, "Expecting value")]
    assert rejected[1]["raw"] == "\u00a0"

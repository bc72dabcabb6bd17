import json

import numpy as np
import pytest
from conftest import write_lines

from neogen.classify import Classifier
from neogen.errors import DataError
from neogen.score import score_jsonl


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
    src = write_lines(tmp_path / "in.jsonl", [{"prompt": "lens\n\n###\n\n"}, {"body": "lens"}])
    score_jsonl(clf, str(src), str(tmp_path / "a.jsonl"), text_field="body", rejects=str(tmp_path / "rej.jsonl"),
                progress=False)
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert a[0]["scores"] == pytest.approx(a[1]["scores"], abs=1e-6)


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

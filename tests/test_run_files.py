"""Reading a run's JSON files: a corrupt or foreign file raises NeogenError naming the file and the fix."""

import json
import re

import pytest

from neogen.calibration import Temperature
from neogen.errors import NeogenError
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec, load_codec
from neogen.thresholds import Thresholds


@pytest.mark.parametrize(("text", "reason"), [
    ("{bad", "is not valid JSON: Expecting property name"),
    ("[0.5]", "holds a JSON list, not an object of thresholds"),
    ('{"labels": ["a", "b"], "per_label": [0.5, 2.0], "shared": 0.5}', "per_label thresholds must lie in"),
    ('{"labels": ["a", "b"], "per_label": [0.5, 0.5]}', "missing key 'shared'"),
    ('{"labels": 3, "per_label": [0.5], "shared": 0.5}', "is not a valid thresholds file"),
])
def test_thresholds_load_names_the_file_and_the_fix(tmp_path, text, reason):
    path = tmp_path / "thresholds.json"
    path.write_text(text)
    with pytest.raises(NeogenError, match=f"{re.escape(str(path))}.*{reason}.*fix: delete .*--tune-thresholds"):
        Thresholds.load(path)


@pytest.mark.parametrize(("data", "reason"), [
    ("{bad", "is not valid JSON"),
    ("[1.5]", "argument after \\*\\* must be a mapping"),
    ('{"temperature": 1.5}', "missing 6 required positional arguments"),
    ({"temperature": -1.0}, "need method 'temperature' and a positive temperature, got 'temperature' and -1.0"),
    ({"temperature": float("nan")}, "a positive temperature"),
    ({"method": "platt"}, "need method 'temperature'"),
])
def test_temperature_load_names_the_file_and_the_fix(tmp_path, data, reason):
    path = tmp_path / "calibration.json"
    if isinstance(data, dict):  # a good file with one field changed
        fitted = Temperature(1.5, "valid", 10, 0.5, 0.4, 0.1, 0.05)
        data = json.dumps({**vars(fitted), **data})
    path.write_text(data)
    where = re.escape(str(path))
    with pytest.raises(NeogenError, match=f"{where} .*{reason}.*fix: delete .* to score without calibration"):
        Temperature.load(path)


def test_a_good_calibration_file_still_loads(tmp_path):
    fitted = Temperature(1.5, "valid", 10, 0.5, 0.4, 0.1, 0.05)
    fitted.save(tmp_path / "calibration.json")
    assert Temperature.load(tmp_path / "calibration.json") == fitted


@pytest.mark.parametrize(("change", "reason"), [
    (None, "invalid JSON"),
    ([], "it holds a JSON list, not an object"),
    ({"version": 7}, "unsupported label codec version 7"),
    ({"token_ids": None}, "must be lists of one length"),
    ({"completions": [" a"]}, "must be lists of one length"),
    ({"separator_ids": "drop"}, "the label codec lacks separator_ids"),
])
def test_label_codec_load_names_the_file_and_the_fix(gpt2_bpe, tmp_path, change, reason):
    path = tmp_path / "labels.json"
    data = LabelCodec.fit(["Biology", "Physics"], gpt2_bpe).to_dict()
    if change is None:
        text = json.dumps(data)[:-5]
    elif isinstance(change, dict):
        data.update(change)
        data = {k: v for k, v in data.items() if v != "drop"}
        text = json.dumps(data)
    else:
        text = json.dumps(change)
    path.write_text(text)
    where = re.escape(str(path))
    for load in (LabelCodec.load, load_codec):
        with pytest.raises(NeogenError, match=f"{where} is not a label codec neogen can read: .*{reason}.*\\(fix: "
                                              "it is written by `neogen train`"):
            load(path, gpt2_bpe)


def test_a_multilabel_codec_missing_a_key_is_named(gpt2_bpe, tmp_path):
    path = tmp_path / "labels.json"
    data = MultiLabelCodec.fit([("anger",), ("joy", "fear")], gpt2_bpe, "independent").to_dict()
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "encoding"}))
    where = re.escape(str(path))
    with pytest.raises(NeogenError, match=f"{where} is not a label codec neogen can read: it lacks 'encoding'"):
        load_codec(path, gpt2_bpe)
    data["classes"] = "oops"
    path.write_text(json.dumps(data))
    with pytest.raises(NeogenError, match="a label codec is a JSON object, not a str"):
        load_codec(path, gpt2_bpe)

"""The task objects: one per label encoding, behind the one interface training, scoring and evaluation use."""

import numpy as np
import pytest

from neogen.labels import LabelCodec
from neogen.multilabel import ENCODINGS, MultiLabelCodec
from neogen.tasks import TASKS, task_for
from neogen.thresholds import Thresholds

SETS = [("anger",), ("joy", "anger"), ("fear",), ("joy",)]


def test_every_encoding_has_its_task(gpt2_bpe):
    assert set(TASKS) == {"single", *ENCODINGS}
    assert task_for(LabelCodec.fit(["Maths", "Physics"], gpt2_bpe)).name == "single"
    for encoding in ENCODINGS:
        task = task_for(MultiLabelCodec.fit(SETS, gpt2_bpe, encoding))
        assert task.name == encoding and task.multi_label and task.labels == ["anger", "fear", "joy"]


def test_answers_and_results_have_the_shape_score_writes(gpt2_bpe):
    single = task_for(LabelCodec.fit(["Maths", "Physics"], gpt2_bpe))
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert single.answers(probs, None) == ["Physics", "Maths"]
    assert single.result(probs[0], 0.5, None) == {"label": "Physics", "scores": {"Maths": 0.2, "Physics": 0.8},
                                                  "label_mass": 0.5}
    multi = task_for(MultiLabelCodec.fit(SETS, gpt2_bpe, "independent"))
    thresholds = Thresholds.default(multi.labels, 0.5)
    row = np.array([0.7, 0.1, 0.6])
    assert multi.result(row, None, thresholds) == {"labels": ["anger", "joy"],
                                                   "scores": {"anger": 0.7, "fear": 0.1, "joy": 0.6}}
    assert multi.untuned_thresholds().at_least_one  # every text gets a label unless empty sets are allowed


@pytest.mark.parametrize("encoding", ["single", *ENCODINGS])
def test_the_option_that_refits_a_decision_names_the_task_kind(gpt2_bpe, encoding):
    codec = (LabelCodec.fit(["Maths", "Physics"], gpt2_bpe) if encoding == "single"
             else MultiLabelCodec.fit(SETS, gpt2_bpe, encoding))
    task = task_for(codec)
    assert task.decision_option == ("--tune-thresholds" if task.multi_label else "--calibrate")

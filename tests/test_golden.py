"""Golden scores: a tiny fixed-seed run per label encoding, trained and scored, must keep giving the stored numbers.

They pin behaviour across refactors: training targets and loss, codec, thresholds, calibration, evaluation summary
and scoring of each encoding. Regenerate (only for an intended change of behaviour) with
`NEOGEN_UPDATE_GOLDEN=1 pytest tests/test_golden.py`, and say why in the commit.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_multilabel_rows, toy_rows, write_csv

from neogen.classify import Classifier
from neogen.recipe import Recipe
from neogen.train import train

GOLDEN = Path(__file__).parent / "golden"
TEXTS = ["question 1: what about the cell and the gene?", "the acid and the bond", "post 2: happy and scared",
         "force and lens and volt", "post 3: furious rage", "a sum of prime angles"]
ENCODINGS = ["single", "powerset", "independent", "yes_no"]


def golden_recipe(tiny_neo: str, tmp_path: Path, encoding: str) -> Recipe:
    rows = toy_rows(12) if encoding == "single" else toy_multilabel_rows(36)
    csv = write_csv(tmp_path / "toy.csv", rows)
    return Recipe.from_dict({
        "model": {"name": tiny_neo}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "valid_ratio": 0.25, "test_ratio": 0.25, "shuffle": True, "seed": 1},
        "train": {"epochs": 3, "batch_size": 4, "lr": 3e-2, "max_length": 32, "precision": "fp32",
                  "eval_batch_size": 5, "seed": 3, "calibrate": encoding == "single"},
        "multilabel": {"encoding": "independent" if encoding == "single" else encoding},
        "output_dir": str(tmp_path / "run"),
    })


def observed(run: Path) -> dict:
    """What the run gives: scores of fixed texts, decisions, and the evaluation summary training wrote."""
    clf = Classifier.load(run, batch_size=4)
    results = json.loads((run / "results.json").read_text())
    summary = {split: results[split] for split in ("train", "valid", "test") if split in results}
    return {"labels": clf.labels, "scores": clf.predict_proba(TEXTS).probs.tolist(),
            "answers": [{k: v for k, v in row.items() if k != "scores"} for row in clf.scores(TEXTS)],
            "summary": summary, "temperature": results.get("temperature")}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_fixed_seed_run_gives_the_stored_scores(tiny_neo, tmp_path, encoding):
    got = observed(train(golden_recipe(tiny_neo, tmp_path, encoding)))
    path = GOLDEN / f"{encoding}.json"
    if os.environ.get("NEOGEN_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(path.read_text())
    assert got["labels"] == want["labels"]
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)
    for row, stored in zip(got["answers"], want["answers"], strict=True):
        assert row.keys() == stored.keys()
        assert row.get("label") == stored.get("label") and row.get("labels") == stored.get("labels")
        if "label_mass" in row:
            assert row["label_mass"] == pytest.approx(stored["label_mass"], abs=1e-5)
    assert got["summary"].keys() == want["summary"].keys()
    for split, metrics in want["summary"].items():
        assert got["summary"][split] == pytest.approx(metrics, abs=1e-5), split
    assert got["temperature"] == pytest.approx(want["temperature"], abs=1e-4) if want["temperature"] else True

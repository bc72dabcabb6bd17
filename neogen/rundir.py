"""The names inside a run directory, in one place: training writes them, inference, scoring and resuming read them.

    runs/<name>/
      adapter/ last/ checkpoints/   the best and the last LoRA adapter; Trainer checkpoints (optimizer state too)
      labels.json recipe.yaml       the label codec and the resolved recipe
      thresholds.json               multi-label decision thresholds
      calibration.json              single-label softmax temperature
      data_report.json metrics.jsonl results.json eval/<split>/
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

ADAPTER_DIR = "adapter"
LAST_ADAPTER_DIR = "last"
CHECKPOINTS_DIR = "checkpoints"
CODEC_FILE = "labels.json"
RECIPE_FILE = "recipe.yaml"
THRESHOLDS_FILE = "thresholds.json"
CALIBRATION_FILE = "calibration.json"
DATA_REPORT_FILE = "data_report.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"


def replace_file(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a file through a temporary one, so that a process reading it never sees it half-written."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)

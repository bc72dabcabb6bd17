"""The names inside a run directory, in one place: training writes them, inference, scoring and resuming read them.

    runs/<name>/
      neogen-run.json               the marker: this folder is a neogen run (neogen.run), locked while training
      adapter/ last/ checkpoints/   the best and the last LoRA adapter; Trainer checkpoints (optimizer state too)
      labels.json recipe.yaml       the label codec and the resolved recipe
      thresholds.json               multi-label decision thresholds
      calibration.json              single-label softmax temperature
      data_report.json metrics.jsonl results.json eval/<split>/
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neogen.errors import NeogenError

if TYPE_CHECKING:
    from neogen.labels import LabelCodec
    from neogen.multilabel import MultiLabelCodec
    from neogen.thresholds import Thresholds

RUN_MARKER = "neogen-run.json"
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


def read_json(path: Path, fix: str) -> Any:
    """A run file's JSON; a file that is not JSON raises NeogenError naming it and `fix` ("fix: ...")."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NeogenError(f"{path} is not valid JSON: {e} ({fix})") from e


def replace_file(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a file through a temporary one, so that a process reading it never sees it half-written."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # what peft's save_pretrained writes


def check_run_dir(run_dir: Path, adapter: str) -> Path:
    """The adapter directory of a run, or a NeogenError naming what is missing and how to get it.

    Checked before minutes of model loading, and so that peft never sees a missing adapter (it would take the path
    for a Hub repo id and fail with a message about repo ids).
    """
    if not run_dir.exists():
        raise NeogenError(f"{run_dir} does not exist (fix: give the run directory `neogen train` wrote, the recipe's "
                          "output_dir, e.g. runs/quickstart)")
    if not run_dir.is_dir():
        inside = f"; this file's folder {run_dir.parent} is one" if (run_dir.parent / RECIPE_FILE).is_file() else ""
        raise NeogenError(f"{run_dir} is a file, not a run directory (fix: give the folder that holds {RECIPE_FILE}, "
                          f"{CODEC_FILE} and {ADAPTER_DIR}/{inside})")
    for needed in (RECIPE_FILE, CODEC_FILE):
        if not (run_dir / needed).is_file():
            runs = sorted(p.name for p in run_dir.iterdir() if (p / RECIPE_FILE).is_file())
            hint = f"; runs inside it: {', '.join(runs[:5])}{', ...' if len(runs) > 5 else ''}" if runs else ""
            raise NeogenError(f"{run_dir} is not a complete neogen run: {needed} is missing (fix: give the "
                              f"directory `neogen train` wrote, which holds {RECIPE_FILE}, {CODEC_FILE} and "
                              f"{ADAPTER_DIR}/{hint})")
    adapter_dir = run_dir / Path(adapter).expanduser()
    if not adapter_dir.is_dir():
        raise NeogenError(_missing_adapter(run_dir, adapter))
    if not (adapter_dir / "adapter_config.json").is_file():
        raise NeogenError(f"{run_dir} is not a complete neogen run: {adapter}/adapter_config.json is missing (fix: "
                          f"copy the whole {adapter}/ folder of the run, or train it again)")
    if not any((adapter_dir / name).is_file() for name in WEIGHT_FILES):
        raise NeogenError(f"{run_dir} is not a complete neogen run: {adapter}/{WEIGHT_FILES[0]} (the LoRA weights) is "
                          f"missing (fix: copy the whole {adapter}/ folder of the run, or train it again)")
    return adapter_dir


def _missing_adapter(run_dir: Path, adapter: str) -> str:
    """Why a run has no `adapter` folder: an unfinished run says how to resume it or which weights it does have."""
    from neogen.resume import checkpoints

    saved = checkpoints(run_dir)
    has_last = all((run_dir / LAST_ADAPTER_DIR / name).is_file() for name in ("adapter_config.json", WEIGHT_FILES[0]))
    if adapter == ADAPTER_DIR and (saved or has_last):
        partial = LAST_ADAPTER_DIR if has_last else f"{CHECKPOINTS_DIR}/{saved[-1].name}"
        resume = (f"finish it with `neogen train RECIPE --resume`, RECIPE the one it was started with, e.g. "
                  f"{run_dir / RECIPE_FILE}; or " if saved else "")
        return (f"{run_dir} is an unfinished run: {ADAPTER_DIR}/ is missing, so training stopped before it wrote "
                f"its adapter (fix: {resume}use the weights saved so far with "
                f"Classifier.load({str(run_dir)!r}, adapter={partial!r}))")
    found = [name for name in (ADAPTER_DIR, LAST_ADAPTER_DIR) if (run_dir / name / "adapter_config.json").is_file()]
    other = f"; this run has {', '.join(f'adapter={name!r}' for name in found)}" if found else ""
    return (f"{run_dir} is not a complete neogen run: {adapter}/ is missing (fix: give the adapter folder of the "
            f"run{other}, or train it again)")


def check_threshold_labels(thresholds: Thresholds, codec: LabelCodec | MultiLabelCodec, run_dir: Path) -> None:
    """Thresholds apply by position: refuse a thresholds.json tuned for other labels than the run's."""
    if thresholds.labels == codec.labels:
        return
    ours, theirs = set(codec.labels), set(thresholds.labels)
    extra = [lab for lab in thresholds.labels if lab not in ours]
    missing = [lab for lab in codec.labels if lab not in theirs]
    if extra or missing:
        diff = f"it lacks {_few(missing)} and has {_few(extra)}" if missing and extra else (
            f"it lacks {_few(missing)}" if missing else f"it has labels the run does not: {_few(extra)}")
    else:
        diff = "it holds the same labels in another order"
    path = run_dir / THRESHOLDS_FILE
    fix = (f"delete it (0.5 for every label) and re-tune with `neogen eval {run_dir} VALID --tune-thresholds`"
           if codec.multi_label else "delete it: a single-label run takes the argmax and uses no thresholds")
    raise NeogenError(f"{path} does not match the run's labels in {run_dir / CODEC_FILE}: {diff} (fix: {fix})")


def _few(labels: list[str], shown: int = 5) -> str:
    """Some labels, for a message: `'a', 'b' and 3 more`."""
    text = ", ".join(repr(lab) for lab in labels[:shown])
    return text + (f" and {len(labels) - shown} more" if len(labels) > shown else "")

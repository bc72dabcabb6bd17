"""A run folder and its one owner, `Run`: it claims, marks, locks, saves, loads, fingerprints and lists every file.

    runs/<name>/
      neogen-run.json               the marker: this folder is a neogen run, locked while training
      adapter/ last/ checkpoints/   the best and the last LoRA adapter; Trainer checkpoints (optimizer state too)
      labels.json recipe.yaml       the label codec and the resolved recipe
      thresholds.json               multi-label decision thresholds
      calibration.json              single-label softmax temperature
      data_report.json metrics.jsonl results.json eval/<split>/

A run folder is neogen's only when it carries the marker, which training writes before anything else. A fresh
`train` may replace only what a marked run holds; it refuses an unmarked folder that holds anything (a user's notes,
data, another tool's output) instead of deleting it, and it holds an OS lock on the marker for the whole run, so a
second training into the same folder is refused at once rather than mixing two runs' files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neogen.calibration import Temperature
from neogen.errors import NeogenError
from neogen.folders import FileLock, claim, read_json, replace_file
from neogen.thresholds import Thresholds

if TYPE_CHECKING:
    from neogen.labels import LabelCodec
    from neogen.multilabel import MultiLabelCodec
    from neogen.recipe import Recipe

logger = logging.getLogger(__name__)

RUN_MARKER = "neogen-run.json"
RUN_KIND = "run"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # what peft's save_pretrained writes


class Run:
    """A training run's folder: `path` (`~` expanded, as TrainingArguments expands it)."""

    ADAPTER, LAST, CHECKPOINTS, EVAL = "adapter", "last", "checkpoints", "eval"
    CODEC_FILE, RECIPE_FILE, REPORT_FILE = "labels.json", "recipe.yaml", "data_report.json"
    THRESHOLDS_FILE, CALIBRATION_FILE = "thresholds.json", "calibration.json"
    METRICS_FILE, RESULTS_FILE = "metrics.jsonl", "results.json"
    # What a finished run leaves that a fresh run in its folder replaces (the files every run writes are rewritten).
    EARLIER_RUN = (CHECKPOINTS, ADAPTER, LAST, EVAL, THRESHOLDS_FILE, CALIBRATION_FILE, RESULTS_FILE)
    DECISION_FILES = ((Temperature, CALIBRATION_FILE), (Thresholds, THRESHOLDS_FILE))

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # --- layout -------------------------------------------------------------------------------------------
    @property
    def adapter_dir(self) -> Path:
        return self.path / self.ADAPTER

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def metrics_log(self) -> Path:
        return self.path / self.METRICS_FILE

    @property
    def recipe_file(self) -> Path:
        return self.path / self.RECIPE_FILE

    def eval_dir(self, name: str) -> Path:
        return self.path / self.EVAL / name

    def checkpoints(self) -> list[Path]:
        """The run's complete Trainer checkpoints, oldest first.

        Trainer writes trainer_state.json last, so a checkpoint cut short by a kill lacks it and is passed over.
        """
        found = []
        for path in self.checkpoints_dir.glob("checkpoint-*"):
            step = path.name.removeprefix("checkpoint-")
            if step.isdigit() and (path / "trainer_state.json").is_file():
                found.append((int(step), path))
        return [path for _, path in sorted(found)]

    # --- ownership ----------------------------------------------------------------------------------------
    def _legacy(self) -> bool:
        """A run written before markers existed: its recipe, labels and an adapter or checkpoints are all there."""
        p = self.path
        return ((p / self.RECIPE_FILE).is_file() and (p / self.CODEC_FILE).is_file()
                and ((self.adapter_dir / "adapter_config.json").is_file() or bool(self.checkpoints())))

    @contextmanager
    def claimed(self) -> Iterator[Run]:
        """Create or accept the folder (refusing one neogen does not own), and lock it until the block ends."""
        fix = ("pick an output_dir that does not exist or is empty, e.g. runs/<name>; neogen never deletes or "
               "overwrites files it did not write")
        claim(self.path, RUN_MARKER, RUN_KIND, fix, adopt=self._legacy())
        with FileLock(self.path / RUN_MARKER, f"the run folder {self.path} (another training is writing it)"):
            yield self

    def refuse_unfinished(self) -> None:
        """An unfinished run's checkpoints may hold hours of training: a fresh run never deletes them unasked."""
        earlier = self.checkpoints()
        if earlier and not (self.path / self.RESULTS_FILE).is_file():
            folder = self.checkpoints_dir
            raise NeogenError(f"{folder} holds checkpoints of an unfinished run (newest: {earlier[-1].name}) (fix: "
                              f"add --resume (train(..., resume=True)) to continue it, or delete {folder} or pick "
                              "another output_dir to start afresh)")

    def clear_earlier(self) -> None:
        """Make room for a fresh run in a folder a finished run used (an unfinished one was refused earlier).

        Nothing of the earlier run may outlive it: its checkpoints would be taken for this run's (the newest goes
        into `last/` and is what --resume picks), and its adapter, thresholds or temperature would be read with this
        run's labels if this run stopped before writing its own. results.json goes first, so that a run stopped
        midway is never taken for a finished one. Only called on a folder this process claimed.
        """
        found = [name for name in self.EARLIER_RUN if (self.path / name).exists()]
        if found:
            logger.warning("%s: removing the finished earlier run's %s; this run replaces it", self.path,
                           ", ".join(found))
        for name in reversed(self.EARLIER_RUN):
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self.metrics_log.unlink(missing_ok=True)

    # --- written by training ------------------------------------------------------------------------------
    def save_setup(self, codec: LabelCodec | MultiLabelCodec, recipe: Recipe, report: dict[str, Any]) -> None:
        """The codec, the resolved recipe and the data report, each replaced whole (under torchrun the other
        ranks may be reading them to check a resume)."""
        replace_file(self.path / self.CODEC_FILE, codec.save)
        replace_file(self.recipe_file, recipe.save)
        replace_file(self.path / self.REPORT_FILE, lambda path: path.write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n"))

    def save_results(self, summary: dict[str, Any]) -> None:
        (self.path / self.RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    def drop_results(self) -> None:
        """A resumed run that is stopped midway must not look finished: a later fresh run would take its
        checkpoints for a finished run's and delete them."""
        (self.path / self.RESULTS_FILE).unlink(missing_ok=True)

    def drop_calibration(self) -> None:
        (self.path / self.CALIBRATION_FILE).unlink(missing_ok=True)

    def decision_file(self, decision: Temperature | Thresholds) -> Path:
        return self.path / next(name for kind, name in self.DECISION_FILES if isinstance(decision, kind))

    def save_decision(self, decision: Temperature | Thresholds) -> Path:
        """A fitted softmax temperature or multi-label thresholds, where loading finds it; its path."""
        path = self.decision_file(decision)
        decision.save(path)
        return path

    def keep_last_checkpoint(self) -> None:
        """Copy the last checkpoint's adapter to last/ (adapter/ holds the best one)."""
        found = sorted(self.checkpoints_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if not found:
            return
        last = self.path / self.LAST
        shutil.rmtree(last, ignore_errors=True)
        last.mkdir()
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            if (found[-1] / name).exists():
                shutil.copy2(found[-1] / name, last / name)

    # --- read back ----------------------------------------------------------------------------------------
    def recipe(self) -> Recipe:
        from neogen.recipe import load_recipe

        return load_recipe(self.recipe_file)

    def codec(self, tokenizer: Any | None = None) -> LabelCodec | MultiLabelCodec:
        from neogen.multilabel import load_codec

        return load_codec(self.path / self.CODEC_FILE, tokenizer)

    def saved_codec(self) -> dict[str, Any]:
        """labels.json as saved ({} when absent), to compare with a codec fitted now."""
        path = self.path / self.CODEC_FILE
        return read_json(path, f"fix: train afresh into a new output_dir, or restore {path}") if path.is_file() else {}

    def report(self) -> dict[str, Any]:
        """data_report.json (split sizes and digests, number of processes); {} if the run has none."""
        path = self.path / self.REPORT_FILE
        return read_json(path, f"fix: train afresh into a new output_dir, or restore {path}") if path.is_file() else {}

    def results(self) -> dict[str, Any]:
        path = self.path / self.RESULTS_FILE
        return read_json(path, "fix: train the run again") if path.is_file() else {}

    def calibration(self) -> Temperature | None:
        path = self.path / self.CALIBRATION_FILE
        return Temperature.load(path) if path.exists() else None

    def thresholds(self, labels: list[str], multi_label: bool) -> Thresholds | None:
        """thresholds.json, checked against the run's labels; None when absent."""
        path = self.path / self.THRESHOLDS_FILE
        if not path.exists():
            return None
        thresholds = Thresholds.load(path)
        check_threshold_labels(thresholds, labels, multi_label, self.path)
        return thresholds

    def fingerprint(self) -> dict[str, Any]:
        """What the run's answers are made from, for `neogen score --resume`: labels.json, the files that turn
        logits into answers (thresholds, calibration, recipe), and the adapter files' sizes and mtimes, which catch
        a retrain into the same folder."""
        path = self.path.resolve()
        settings = [[name, _sha256_file(path / name)]
                    for name in (self.RECIPE_FILE, self.THRESHOLDS_FILE, self.CALIBRATION_FILE)
                    if (path / name).is_file()]
        adapter = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                         for p in (path / self.ADAPTER).glob("*") if p.is_file())
        return {"path": str(path), "labels_sha256": _sha256_file(path / self.CODEC_FILE),
                "settings_sha256": hashlib.sha256(json.dumps(settings).encode()).hexdigest(),
                "adapter_sha256": hashlib.sha256(json.dumps(adapter).encode()).hexdigest()}

    def check(self, adapter: str = ADAPTER) -> Path:
        """The adapter directory of a complete run, or a NeogenError naming what is missing and how to get it.

        Checked before minutes of model loading, and so that peft never sees a missing adapter (it would take the
        path for a Hub repo id and fail with a message about repo ids).
        """
        run_dir = self.path
        if not run_dir.exists():
            raise NeogenError(f"{run_dir} does not exist (fix: give the run directory `neogen train` wrote, the "
                              "recipe's output_dir, e.g. runs/quickstart)")
        if not run_dir.is_dir():
            inside = (f"; this file's folder {run_dir.parent} is one" if (run_dir.parent / self.RECIPE_FILE).is_file()
                      else "")
            raise NeogenError(f"{run_dir} is a file, not a run directory (fix: give the folder that holds "
                              f"{self.RECIPE_FILE}, {self.CODEC_FILE} and {self.ADAPTER}/{inside})")
        for needed in (self.RECIPE_FILE, self.CODEC_FILE):
            if not (run_dir / needed).is_file():
                runs = sorted(p.name for p in run_dir.iterdir() if (p / self.RECIPE_FILE).is_file())
                hint = f"; runs inside it: {', '.join(runs[:5])}{', ...' if len(runs) > 5 else ''}" if runs else ""
                raise NeogenError(f"{run_dir} is not a complete neogen run: {needed} is missing (fix: give the "
                                  f"directory `neogen train` wrote, which holds {self.RECIPE_FILE}, "
                                  f"{self.CODEC_FILE} and {self.ADAPTER}/{hint})")
        return self._adapter(adapter)

    def _adapter(self, adapter: str) -> Path:
        adapter_dir = self.path / Path(adapter).expanduser()
        if not adapter_dir.is_dir():
            raise NeogenError(self._missing_adapter(adapter))
        if not (adapter_dir / "adapter_config.json").is_file():
            raise NeogenError(f"{self.path} is not a complete neogen run: {adapter}/adapter_config.json is missing "
                              f"(fix: copy the whole {adapter}/ folder of the run, or train it again)")
        if not any((adapter_dir / name).is_file() for name in WEIGHT_FILES):
            raise NeogenError(f"{self.path} is not a complete neogen run: {adapter}/{WEIGHT_FILES[0]} (the LoRA "
                              f"weights) is missing (fix: copy the whole {adapter}/ folder of the run, or train it "
                              "again)")
        return adapter_dir

    def _missing_adapter(self, adapter: str) -> str:
        """Why a run has no `adapter` folder: an unfinished run says how to resume it or which weights it has."""
        run_dir, saved = self.path, self.checkpoints()
        has_last = all((run_dir / self.LAST / name).is_file() for name in ("adapter_config.json", WEIGHT_FILES[0]))
        if adapter == self.ADAPTER and (saved or has_last):
            partial = self.LAST if has_last else f"{self.CHECKPOINTS}/{saved[-1].name}"
            resume = (f"finish it with `neogen train RECIPE --resume`, RECIPE the one it was started with, e.g. "
                      f"{self.recipe_file}; or " if saved else "")
            return (f"{run_dir} is an unfinished run: {self.ADAPTER}/ is missing, so training stopped before it "
                    f"wrote its adapter (fix: {resume}use the weights saved so far with "
                    f"Classifier.load({str(run_dir)!r}, adapter={partial!r}))")
        found = [name for name in (self.ADAPTER, self.LAST) if (run_dir / name / "adapter_config.json").is_file()]
        other = f"; this run has {', '.join(f'adapter={name!r}' for name in found)}" if found else ""
        return (f"{run_dir} is not a complete neogen run: {adapter}/ is missing (fix: give the adapter folder of the "
                f"run{other}, or train it again)")


def check_threshold_labels(thresholds: Thresholds, labels: list[str], multi_label: bool, run_dir: Path) -> None:
    """Thresholds apply by position: refuse a thresholds.json tuned for other labels than the run's."""
    if thresholds.labels == labels:
        return
    ours, theirs = set(labels), set(thresholds.labels)
    extra = [lab for lab in thresholds.labels if lab not in ours]
    missing = [lab for lab in labels if lab not in theirs]
    if extra or missing:
        diff = f"it lacks {_few(missing)} and has {_few(extra)}" if missing and extra else (
            f"it lacks {_few(missing)}" if missing else f"it has labels the run does not: {_few(extra)}")
    else:
        diff = "it holds the same labels in another order"
    fix = (f"delete it (0.5 for every label) and re-tune with `neogen eval {run_dir} VALID --tune-thresholds`"
           if multi_label else "delete it: a single-label run takes the argmax and uses no thresholds")
    raise NeogenError(f"{run_dir / Run.THRESHOLDS_FILE} does not match the run's labels in "
                      f"{run_dir / Run.CODEC_FILE}: {diff} (fix: {fix})")


def _few(labels: list[str], shown: int = 5) -> str:
    """Some labels, for a message: `'a', 'b' and 3 more`."""
    text = ", ".join(repr(lab) for lab in labels[:shown])
    return text + (f" and {len(labels) - shown} more" if len(labels) > shown else "")


def _sha256_file(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(limit) if limit is not None else f.read())
    return digest.hexdigest()

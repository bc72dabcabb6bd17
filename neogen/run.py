"""The run folder's owner for training: it claims, marks and locks the folder, and clears an earlier run in it.

A run folder is neogen's only when it carries `neogen-run.json`, the marker training writes before anything else.
A fresh `train` may replace only what a marked run holds; it refuses an unmarked folder that holds anything (a
user's notes, data, another tool's output) instead of deleting it, and it holds an OS lock on the marker for the
whole run, so a second training into the same folder is refused at once rather than mixing two runs' files.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neogen.errors import NeogenError
from neogen.folders import FileLock, claim
from neogen.resume import checkpoints
from neogen.rundir import (
    ADAPTER_DIR,
    CALIBRATION_FILE,
    CHECKPOINTS_DIR,
    CODEC_FILE,
    LAST_ADAPTER_DIR,
    RECIPE_FILE,
    RESULTS_FILE,
    RUN_MARKER,
    THRESHOLDS_FILE,
)

logger = logging.getLogger(__name__)

RUN_KIND = "run"
# What a finished run leaves that a fresh run in its folder replaces (the files every run writes are overwritten).
EARLIER_RUN = (CHECKPOINTS_DIR, ADAPTER_DIR, LAST_ADAPTER_DIR, "eval", THRESHOLDS_FILE, CALIBRATION_FILE, RESULTS_FILE)


class Run:
    """A training run's folder: `path` (`~` expanded, as TrainingArguments expands it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def _legacy(self) -> bool:
        """A run written before markers existed: its recipe, labels and an adapter or checkpoints are all there."""
        p = self.path
        return ((p / RECIPE_FILE).is_file() and (p / CODEC_FILE).is_file()
                and ((p / ADAPTER_DIR / "adapter_config.json").is_file() or bool(checkpoints(p))))

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
        earlier = checkpoints(self.path)
        if earlier and not (self.path / RESULTS_FILE).is_file():
            folder = self.path / CHECKPOINTS_DIR
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
        found = [name for name in EARLIER_RUN if (self.path / name).exists()]
        if found:
            logger.warning("%s: removing the finished earlier run's %s; this run replaces it", self.path,
                           ", ".join(found))
        for name in reversed(EARLIER_RUN):
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

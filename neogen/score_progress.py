"""The progress file that lets `neogen score --resume` go on where an interrupted run stopped.

Next to OUT, `OUT.progress.json` records, after every chunk whose lines are flushed and fsync'd, how much input
was consumed and how many bytes of the output and the rejects file are final, with the counts so far. It also
records what the output is made from (the input file, the run directory, the text field, the rejects file), so a
resume against anything else is refused instead of splicing two different results together. It is replaced
atomically (temporary file, fsync, os.replace): a crash leaves the old state or the new one, never a torn one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neogen.errors import NeogenError
from neogen.run import Run

logger = logging.getLogger(__name__)

SUFFIX = ".progress.json"
VERSION = 1
HEAD_BYTES = 1 << 16  # enough to tell two files of the same size and mtime apart, cheap on any file


@dataclass
class Progress:
    """How far the scoring of one file into one output got, and what that output is made from."""

    identity: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)  # chunk and batch size: same ones, same bytes
    lines: int = 0  # input lines consumed, blank ones included: line numbers go on from here
    input_bytes: int = 0  # where in the input the next chunk starts
    output_bytes: int = 0
    rejects_bytes: int = 0
    read: int = 0
    scored: int = 0
    rejected: int = 0
    version: int = VERSION

    def save(self, path: Path) -> None:
        """Write atomically and durably: a reader sees the previous state or this one, never half of one."""
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Progress:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')}, expected {VERSION}")
            return cls(**data)
        except (ValueError, TypeError) as e:
            raise NeogenError(f"{path} is not a readable progress file ({e}) (fix: delete it and the output "
                              "to start over)") from None


def progress_path(dst: str) -> Path:
    return Path(dst + SUFFIX)


def _sha256_file(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(limit) if limit is not None else f.read())
    return digest.hexdigest()


def identity(src: str, run: Run | str | Path | None, labels: list[str], text_field: str,
             rejects: str | None) -> dict[str, Any]:
    """What an output is made from: the input (size, mtime, first bytes), the run, the text field, the rejects."""
    st = os.stat(src)
    run = Run(run) if isinstance(run, str | Path) else run
    fingerprint = (run.fingerprint() if run is not None else
                   {"labels_sha256": hashlib.sha256(json.dumps(labels).encode()).hexdigest()})
    return {"input": {"path": str(Path(src).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                      "head_sha256": _sha256_file(Path(src), HEAD_BYTES)},
            "run": fingerprint, "text_field": text_field, "rejects": str(Path(rejects).resolve()) if rejects else None}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between the recorded identity and this call's, in words; empty when a resume is safe."""
    diffs = []
    was, now = old["input"], new["input"]
    if was["size"] != now["size"]:
        diffs.append(f"the input {now['path']} is {now['size']} bytes, it was {was['size']}")
    elif was["mtime_ns"] != now["mtime_ns"] or was["head_sha256"] != now["head_sha256"]:
        diffs.append(f"the input {now['path']} was modified (mtime or first bytes differ)")
    settings = f"run's {Run.RECIPE_FILE} or {Run.THRESHOLDS_FILE} or {Run.CALIBRATION_FILE}"
    for key, what in (("path", "run directory"), ("labels_sha256", f"run's {Run.CODEC_FILE}"),
                      ("settings_sha256", settings), ("adapter_sha256", "run's adapter")):
        if old["run"].get(key) != new["run"].get(key):
            diffs.append(f"the {what} differs" + (f" ({old['run'].get(key)} before)" if key == "path" else ""))
    if old["text_field"] != new["text_field"]:
        diffs.append(f"the text field is '{new['text_field']}', it was '{old['text_field']}'")
    # Adding a rejects file on resume is fine (the usual answer to a malformed line); dropping or moving it is not.
    if old["rejects"] is not None and old["rejects"] != new["rejects"]:
        diffs.append(f"the rejects file was {old['rejects']}, now {new['rejects'] or 'none'}")
    return diffs


def _cut(path: Path, size: int, sidecar: Path) -> None:
    """Truncate `path` to the recorded `size`: drops whatever a killed run wrote after its last recorded chunk."""
    actual = path.stat().st_size if path.exists() else 0
    if actual < size:
        raise NeogenError(f"{path} is {actual} bytes but {sidecar} records {size} written (was it edited, moved or "
                          f"replaced?) (fix: delete {path} and {sidecar} to start over)")
    with path.open("ab") as f:  # creates it when missing and nothing was recorded
        f.truncate(size)


def begin(src: str, dst: str, rejects: str | None, ident: dict[str, Any], options: dict[str, Any],
          resume: bool) -> Progress:
    """The state to start from, with the output (and rejects) files ready to be appended to.

    Resuming: the recorded state, the files cut back to it. Otherwise: a fresh state, the files emptied.
    """
    sidecar = progress_path(dst)
    if resume and sidecar.exists():
        state = Progress.load(sidecar)
        try:
            diffs = differences(state.identity, ident)
        except (KeyError, TypeError) as e:
            raise NeogenError(f"{sidecar} lacks {e} (fix: delete it and {dst} to start over)") from None
        if diffs:
            extra = f", {rejects}" if rejects else ""
            raise NeogenError(f"cannot resume {dst} from {sidecar}: " + "; ".join(diffs) +
                              f" (fix: resume with the same input, run and options, or delete {dst}{extra} and "
                              f"{sidecar} to start over)")
        if state.options != options:
            logger.warning("resuming with %s where the earlier run used %s: the scores may differ from an "
                           "uninterrupted run in the last digits", options, state.options)
        with open(src, "rb") as f:  # the recorded offset must sit at a line start, or the input is not the same
            f.seek(max(state.input_bytes - 1, 0))
            at_end = state.input_bytes == os.fstat(f.fileno()).st_size  # the last line may lack its line break
            if state.input_bytes and not at_end and f.read(1) != b"\n":
                raise NeogenError(f"{src} has no line break at byte {state.input_bytes} recorded in {sidecar} "
                                  f"(fix: delete {dst} and {sidecar} to start over)")
        _cut(Path(dst), state.output_bytes, sidecar)
        if rejects and state.identity["rejects"]:
            _cut(Path(rejects), state.rejects_bytes, sidecar)
        elif rejects:  # a rejects file given for the first time: it starts empty, like the earlier run's would have
            open(rejects, "wb").close()
        state.identity = ident
        logger.info("resuming %s at line %d of %s: %d lines scored, %d rejected before", dst, state.lines + 1, src,
                    state.scored, state.rejected)
        return state
    if resume and Path(dst).exists() and Path(dst).stat().st_size > 0:
        raise NeogenError(f"{dst} exists but {sidecar} does not, so where the earlier run stopped is unknown (it "
                          f"may have finished) (fix: delete {dst} to start over, or drop --resume to overwrite it)")
    if not resume and sidecar.exists():
        logger.warning("%s is left from an interrupted run; scoring %s from the start (neogen score --resume goes "
                       "on where it stopped instead)", sidecar, dst)
    for path in (dst, rejects):
        if path:
            open(path, "wb").close()
    return Progress(identity=ident, options=options)


def forget(dst: str) -> None:
    """Remove the progress file of an output about to be rewritten untracked (from stdin, or by several ranks):
    left there, a later --resume would go on from it onto bytes it does not describe."""
    sidecar = progress_path(dst)
    if dst != "-" and sidecar.exists():
        logger.warning("%s is left from an interrupted run; %s is written from the start, so it is removed", sidecar,
                       dst)
        sidecar.unlink()

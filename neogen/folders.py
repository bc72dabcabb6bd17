"""What neogen may write over, and one process at a time: folder markers, OS file locks and same-file checks.

neogen never deletes or overwrites a file it did not create. A folder it writes many files into (a run, a prepared
data set) carries a small marker file that neogen wrote; only a marked folder's own files are ever replaced, and an
unmarked folder that holds anything is refused. A single output the user names (`score`'s output) is written only
when it is not also the input, the rejects file or a progress file, compared by device and inode, so hard links,
symbolic links and a redirected stdin are caught as well as equal paths.

Locks are `flock` locks on a file neogen owns: the kernel drops them when their process dies, so a run killed
with -9 never blocks the next one, and a second process is refused at once instead of waiting.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from neogen.errors import DiskFullError, LockedError, NeogenError, OutputError

logger = logging.getLogger(__name__)

MARKER_VERSION = 1


def write_error(e: OSError, path: str | Path, kept: str = "") -> NeogenError:
    """The user-facing error for a failed write: disk full (74), or a place that cannot be written (73)."""
    kept = f"; {kept}" if kept else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{path}: no space left on the device{kept} (fix: free space there, or write "
                             "elsewhere)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{path}: cannot write there ({e.strerror}){kept} (fix: make the folder writable, or "
                           "write elsewhere)")
    if e.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        return OutputError(f"{path}: {e.strerror}: a file or folder is in the way{kept} (fix: give another path)")
    return DiskFullError(f"{path}: {e.strerror or e}{kept} (fix: check the path and the device)")


def read_json(path: Path, fix: str) -> Any:
    """A JSON file neogen wrote; one that is not JSON raises NeogenError naming it and `fix` ("fix: ...")."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NeogenError(f"{path} is not valid JSON: {e} ({fix})") from e


def replace_file(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a file through a temporary one, so that a process reading it never sees it half-written."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


# ----------------------------------------------------------------------------------------------------- markers


def marker_path(folder: Path, name: str) -> Path:
    return folder / name


def is_marked(folder: Path, name: str, kind: str) -> bool:
    """Whether `folder` holds neogen's marker `name` of this `kind` (a marker of another kind is not ours)."""
    path = marker_path(folder, name)
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == kind


def claim(folder: Path, name: str, kind: str, fix: str, adopt: bool = False) -> bool:
    """Make `folder` neogen's: create and mark it, or accept it when it is empty or already carries our marker.

    `adopt` accepts an unmarked folder the caller recognised as its own (written before markers existed). An
    unmarked folder that holds anything else is refused with OutputError naming it and `fix`, and so is a file in
    the folder's place or a folder that cannot be written; nothing is written then. Returns whether the folder was
    marked already.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder (fix: {fix})")
    marked = is_marked(folder, name, kind)
    if not marked and folder.is_dir() and not adopt and any(folder.iterdir()):
        shown = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        raise OutputError(f"{folder} already holds files that neogen did not write ({', '.join(shown[:5])}{more}) "
                          f"and it writes only into an empty folder or one it marked with {name} (fix: {fix})")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not marked:
            from neogen import __version__

            content = {"kind": kind, "version": MARKER_VERSION, "neogen": __version__}
            marker_path(folder, name).write_text(json.dumps(content) + "\n", encoding="utf-8")
    except OSError as e:
        raise write_error(e, folder) from None
    return marked


# ------------------------------------------------------------------------------------------------------- locks


class FileLock:
    """An exclusive, non-blocking `flock` on `path` (created when missing), held between enter and exit.

    Re-entrant within a process: the CLI takes the lock before minutes of model loading and the library call it
    makes takes it again, which must not refuse itself (flock would, across two open files). `what` names the
    locked thing in the refusal.
    """

    _held: ClassVar[dict[tuple[int, int], int]] = {}  # (device, inode) -> holders in this process
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    def __enter__(self) -> FileLock:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)  # write access: checked now
        except OSError as e:
            raise write_error(e, self.path) from None
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with self._guard:
            if self._held.get(key):
                self._held[key] += 1
                os.close(fd)
                self._key = key
                return self
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise LockedError(f"{self.path}: another process is using {self.what} (fix: wait for it to finish, "
                                  "or use another path; a lock ends with its process, so a killed run never "
                                  "leaves one behind)") from None
            self._held[key] = 1
        self._fd, self._key = fd, key
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        assert self._key is not None
        with self._guard:
            self._held[self._key] -= 1
            if self._held[self._key] == 0:
                del self._held[self._key]
                if self._fd is not None:
                    os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd, self._key = None, None


# ------------------------------------------------------------------------------------------------- same files


def file_id(path: str | Path | int) -> tuple[int, int] | None:
    """(device, inode) of a path (links followed) or an open descriptor; None when it does not exist."""
    try:
        st = os.fstat(path) if isinstance(path, int) else os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def stream_id(fd: int) -> tuple[int, int] | None:
    """(device, inode) of stdin/stdout when it is a regular file (a redirect), else None (a pipe, a terminal)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def refuse_same_files(files: dict[str, Any], fix: str) -> None:
    """Refuse when two of `files` ({role: (label, device/inode or None)}) are one file on disk."""
    seen: dict[tuple[int, int], str] = {}
    for role, (label, ident) in files.items():
        if ident is None:
            continue
        if ident in seen:
            raise OutputError(f"the {role} {label} is the same file as the {seen[ident]} (a link, a redirect or the "
                              f"same path), and writing it would destroy the other (fix: {fix})")
        seen[ident] = f"{role} {label}"

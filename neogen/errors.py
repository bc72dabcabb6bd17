"""Errors that point the user at the exact place and the fix, each kind with its own exit code.

The codes follow BSD's sysexits where one fits, so a script can tell "fix your data" from "try again later":
2 usage and recipe, 65 bad data, 73 cannot write the output, 74 disk full or I/O, 75 busy (locked by another
process), 77 a model file neogen refuses to load.
"""

from __future__ import annotations

from pathlib import Path


class NeogenError(Exception):
    """Base class: a user-facing problem the CLI reports as one `error:` line without a traceback."""

    exit_code = 2


class DataError(NeogenError, ValueError):
    """Bad input data: names the file, the line (or row) and how to fix it."""

    exit_code = 65

    def __init__(self, path: str | Path, line: int | None, reason: str, fix: str = "") -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else self.path
        message = f"{where}: {reason}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)


class ConfigError(NeogenError, ValueError):
    """An invalid recipe or override; lists every problem at once."""

    def __init__(self, problems: list[str], source: str = "recipe") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


class OutputError(NeogenError):
    """An output neogen may not or cannot write: a folder it does not own, a read-only place, a file in the way."""

    exit_code = 73


class DiskFullError(NeogenError):
    """A write failed for lack of space (or another I/O error): names the file and what was kept."""

    exit_code = 74


class LockedError(NeogenError):
    """Another process holds the run folder or the output: refused at once instead of mixing two runs' files."""

    exit_code = 75


class ModelRefusedError(NeogenError):
    """A model or adapter file neogen will not load: pickled weights that torch refuses, or a model's own code."""

    exit_code = 77

"""Errors that point the user at the exact place and the fix."""

from __future__ import annotations

from pathlib import Path


class NeogenError(Exception):
    """Base class: a user-facing problem the CLI reports without a traceback."""


class DataError(NeogenError, ValueError):
    """Bad input data: names the file, the line (or row) and how to fix it."""

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

"""The result schema: what every file in bench/results records, how it is named, and how it is read back.

Every result carries, besides its figures, what is needed to trust them later: the experiment and its parameters, the
seed, the git commit that ran it (and whether the tree held uncommitted changes), the package versions, the machine
(CPU model and flags, GPU), the command line and the date. `write_result` is the one place that writes this shape;
`read_results` checks it on the way back, so a file of another shape cannot slip into a report.

Files are named from the experiment and the parameters that differ from its defaults, then the seed
(`quality-trec6-neogen-lr=5e-4-precision=bf16-seed1.json`): the same measurement always lands in the same file, so
the folder holds one current result per experiment, condition and seed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import ROOT

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = 1
PACKAGES = ("torch", "transformers", "peft", "neogen")
# The keys every result file holds, in the order it is written.
KEYS = ("schema", "experiment", "params", "seed", "commit", "dirty", "versions", "machine", "command", "date",
        "migrated", "figures")
ENVIRONMENT_KEYS = ("commit", "dirty", "versions", "machine", "command", "date")
SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._,+-]")
MAX_SLUG = 40


def git_state(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether the work tree has uncommitted changes), or (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a figure depends on (None for one that is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_info() -> tuple[str, str | None]:
    """The CPU's model name and feature flags from /proc/cpuinfo (elsewhere: what `platform` knows, no flags)."""
    model, flags = "", None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(value.split())
    return model or platform.processor() or platform.machine(), flags


def machine_info() -> dict[str, Any]:
    """CPU model and flags, core count and, when torch sees one, the GPU (imports torch only if it is loaded)."""
    model, flags = cpu_info()
    info: dict[str, Any] = {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "gpu": None,
                            "platform": platform.platform()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def environment(command: list[str] | None = None, commit: tuple[str | None, bool | None] | None = None
                ) -> dict[str, Any]:
    """Where and how a result was measured: commit, dirty tree, versions, machine, command line, date (UTC)."""
    head, dirty = commit if commit is not None else git_state()
    return {"commit": head, "dirty": dirty, "versions": package_versions(), "machine": machine_info(),
            "command": " ".join(command if command is not None else sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def slug(value: Any) -> str:
    """A parameter value as it appears in a file name: readable when short and safe, else a short hash."""
    text = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    safe = SLUG_UNSAFE.sub("_", text)
    if len(safe) > MAX_SLUG or not safe:
        return "h" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
    return safe


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's name in a file name: the last part of a dotted key, unless two keys would share it."""
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves, strict=True)}


def condition(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that differ from the experiment's defaults: what sets this measurement apart."""
    return {key: value for key, value in sorted(params.items())
            if key not in defaults or defaults[key] != value}


def result_name(experiment: str, params: Mapping[str, Any], defaults: Mapping[str, Any], seed: int) -> str:
    """`EXPERIMENT[-key=value...]-seedN.json`, keys sorted, only those that differ from the defaults."""
    changed = condition(params, defaults)
    names = short_keys(list(changed))
    parts = [experiment, *(f"{names[key]}={slug(value)}" for key, value in changed.items()), f"seed{seed}"]
    return "-".join(parts) + ".json"


def write_result(experiment: str, params: Mapping[str, Any], defaults: Mapping[str, Any], seed: int,
                 figures: Mapping[str, Any], folder: Path, env: Mapping[str, Any], migrated: bool = False,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Write one result file in the schema and return its path; the only function that writes results.

    `env` is `environment()`'s mapping (or, for a migrated figure, what is known of it, None where unknown);
    `extra` adds keys after `figures` (a migrated file's origin and notes).
    """
    missing = [key for key in ENVIRONMENT_KEYS if key not in env]
    if missing:
        raise ValueError(f"environment lacks {', '.join(missing)}")
    record: dict[str, Any] = {"schema": SCHEMA, "experiment": experiment, "params": dict(sorted(params.items())),
                              "seed": seed, **{key: env[key] for key in ENVIRONMENT_KEYS}, "migrated": migrated,
                              "figures": dict(figures), **(extra or {})}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / result_name(experiment, params, defaults, seed)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_result(path: Path) -> dict[str, Any]:
    """One result file, checked against the schema (a ValueError names the file and what is wrong)."""
    record = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in KEYS if key not in record]
    if missing or record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a schema-{SCHEMA} result (missing {', '.join(missing) or 'nothing'}, "
                         f"schema {record.get('schema')!r})")
    return record


def read_results(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """Every result file in the folder, sorted by name, each with its file name under `file`."""
    return [read_result(path) | {"file": path.name} for path in sorted(folder.glob("*.json"))]

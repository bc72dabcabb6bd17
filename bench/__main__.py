"""The benchmarks' one entry point.

    python -m bench list                                   # the experiments and their default parameters
    python -m bench run EXPERIMENT [--seeds 0,1,2] [--out DIR] [key=value ...]
    python -m bench report [--check]                       # bench/README.md's tables from bench/results
    python -m bench prepare goemotions                     # the GoEmotions files the multi-label recipe reads

`run` measures each seed in a fresh process (so peak memory, thread settings and module state never carry over
from one seed to the next) and writes one result file per seed into bench/results (or --out), named from the
experiment and the parameters that differ from its defaults. Run timing experiments on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import record
from .common import answer_call
from .experiments import EXPERIMENTS, Experiment


def experiment(name: str) -> Experiment:
    """The named experiment, or an exit that suggests the nearest names."""
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, EXPERIMENTS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SystemExit(f"no experiment {name!r}{hint}; `python -m bench list` shows them all")
    return EXPERIMENTS[name]


def parse_value(raw: str, default: Any) -> Any:
    """A command-line value in the type of the parameter's default (numbers, booleans, none; text otherwise)."""
    lowered = raw.strip().lower()
    if lowered in ("none", "null"):
        return None
    if isinstance(default, bool) or (default is None and lowered in ("true", "false")):
        if lowered not in ("true", "false"):
            raise SystemExit(f"{raw!r} is not true or false")
        return lowered == "true"
    if isinstance(default, (int, float)) or default is None:
        for kind in (int, float):
            try:
                value = kind(raw)
            except ValueError:
                continue
            return float(value) if isinstance(default, float) else value
        if default is not None:
            raise SystemExit(f"{raw!r} is not a number")
    return raw


def parse_params(exp: Experiment, pairs: Sequence[str]) -> dict[str, Any]:
    """The experiment's defaults with `key=value` pairs applied; recipe overrides (dotted keys) stay text."""
    params = dict(exp.defaults)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{pair!r}: parameters are key=value")
        if key in exp.fixed:
            raise SystemExit(f"{key} is fixed in {exp.name}; run the experiment for another {key} instead")
        if key in exp.defaults and not (exp.recipe_overrides and "." in key):
            params[key] = parse_value(raw, exp.defaults[key])
        elif exp.recipe_overrides and "." in key:
            params[key] = raw
        else:
            known = ", ".join(sorted(exp.defaults)) or "none"
            dotted = " (and recipe overrides such as train.lr=5e-4)" if exp.recipe_overrides else ""
            raise SystemExit(f"{exp.name} has no parameter {key!r}; its parameters: {known}{dotted}")
    if exp.resolve:
        params = exp.function(exp.resolve)(params)
    return params


def seeds_of(text: str) -> list[int]:
    """`0,1,2` as [0, 1, 2]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None


def run(args: argparse.Namespace) -> int:
    """Measure each seed in its own process and write its result file."""
    exp = experiment(args.experiment)
    params = parse_params(exp, args.params) | dict(exp.fixed)
    defaults = dict(exp.defaults) | dict(exp.fixed)
    seeds = seeds_of(args.seeds)
    out = Path(args.out)
    if args.dry_run:
        for seed in seeds:
            print(out / record.result_name(exp.name, params, defaults, seed))
        return 0
    commit, dirty = record.git_state()
    command = ["python", "-m", "bench", *sys.argv[1:]]
    for seed in seeds:
        request = {"experiment": exp.name, "params": params, "seed": seed, "out": str(out), "command": command,
                   "commit": commit, "dirty": dirty}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(request, f)
        done = subprocess.run([sys.executable, "-m", "bench", "_measure", f.name], cwd=record.ROOT, check=False)
        Path(f.name).unlink(missing_ok=True)
        if done.returncode != 0:
            print(f"{exp.name} seed {seed} failed (exit status {done.returncode})", file=sys.stderr)
            return done.returncode
    return 0


def measure(request_file: str) -> None:
    """In the child process: measure one seed and write its result through the schema's writer."""
    request = json.loads(Path(request_file).read_text(encoding="utf-8"))
    exp = experiment(request["experiment"])
    figures = exp.function()(request["params"], request["seed"])
    env = record.environment(request["command"], (request["commit"], request["dirty"]))
    path = record.write_result(exp.name, request["params"], dict(exp.defaults) | dict(exp.fixed), request["seed"],
                               figures, Path(request["out"]), env)
    print(f"wrote {path}", flush=True)


def listing(show_defaults: bool) -> None:
    """The experiments, each with what it measures (and its defaults)."""
    width = max(len(name) for name in EXPERIMENTS)
    for name, exp in EXPERIMENTS.items():
        print(f"{name:<{width}}  {exp.measures}")
        if show_defaults:
            print(f"{'':<{width}}  defaults: {format_params(exp.defaults)}")


def format_params(params: Mapping[str, Any]) -> str:
    """key=value pairs as typed on the command line."""
    return " ".join(f"{key}={'none' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                    for key, v in params.items()) or "(none)"


def parser() -> argparse.ArgumentParser:
    """The command line: run, list, report, prepare (and the internal _measure)."""
    main = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="run an experiment and write its result files")
    run_cmd.add_argument("experiment")
    run_cmd.add_argument("--seeds", default="0", help="seeds, comma-separated (default: %(default)s)")
    run_cmd.add_argument("--out", default=str(record.RESULTS), help="folder of the result files (default: %(default)s)")
    run_cmd.add_argument("--dry-run", action="store_true", help="print the result files it would write, run nothing")
    run_cmd.add_argument("params", nargs="*", metavar="key=value", help="parameters (see `list --defaults`)")
    list_cmd = commands.add_parser("list", help="the experiments")
    list_cmd.add_argument("--defaults", action="store_true", help="also print each experiment's default parameters")
    report_cmd = commands.add_parser("report", help="write bench/README.md's tables from the result files")
    report_cmd.add_argument("--check", action="store_true", help="change nothing; exit 1 if the tables are stale")
    report_cmd.add_argument("--results", default=str(record.RESULTS), help="(default: %(default)s)")
    report_cmd.add_argument("--readme", default=str(record.ROOT / "bench" / "README.md"), help="(default: %(default)s)")
    prepare_cmd = commands.add_parser("prepare", help="write a data set's files for its recipe")
    prepare_cmd.add_argument("dataset", choices=["goemotions"])
    for internal in ("_measure", "_call"):  # the child processes' side of `run` and of common.call_in_process
        commands.add_parser(internal).add_argument("request")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch a command; the exit status."""
    args, extra = parser().parse_known_args(argv)
    if extra and (args.command != "run" or any(item.startswith("-") for item in extra)):
        raise SystemExit(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "run":
        args.params += extra  # key=value pairs after an option
        return run(args)
    if args.command == "list":
        listing(args.defaults)
    elif args.command == "report":
        from .report import report

        return report(Path(args.results), Path(args.readme), check=args.check)
    elif args.command == "prepare":
        from .multilabel import prepare

        prepare(EXPERIMENTS["multilabel-independent"].defaults["train_rows"],
                EXPERIMENTS["multilabel-independent"].defaults["valid_rows"])
    elif args.command == "_call":
        answer_call(args.request)
    else:
        measure(args.request)
    return 0


if __name__ == "__main__":
    sys.exit(main())

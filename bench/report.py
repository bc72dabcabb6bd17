"""bench/README.md's tables, generated from the result files.

Each table sits between two marker comments in the README:

    <!-- bench report: NAME -->
    ...generated: the table, where its figures come from, the commands that reproduce them...
    <!-- end bench report -->

`python -m bench report` rewrites what is between the markers and leaves the prose around them alone; with
`--check` it changes nothing and exits 1 when a table differs from what the result files give, when a result file's
name is not the one its experiment and parameters call for, or when an experiment's results appear in no table.
Summaries over seeds (mean ± sample standard deviation) are computed here, never stored.
"""

from __future__ import annotations

import difflib
import re
import shlex
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .experiments import EXPERIMENTS
from .record import condition, read_results, result_name, short_keys

MARKER = re.compile(r"(<!-- bench report: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end bench report -->)", re.S)
METHOD_ORDER = ("neogen", "independent", "powerset", "yes_no", "head", "tfidf")
Record = dict[str, Any]
Group = list[Record]


# --------------------------------------------------------------------------------------------------------- helpers

def defaults_of(record: Record) -> dict[str, Any]:
    """The parameters a record's experiment runs with when none is given."""
    exp = EXPERIMENTS[record["experiment"]]
    return dict(exp.defaults) | dict(exp.fixed)


def changed(record: Record) -> dict[str, Any]:
    """The record's parameters that differ from its experiment's defaults."""
    return condition(record["params"], defaults_of(record))


def setting(record: Record, shown: Iterable[str] = ()) -> str:
    """The record's condition as `key=value, ...` (short keys, as in file names), less the keys a column shows."""
    items = {key: value for key, value in changed(record).items() if key not in set(shown)}
    names = short_keys(list(items))
    return ", ".join(f"{names[key]}={value}" for key, value in items.items()) or "defaults"


def groups(records: Sequence[Record]) -> list[Group]:
    """Records of the same experiment and condition, seeds together (in seed order), in a stable order."""
    by_key: dict[tuple[str, str], Group] = {}
    for r in records:
        by_key.setdefault((r["experiment"], repr(sorted(changed(r).items(), key=str))), []).append(r)
    return [sorted(g, key=lambda r: r["seed"]) for _, g in sorted(by_key.items())]


def spread(values: Sequence[float | None], digits: int) -> str:
    """One value, or mean ± sample standard deviation over seeds; `–` when there is none."""
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    return f"{statistics.mean(present):.{digits}f} ± {statistics.stdev(present):.{digits}f}"


def number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    """A figure with thousands separators, or `–`."""
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def cli_value(value: Any) -> str:
    """A parameter value as typed on the command line (quoted when the shell needs it)."""
    text = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return shlex.quote(text)


def commands(records: Sequence[Record]) -> list[str]:
    """The `python -m bench run` lines that reproduce the records, one per experiment and condition."""
    lines = []
    for group in groups(records):
        seeds = ",".join(str(r["seed"]) for r in group)
        params = " ".join(f"{key}={cli_value(value)}" for key, value in changed(group[0]).items())
        lines.append(" ".join(part for part in ("python -m bench run", group[0]["experiment"],
                                                f"--seeds {seeds}" if seeds != "0" else "", params) if part))
    return ["```bash", *lines, "```"]


def provenance(records: Sequence[Record]) -> str:
    """Where the figures come from: files, commits, CPUs and GPUs, versions, and how many were migrated."""
    commits = sorted({(r["commit"] or "unknown")[:7] for r in records})
    dates = sorted(r["date"][:10] for r in records if r["date"])
    machines = sorted({r["machine"].get("gpu") or r["machine"].get("cpu") or "unknown" for r in records})
    recorded = f"commit{'s' if len(commits) != 1 else ''} {', '.join(commits)}" if len(commits) <= 4 else \
        f"{len(commits)} commits"
    if dates:
        recorded += f", {dates[0]}" if dates[0] == dates[-1] else f", {dates[0]} to {dates[-1]}"
    parts = [f"{len(records)} result file{'s' if len(records) != 1 else ''}", recorded, ", ".join(machines)]
    for package in ("torch", "transformers"):
        versions = sorted({r["versions"].get(package) or "not recorded" for r in records})
        parts.append(f"{package} {', '.join(versions)}")
    dirty = sum(1 for r in records if r["dirty"])
    if dirty:
        parts.append(f"{dirty} run on a tree with uncommitted changes")
    migrated = sum(1 for r in records if r["migrated"])
    if migrated:
        parts.append(f"{migrated} migrated from the earlier scripts' files")
    return "Figures: " + "; ".join(parts) + "."


def by_method(group: Group) -> int:
    """Sort key: neogen first, the baselines after."""
    method = group[0]["params"].get("method", "")
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


# ---------------------------------------------------------------------------------------------------------- tables

def experiments_table(_: Sequence[Record]) -> list[str]:
    """Every experiment, what it measures and the table that shows it."""
    return table(["experiment", "measures", "table"],
                 ([f"`{exp.name}`", exp.measures, exp.table] for exp in EXPERIMENTS.values()))


def scoring_table(records: Sequence[Record]) -> list[str]:
    """neogen against generate, one row per model, precision and condition."""
    rows = []
    for r in records:
        f, p = r["figures"], r["params"]
        m = f["methods"]
        naive, batched = m.get("naive"), m["batched"]
        rows.append([p["model"], p["precision"], setting(r, ("model", "precision")),
                     number(m["neogen"]["examples_per_s"]), number(naive and naive["examples_per_s"]),
                     number(batched["examples_per_s"]), number(naive and naive["neogen_speedup"], 2, "x"),
                     number(batched["neogen_speedup"], 2, "x"), number(100 * f["flops"]["share_of_peak"], 1, "%"),
                     number(100 * f["flops"]["linear_share_of_pass"], 1, "%"),
                     f"{f['agreement']['labels_identical']}/{f['agreement']['n']}",
                     f"{max(f['agreement']['max_abs_diff'].values()):.1e}"])
    return table(["model", "precision", "setting", "(a) neogen ex/s", "(b) generate, one at a time",
                  "(c) generate, batched", "(a)/(b)", "(a)/(c)", "neogen: share of matmul peak",
                  "linear layers: share of the pass", "identical labels", "max score difference"], rows)


def score_memory_table(records: Sequence[Record]) -> list[str]:
    """Peak memory per input size."""
    measured = sorted(((r, x) for r in records for x in r["figures"]["results"]),
                      key=lambda rx: (rx[0]["params"]["model"], rx[0]["params"]["precision"],
                                      setting(rx[0], ("model", "precision", "lines")), rx[1]["lines"]))
    rows = [[r["params"]["model"], r["params"]["precision"], setting(r, ("model", "precision", "lines")),
             f"{x['lines']:,}", number(x["loaded_rss_mb"], 0, " MB"), number(x["peak_rss_mb"], 0, " MB"),
             number(x["growth_mb"], 0, " MB"), number(x["examples_per_s"])] for r, x in measured]
    return table(["model", "precision", "setting", "lines", "loaded", "peak", "growth while scoring", "ex/s"], rows)


def long_lines_table(records: Sequence[Record]) -> list[str]:
    """Peak memory of `neogen score` on long lines against short ones."""
    rows = []
    for r in records:
        f, p = r["figures"], r["params"]
        rows.append([f"{p['lines']} x {p['line_mb']:g} MB", number(f["long"]["input_bytes"] / 1e6, 0, " MB"),
                     number(f["short"]["peak_rss_mb"], 0, " MB"), number(f["long"]["peak_rss_mb"], 0, " MB"),
                     number(f["growth_mb"], 0, " MB"), number(f["long"]["seconds"], 1, " s"),
                     setting(r, ("lines", "line_mb"))])
    return table(["long lines", "file", "peak RSS, as many short lines", "peak RSS, long lines", "growth",
                  "time, long lines", "setting"], rows)


def training_table(records: Sequence[Record]) -> list[str]:
    """neogen's training against the tutorial's, per seed, with the mean over seeds."""
    rows = []
    for group in groups(records):
        runs = [{x["method"]: x for x in r["figures"]["results"]} for r in group]
        label = setting(group[0], ("model",))
        for r, run in zip(group, runs, strict=True):
            rows.append(training_row(r["params"]["model"], label, str(r["seed"]), [run]))
        if len(group) > 1:
            rows.append(training_row(group[0]["params"]["model"], label, "mean", runs))
    return table(["model", "setting", "seed", "neogen train ex/s", "tutorial train ex/s", "ratio", "neogen peak RSS",
                  "tutorial peak RSS", "neogen test accuracy", "tutorial test accuracy"], rows)


def training_row(model: str, label: str, seed: str, runs: Sequence[dict[str, dict[str, Any]]]) -> list[str]:
    """One row: the figures of one seed, or their means over seeds."""
    def mean(method: str, key: str) -> float | None:
        """The mean of one figure over the runs that have the method."""
        values = [run[method][key] for run in runs if method in run]
        return statistics.mean(values) if values else None

    neogen, tutorial = mean("neogen", "train_examples_per_second"), mean("tutorial", "train_examples_per_second")
    ratio = neogen / tutorial if neogen and tutorial else None
    accuracy = [number(mean(m, "test_accuracy"), 3) for m in ("neogen", "tutorial")]
    if model.endswith("-random"):  # random weights learn nothing: the accuracy is there for completeness only
        accuracy = [f"({a})" for a in accuracy]
    return [model, label, seed, number(neogen, 2), number(tutorial, 2), number(ratio, 2, "x"),
            number(mean("neogen", "peak_rss_mb"), 0, " MB"), number(mean("tutorial", "peak_rss_mb"), 0, " MB"),
            *accuracy]


def quality_table(records: Sequence[Record]) -> list[str]:
    """Test figures per condition and method: one value, or mean ± std over seeds."""
    rows = []
    for group in sorted(groups(records), key=lambda g: (setting(g[0]), by_method(g))):
        figures = [r["figures"] for r in group]
        rows.append([setting(group[0]), group[0]["params"]["method"], ", ".join(str(r["seed"]) for r in group),
                     *(spread([f.get(key) for f in figures], digits) for key, digits in
                       (("accuracy", 3), ("macro_f1", 3), ("roc_auc", 4), ("log_loss", 3)))])
    return table(["setting", "method", "seeds", "accuracy", "macro-F1", "macro ROC AUC", "log loss"], rows)


def multilabel_table(records: Sequence[Record]) -> list[str]:
    """GoEmotions per method: the whole test set, its first rows, training and scoring speed."""
    rows = []
    for group in sorted(groups(records), key=lambda g: (by_method(g), setting(g[0]))):
        for r in group:
            f = r["figures"]
            test, subset = f["test"], f["subset"]
            speed = f.get("scoring", {}).get("examples_per_second", test.get("examples_per_second"))
            rows.append([r["params"]["method"], setting(r), str(r["seed"]),
                         *(number(test[k], 3) for k in ("micro_f1", "macro_f1", "samples_f1", "roc_auc")),
                         number(subset["macro_f1"], 3), number(test.get("train_seconds"), 0, " s"), number(speed)])
    return table(["method", "setting", "seed", "micro-F1", "macro-F1", "samples-F1", "macro ROC AUC",
                  "macro-F1, first test rows", "training", "scoring ex/s"], rows)


def many_labels_table(records: Sequence[Record]) -> list[str]:
    """Cost per label count K, per condition."""
    rows = []
    for r in records:
        f = r["figures"]
        for x in f["results"]:
            rows.append([setting(r), f"{x['labels']:,}", number(x["codec_fit_seconds"], 2, " s"),
                         number(x["single"]["ex_per_s"]), number(x["independent"]["ex_per_s"]),
                         number(x["yes_no"]["ex_per_s"], 2) if "yes_no" in x else "–",
                         number(f["peak_rss_mb"], 0, " MB")])
    return table(["setting", "K labels", "codec fit", "single-label ex/s", "independent ex/s", "yes_no ex/s",
                  "peak RSS (whole run)"], rows)


def generic_table(records: Sequence[Record]) -> list[str]:
    """Any experiment: its condition, seed and top-level figures."""
    rows = []
    for r in records:
        scalars = {k: v for k, v in r["figures"].items()
                   if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(scalars.items())[:8])
        rows.append([f"`{r['experiment']}`", setting(r), str(r["seed"]), shown or "(see the file)"])
    return table(["experiment", "setting", "seed", "figures"], rows)


TABLES: dict[str, Callable[[Sequence[Record]], list[str]]] = {
    "experiments": experiments_table, "scoring": scoring_table, "score-memory": score_memory_table,
    "long-lines": long_lines_table, "training": training_table, "quality-student": quality_table,
    "quality-trec6": quality_table, "quality-trec50": quality_table, "multilabel": multilabel_table,
    "many-labels": many_labels_table}


# ---------------------------------------------------------------------------------------------------------- driver

def render(name: str, records: Sequence[Record]) -> str:
    """A marked block's content: the table, where its figures come from, and the commands that reproduce them."""
    if name == "experiments":
        return "\n".join(experiments_table(records)) + "\n"
    mine = [r for r in records if EXPERIMENTS[r["experiment"]].table == name]
    if not mine:
        return "No results yet.\n"
    build = TABLES.get(name, generic_table)
    return "\n".join([*build(mine), "", provenance(mine), "", *commands(mine)]) + "\n"


def name_problems(records: Sequence[Record]) -> list[str]:
    """Result files of an unknown experiment, or not named as their experiment and parameters call for."""
    problems = []
    for r in records:
        if r["experiment"] not in EXPERIMENTS:
            problems.append(f"{r['file']}: unknown experiment {r['experiment']!r}")
            continue
        expected = result_name(r["experiment"], r["params"], defaults_of(r), r["seed"])
        if r["file"] != expected:
            problems.append(f"{r['file']}: its experiment and parameters name it {expected}")
    return problems


def regenerate(text: str, records: Sequence[Record]) -> tuple[str, list[str]]:
    """The README with every marked block regenerated, and the problems found (unknown tables, unshown results)."""
    known = {r["experiment"] for r in records if r["experiment"] in EXPERIMENTS}
    names = [m.group("name") for m in MARKER.finditer(text)]
    problems = [f"bench/README.md: no table {name!r} (known: experiments, {', '.join(sorted(TABLES))} and the "
                f"experiments' own tables)" for name in names
                if name != "experiments" and name not in {exp.table for exp in EXPERIMENTS.values()}]
    unshown = sorted({EXPERIMENTS[e].table for e in known} - set(names))
    for table_name in unshown:
        shown_by = ", ".join(sorted(e for e in known if EXPERIMENTS[e].table == table_name))
        problems.append(f"bench/README.md has no `<!-- bench report: {table_name} -->` block for results of {shown_by}")
    valid = [r for r in records if r["experiment"] in EXPERIMENTS]
    new = MARKER.sub(lambda m: m.group(1) + render(m.group("name"), valid) + m.group(4), text)
    return new, problems


def report(results: Path, readme: Path, check: bool = False) -> int:
    """Regenerate (or with `check`, compare) the README's tables; 0 when all is current, else 1."""
    records = read_results(results)
    text = readme.read_text(encoding="utf-8")
    new, problems = regenerate(text, records)
    problems = name_problems(records) + problems
    if check and new != text:
        diff = difflib.unified_diff(text.splitlines(), new.splitlines(), f"{readme} (committed)",
                                    f"{readme} (from {results})", lineterm="", n=1)
        problems.append("the tables differ from the result files; run `python -m bench report`:\n" + "\n".join(diff))
    elif not check and new != text:
        readme.write_text(new, encoding="utf-8")
        print(f"wrote {readme}")
    for problem in problems:
        print(problem)
    return 1 if problems else 0

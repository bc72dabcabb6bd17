"""Cleaning, splitting and reporting on labeled data, and writing it as OpenAI-style prompt/completion JSONL.

The report follows the spirit of OpenAI's `prepare_data`: what was dropped and why, how the classes are balanced,
how long the prompts are in tokens, and which labels needed a single-token alias.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from neogen.errors import DataError, OutputError
from neogen.folders import claim, file_id, is_marked
from neogen.labels import LabelCodec, alias_lines, word_token
from neogen.multilabel import MultiLabelCodec
from neogen.prompt import SEPARATOR, PromptEncoder, prompt_text
from neogen.read import ColumnChoice, Example
from neogen.tasks import task_for

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass
class CleanReport:
    """What cleaning dropped, with counts and the first lines affected."""

    rows: int = 0
    empty: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    conflicting: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows_read": self.rows, "empty_texts_dropped": len(self.empty),
                "duplicates_dropped": len(self.duplicates),
                "conflicting_duplicates_dropped": len(self.conflicting),
                "first_lines": {"empty": self.empty[:5], "duplicates": self.duplicates[:5],
                                "conflicting": self.conflicting[:5]}}


def clean(examples: list[Example]) -> tuple[list[Example], CleanReport]:
    """Drop empty texts and repeated texts (the first occurrence stays), counting each kind."""
    report = CleanReport(rows=len(examples))
    first_label: dict[str, str] = {}
    kept = []
    for ex in examples:
        if not ex.text:
            report.empty.append(ex.line)
        elif ex.text in first_label:
            same = first_label[ex.text] == ex.label
            (report.duplicates if same else report.conflicting).append(ex.line)
        else:
            first_label[ex.text] = ex.label
            kept.append(ex)
    if report.empty or report.duplicates or report.conflicting:
        logger.info("dropped %d empty, %d duplicate and %d conflicting-duplicate rows",
                    len(report.empty), len(report.duplicates), len(report.conflicting))
    return kept, report


def _ratio(value: float) -> Fraction:
    """A ratio as the exact decimal it was written as (0.3 is 3/10): float products are off by one (90 x 0.7)."""
    return Fraction(repr(float(value)))


def _round(x: Fraction) -> int:
    """Round half away from zero (x >= 0), not Python's half-to-even."""
    return math.floor(x + Fraction(1, 2))


def _share(total: int, quotas: dict[str, Fraction], caps: dict[str, int], order: dict[str, tuple]) -> dict[str, int]:
    """Largest remainder: `total` units over the keys, near their quotas and at most their caps.

    Each key gets the floor of its quota (capped); the units left go one at a time to the keys furthest below their
    quota, ties broken by `order`. total must not exceed the sum of the caps.
    """
    got = {k: min(math.floor(q), caps[k]) for k, q in quotas.items()}
    left = total - sum(got.values())
    while left > 0:
        room = sorted((k for k in got if got[k] < caps[k]), key=lambda k: (got[k] - quotas[k], order[k]))[:left]
        if not room:
            raise ValueError(f"cannot share {total} units within the caps {caps}")
        for k in room:
            got[k] += 1
        left -= len(room)
    return got


def split(examples: list[Example], valid_ratio: float = 0.0, test_ratio: float = 0.0, shuffle: bool = False,
          stratify: bool = False, seed: int = 0) -> dict[str, list[Example]]:
    """Train/valid/test splits. Unshuffled, the test rows are the last ones, as in the tutorial's 80/20 split.

    Sizes come from exact arithmetic on the ratios as written. Unshuffled or shuffled, train keeps the tutorial's
    int(n x (1 - valid - test)) rows and valid int(n x (1 - test)) - that. Stratified, each held-out split gets its
    ratio of all rows (rounded half up), shared over the classes by largest remainder, and every class keeps at least
    one training row. A split asked for but left empty is logged as a warning.
    """
    v, t = _ratio(valid_ratio), _ratio(test_ratio)
    rng = random.Random(seed)
    if stratify:
        parts = _stratified(examples, v, t, rng)
    else:
        order = list(range(len(examples)))
        if shuffle:
            rng.shuffle(order)
        n = len(order)
        # At least one training row: a file held out whole could never be trained on.
        train_end = max(math.floor(n * (1 - v - t)), min(n, 1))
        valid_end = max(math.floor(n * (1 - t)), train_end)
        parts = {"train": order[:train_end], "valid": order[train_end:valid_end], "test": order[valid_end:]}
    for name, ratio in (("valid", valid_ratio), ("test", test_ratio)):
        if ratio and examples and not parts[name]:
            logger.warning("the %s split is empty: %s of %d rows rounds to none%s; give more rows or a larger "
                           "--%s-ratio (data.%s_ratio)", name, ratio, len(examples),
                           " once every class keeps a training row" if stratify else "", name, name)
    return {name: [examples[i] for i in idx] for name, idx in parts.items()}


def _stratified(examples: list[Example], v: Fraction, t: Fraction, rng: random.Random) -> dict[str, list[int]]:
    """Row indexes of stratified splits, each in file order: held-out rows shared over classes by largest remainder.

    A class keeps at least one training row (a class held out whole could never be predicted, and training would
    refuse its held-out rows). Ties go to the larger class, then the first label by name.
    """
    by_class: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_class.setdefault(ex.label, []).append(i)
    n = len(examples)
    sizes = {label: len(members) for label, members in by_class.items()}
    order = {label: (-size, label) for label, size in sizes.items()}
    want = {"valid": _round(n * v), "test": _round(n * t)}
    room = n - len(by_class)  # every row but one per class
    if sum(want.values()) > room:
        logger.warning("stratified split: %d valid and %d test rows asked for, but only %d of %d rows can be held out "
                       "with every class keeping a training row; the held-out splits shrink to fit",
                       want["valid"], want["test"], room, n)
        asked = sum(want.values())
        want = _share(room, {k: Fraction(room * w, asked) for k, w in want.items()}, dict(want),
                      {"valid": (1,), "test": (0,)})
    # Each class's quota is its share of the split's actual size, so the floors never overshoot it.
    held = sum(want.values())
    held_out = _share(held, {c: Fraction(size * held, n) for c, size in sizes.items()},
                      {c: size - 1 for c, size in sizes.items()}, order)
    test = _share(want["test"], {c: Fraction(size * want["test"], n) for c, size in sizes.items()}, held_out, order)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        train_end = sizes[label] - held_out[label]
        valid_end = train_end + held_out[label] - test[label]
        parts["train"] += members[:train_end]
        parts["valid"] += members[train_end:valid_end]
        parts["test"] += members[valid_end:]
    # Rows keep their file order inside each split.
    return {name: sorted(idx) for name, idx in parts.items()}


def data_report(splits: dict[str, list[Example]], codec: LabelCodec | MultiLabelCodec, encoder: PromptEncoder,
                choice: ColumnChoice | None, cleaning: CleanReport | None) -> dict[str, Any]:
    """Facts about the data a user should see before training on it.

    Prompt lengths are counted up to 4 x max_length tokens (`counted_up_to`): a longer prompt counts as that many,
    and `longer_than_counted` says how many there were, so a huge text costs no more to report than to train on.
    The percentiles and max are exact wherever they lie under that cap, and `over_max_length` always is.
    """
    task = task_for(codec)
    everything = [ex for part in splits.values() for ex in part]
    counts = task.label_counts(everything)
    around = len(encoder.prefix_ids) + len(encoder.separator_ids)
    counted = 4 * encoder.max_length
    lengths = np.array([len(ids) + around for ids in encoder.text_ids([ex.text for ex in everything],
                                                                       counted - around + 1)] or [0])
    longer = int((lengths > counted).sum())
    lengths = np.minimum(lengths, counted)
    train_texts = {ex.text for ex in splits.get("train", [])}
    return {
        "columns": None if choice is None else {"text": choice.text, "label": choice.label, "why": choice.reason},
        "cleaning": None if cleaning is None else cleaning.to_dict(),
        "rows": {name: len(part) for name, part in splits.items()},
        "rows_sha256": rows_sha256(splits),
        "classes": dict(sorted(counts.items())),
        "imbalance_ratio": round(max(counts.values()) / min(counts.values()), 2) if counts else None,
        "prompt_tokens": {f"p{p}": int(np.percentile(lengths, p)) for p in (50, 90, 95, 99)}
        | {"max": int(lengths.max()), "over_max_length": int((lengths > encoder.max_length).sum()),
           "max_length": encoder.max_length, "counted_up_to": counted, "longer_than_counted": longer},
        "texts_with_separator": sum(SEPARATOR.strip() in ex.text for ex in everything),
        "test_texts_also_in_train": sum(ex.text in train_texts for ex in splits.get("test", [])),
        "aliases": task.classes.aliases,
        "completions": dict(zip(task.classes.labels, task.classes.completions, strict=True)),
        "label_sets": task.label_set_report(splits),
    }


def rows_sha256(splits: dict[str, list[Example]]) -> dict[str, str]:
    """Per split, a digest of its rows (text and label or label set) in order: a resumed run must see the same."""
    digests = {}
    for name, part in splits.items():
        digest = hashlib.sha256()
        for ex in part:
            row = [ex.text, ex.label if ex.labels is None else list(ex.labels)]
            digest.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        digests[name] = digest.hexdigest()
    return digests


def format_report(report: dict[str, Any]) -> str:
    """The data report as a few lines of text for the terminal."""
    lines = []
    if report["columns"]:
        c = report["columns"]
        lines.append(f"columns: text='{c['text']}', label='{c['label']}' ({c['why']})")
    if report["cleaning"]:
        c = report["cleaning"]
        lines.append(f"rows read: {c['rows_read']}; dropped {c['empty_texts_dropped']} empty, "
                     f"{c['duplicates_dropped']} duplicate, {c['conflicting_duplicates_dropped']} conflicting")
    lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in report["rows"].items()))
    total = sum(report["classes"].values())
    lines.append(f"classes ({len(report['classes'])}, imbalance ratio {report['imbalance_ratio']}):")
    lines += [f"  {label:<24} {n:>7}  {n / total:6.1%}" for label, n in report["classes"].items()]
    sets = report.get("label_sets")
    if sets:
        lines.append(f"multi-label ({sets['encoding']}): {sets['distinct_in_train']} distinct label sets in train")
        for name in SPLITS:
            if name in sets:
                part = sets[name]
                lines.append(f"  {name}: {part['labels_per_row']} labels per row, {part['rows_without_label']} "
                             f"without a label, {part['rows_with_unseen_set']} with a label set unseen in train")
    t = report["prompt_tokens"]
    lines.append(f"prompt tokens: p50 {t['p50']}, p90 {t['p90']}, p95 {t['p95']}, p99 {t['p99']}, max {t['max']}; "
                 f"{t['over_max_length']} over max_length {t['max_length']} (text truncated, separator kept)"
                 + (f"; {t['longer_than_counted']} longer than {t['counted_up_to']}, counted as {t['counted_up_to']}"
                    if t.get("longer_than_counted") else ""))
    if report["texts_with_separator"]:
        lines.append(f"warning: {report['texts_with_separator']} texts contain '###'; "
                     "the prompt still ends in the separator")
    if report["test_texts_also_in_train"]:
        lines.append(f"warning: {report['test_texts_also_in_train']} test texts also appear in train")
    if report["aliases"]:
        lines.append("labels that are not one token, and the single-token alias used:")
        lines += alias_lines(report["aliases"], report.get("completions", {}))
    else:
        lines.append("every label is a single token: " + ", ".join(repr(c) for c in report["completions"].values()))
    return "\n".join(lines)


def write_jsonl(path: Path, examples: list[Example], codec: LabelCodec | MultiLabelCodec) -> None:
    """OpenAI-style rows: prompt (text + separator), completion (' ' + label token) and the original label.

    Multi-label rows carry `labels` (a list); their completion is the label set's token (powerset; empty for a set
    unseen in training) or the label tokens in order (independent, yes_no), for reading only.
    """
    task = task_for(codec)
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            row = {"prompt": prompt_text(ex.text, codec.separator), **task.prepared_row(ex)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def prepared_words(examples: list[Example], tokenizer: Any) -> dict[str, str]:
    """Label -> completion word that a prepared file (`neogen prepare`) chose for it, so training reproduces it.

    Only rows that carry both a label and a completion count, and only completions that are not just the label;
    a completion this tokenizer cannot take as one token (prepared for another model) is left to the codec, with
    a warning. Two completions for one label are an error naming both lines.
    """
    seen: dict[str, Example] = {}
    for ex in examples:
        if ex.completion is None:
            continue
        first = seen.setdefault(ex.label, ex)
        if first.completion != ex.completion:
            raise DataError(ex.source, ex.line, f"label {ex.label!r} has completion {ex.completion!r} here and "
                            f"{first.completion!r} on line {first.line}",
                            "give each label one completion (re-run neogen prepare)")
    words = {}
    for label, ex in seen.items():
        word = ex.completion.strip()
        if not word or word == label:
            continue
        if word_token(tokenizer, word) is None:
            logger.warning("%s: completion %r of label %r is not one token of this model's tokenizer (was the file "
                           "prepared for another model?); the label gets its own completion", ex.source,
                           ex.completion, label)
            continue
        words[label] = word
    return words


SPLIT_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl")
PREPARED_FILES = (*SPLIT_FILES, "labels.json", "report.json")
PREPARED_MARKER = "neogen-data.json"  # written by prepare: the files above in this folder are neogen's to replace


def check_out_dir(out_dir: Path, source: str | Path) -> None:
    """Refuse, before any work, an --out folder where prepare would overwrite its input or a file it did not write.

    A folder an earlier `neogen prepare` wrote (it holds PREPARED_MARKER) is prepared again in place; in any other
    folder the files prepare writes must not exist yet.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file, not a folder (fix: give a folder, e.g. prepared/)")
    source_id = file_id(source)
    for name in PREPARED_FILES:
        target = out_dir / name
        if os.path.realpath(target) == os.path.realpath(source) or (source_id and file_id(target) == source_id):
            raise OutputError(f"prepare would write {target} over its own input {source} (fix: give another --out "
                              "folder, e.g. prepared/)")
    if is_marked(out_dir, PREPARED_MARKER, "prepared"):
        return
    clashes = [name for name in PREPARED_FILES if (out_dir / name).exists()]
    if clashes:
        raise OutputError(f"--out {out_dir} already holds {', '.join(clashes)}, which neogen did not write (fix: "
                          "give an empty or new --out folder; neogen never overwrites files it did not write)")


def write_prepared(out_dir: Path, splits: dict[str, list[Example]], codec: LabelCodec | MultiLabelCodec,
                   report: dict[str, Any], source: str | Path) -> list[Path]:
    """Write the non-empty splits, labels.json and report.json into out_dir (checked by check_out_dir first).

    An empty split's file from an earlier prepare into the same folder is removed, so the folder never mixes two
    preparations.
    """
    check_out_dir(out_dir, source)
    claim(out_dir, PREPARED_MARKER, "prepared", "give an empty or new --out folder", adopt=True)
    for name, part in splits.items():
        if not part:
            (out_dir / f"{name}.jsonl").unlink(missing_ok=True)
    written = []
    for name, part in splits.items():
        if part:
            write_jsonl(out_dir / f"{name}.jsonl", part, codec)
            written.append(out_dir / f"{name}.jsonl")
    codec.save(out_dir / "labels.json")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [*written, out_dir / "labels.json", out_dir / "report.json"]

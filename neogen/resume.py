"""Resuming an interrupted training run from its newest checkpoint, exactly where it stopped.

Trainer restores the optimizer, the schedule, the RNG and the data position from a checkpoint; what it cannot know
is whether the recipe and data given now are the ones the checkpoint was trained with, and two of its habits break
an exact resume (the length-grouped order of later epochs, the learning rate after raising train.epochs). This
module checks the first and mends the second; the tests check that an interrupted and resumed run ends with the
weights of one that never stopped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from neogen import distributed
from neogen.errors import ConfigError, NeogenError
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec
from neogen.prepare import rows_sha256
from neogen.read import Example
from neogen.recipe import Recipe, load_yaml, resumable_keys
from neogen.run import Run

logger = logging.getLogger(__name__)



def checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete Trainer checkpoints, oldest first (Run.checkpoints)."""
    return Run(run_dir).checkpoints()


def _flat(recipe: dict[str, Any]) -> dict[str, Any]:
    """{"train": {"lr": 1e-3}, "output_dir": ...} -> {"train.lr": 1e-3, "output_dir": ...}."""
    out: dict[str, Any] = {}
    for key, value in recipe.items():
        if isinstance(value, dict):
            out.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            out[key] = value
    return out


def resume_point(run_dir: Path, recipe: Recipe) -> Path:
    """The newest checkpoint of the run, once the recipe is known to match the one it was trained with."""
    found = checkpoints(run_dir)
    if not found:
        raise NeogenError(f"nothing to resume: {Run(run_dir).checkpoints_dir} holds no complete checkpoint-* "
                          f"(fix: start the run afresh by leaving out --resume / resume=True)")
    path = Run(run_dir).recipe_file
    if not path.is_file():
        raise NeogenError(f"cannot resume {run_dir}: {path} is missing, so the checkpoint's recipe is unknown "
                          "(fix: train afresh into a new output_dir)")
    raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    try:
        saved = Recipe.from_dict(raw, str(path)).to_dict()  # defaults filled in, as in the recipe given now
    except ConfigError:
        saved = raw  # written by another neogen version: compare what it holds
    old, new = _flat(saved), _flat(recipe.to_dict())
    absent = object()  # a key one of the two lacks differs from any value
    changed = [f"{key}: {old.get(key, '(absent)')!r} in the run, {new.get(key, '(absent)')!r} now"
               for key in sorted(old.keys() | new.keys())
               if key not in resumable_keys() and old.get(key, absent) != new.get(key, absent)]
    if changed:
        _refuse_resume(run_dir, f"another recipe ({path})", changed)
    # Trainer saves one RNG state per process (rng_state_RANK.pth; rng_state.pth alone). Each optimizer step took
    # batch_size x grad_accum rows from every process, so the data position only carries over to as many processes.
    saved_world = Run(run_dir).report().get("processes") or len(list(found[-1].glob("rng_state_*.pth"))) or 1
    if saved_world > 1:
        # Rank 0 writes trainer_state.json without waiting for the other ranks' RNG states: a kill in between leaves
        # a checkpoint that looks complete. Resume from the newest one that has every rank's.
        whole = [cp for cp in found if all((cp / f"rng_state_{r}.pth").is_file() for r in range(saved_world))]
        if not whole:
            raise NeogenError(f"nothing to resume: no checkpoint in {Run(run_dir).checkpoints_dir} holds the RNG "
                              f"states of all {saved_world} processes (fix: start the run afresh without --resume)")
        if whole[-1] != found[-1]:
            logger.warning("%s lacks some of the %d processes' RNG states (stopped while saving); resuming from %s",
                           found[-1], saved_world, whole[-1])
        found = whole
    world = distributed.world().size
    if saved_world != world:
        launch = f"torchrun --nproc_per_node {saved_world}" if saved_world > 1 else "a single process (no torchrun)"
        raise NeogenError(f"cannot resume {run_dir}: {found[-1]} was trained by {saved_world} process(es), this "
                          f"launch has {world}, and the data position does not carry over between the two (fix: "
                          f"resume with {launch}, or train afresh into a new output_dir without --resume)")
    if old.get("train.epochs") != new["train.epochs"]:
        logger.info("train.epochs %s -> %s: training goes on to the new total; the learning-rate schedule is "
                    "recomputed over it", old.get("train.epochs"), new["train.epochs"])
    return found[-1]


def _refuse_resume(run_dir: Path, what: str, changed: list[str]) -> None:
    """Every difference at once, each with the run's value and the new one, and the two ways out."""
    lines = "\n".join(f"  - {c}" for c in changed)
    allowed = ", ".join(sorted(resumable_keys()))
    raise NeogenError(f"cannot resume {run_dir}: its checkpoint was trained with {what}:\n{lines}\n"
                      f"fix: resume with the run's own recipe (neogen train {Run(run_dir).recipe_file} --resume; only "
                      f"{allowed} may change), or train afresh into a new output_dir without --resume")


def check_resumed_data(run_dir: Path, codec: LabelCodec | MultiLabelCodec, splits: dict[str, list[Example]]) -> None:
    """Refuse to resume on data that gives other labels, completion tokens or split sizes than the run's."""
    run = Run(run_dir)
    saved, name = run.saved_codec(), Run.CODEC_FILE
    now = json.loads(json.dumps(codec.to_dict()))  # through JSON, as saved: tuples become lists
    changed = [f"{name} {key}: {saved.get(key, '(absent)')!r} in the run, {now.get(key, '(absent)')!r} now"
                for key in sorted(saved.keys() | now.keys()) if saved.get(key) != now.get(key)]
    rows = {name: len(part) for name, part in splits.items()}
    report = run.report()
    saved_rows, saved_digests = report.get("rows"), report.get("rows_sha256")  # no digests: an older run
    if saved_rows is not None and saved_rows != rows:
        changed.append(f"rows per split: {saved_rows} in the run, {rows} now")
    elif saved_digests is not None:
        digests = rows_sha256(splits)
        changed += [f"the {name} split's texts or labels (same number of rows, other contents or order)"
                    for name in sorted(saved_digests.keys() | digests.keys())
                    if saved_digests.get(name) != digests.get(name)]
    if changed:
        _refuse_resume(run_dir, f"other data ({name}, {Run.REPORT_FILE})", changed)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep metrics.jsonl's records up to the resumed checkpoint's step, so the resumed run's follow without overlap.

    Trainer logs and validates at a step before it saves that step's checkpoint, so those records stay; the
    end-of-training summary (train_runtime, ...) of a finished run is written again when the resumed run ends.
    """
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            at = int(record["step"])
        except (ValueError, KeyError, TypeError):  # a line cut short by the interruption
            dropped += 1
            continue
        if at < step or (at == step and "train_runtime" not in record):
            kept.append(line + "\n")
        else:
            dropped += 1
    path.write_text("".join(kept), encoding="utf-8")
    if dropped:
        logger.info("%s: dropped %d record(s) logged after step %d", path, dropped, step)


def resumable(trainer_class: type) -> type:
    """The Trainer class resumed runs need: a training order that depends on the seed and the epoch alone, and the
    new schedule's learning rate from the first resumed step.

    Trainer's group_by_length sampler draws each epoch's order from the global RNG. A run resumed in the middle of
    epoch >= 1 then skips the trained batches of another order than the one it trained on (the RNG holds the state
    after model setup, not the one at that epoch's start), so it repeats some rows and misses others. Seeding the
    order from seed + epoch replays it exactly, and gives every DDP rank the same order without relying on equal
    RNG states.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthSampler(LengthGroupedSampler):
        def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
            super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
            self.seed = seed
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:  # called by accelerate's data loader at every epoch
            self.epoch = epoch

        def __iter__(self) -> Any:
            self.generator.manual_seed(self.seed + self.epoch)
            return super().__iter__()

    class ResumableTrainer(trainer_class):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                sampler = self._length_sampler = EpochSeededLengthSampler(sampler.batch_size, sampler.lengths, seed)
            return sampler

        def _run_epoch(self, model: Any, epoch: int, *args: Any, **kwargs: Any) -> Any:
            # Trainer's own set_epoch calls reach the sampler through at most two wrappers. Under DDP, a run resumed
            # mid-epoch has three (skipped batches, rank shard, batches), and the sampler kept epoch 0: the resumed
            # epoch >= 1 then finished epoch 0's order. Told directly, it replays the epoch it stopped in.
            sampler = getattr(self, "_length_sampler", None)
            if sampler is not None:
                sampler.set_epoch(epoch)
            return super()._run_epoch(model, epoch, *args, **kwargs)

        def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
            super()._load_optimizer_and_scheduler(checkpoint)
            # With train.epochs raised, the schedule is rebuilt over the new total, but the optimizer comes back with
            # the rate the old schedule set (0 at the end of a linear decay) for the first resumed step: take the new
            # schedule's. Unchanged epochs give the saved rate again, bit for bit.
            scheduler = self.lr_scheduler
            if checkpoint is not None and type(scheduler) is torch.optim.lr_scheduler.LambdaLR:
                rates = [base * rate(scheduler.last_epoch)
                         for base, rate in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
                for group, lr in zip(self.optimizer.param_groups, rates, strict=True):
                    group["lr"] = lr
                scheduler._last_lr = rates  # what Trainer logs as learning_rate

    return ResumableTrainer

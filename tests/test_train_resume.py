"""Resumable training (`neogen train RECIPE --resume`, `train(recipe, resume=True)`) on the tiny GPT-Neo.

A run is interrupted mid-epoch in its second epoch, then resumed; its weights must equal those of a run that was
never interrupted, which holds only if the optimizer, the schedule, the RNG and the data order all pick up where
the checkpoint left them.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HANG_TIMEOUT, ROOT, toy_rows, write_csv
from safetensors.torch import load_file
from transformers import TrainerCallback

from neogen.classify import Classifier
from neogen.errors import ConfigError, NeogenError
from neogen.recipe import Recipe
from neogen.resume import checkpoints
from neogen.train import train

STOP_AT = 9  # 6 steps per epoch: mid-epoch 2, one step after checkpoint-8
TIMING = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "train_runtime",
          "train_samples_per_second", "train_steps_per_second", "train_loss"}


class Interrupt(TrainerCallback):
    """Raises KeyboardInterrupt (as Ctrl-C would) once step `at` is logged, after the checkpoint before it."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt


def resume_recipe(tiny_neo: str, data_dir: Path, out: Path, **train_keys) -> Recipe:
    """24 train / 12 valid / 12 test rows, batch 4: 6 steps per epoch, 12 in all; a checkpoint every 2 steps."""
    csv = data_dir / "toy.csv"
    if not csv.exists():
        write_csv(csv, toy_rows(12))
    return Recipe.from_dict({
        "model": {"name": tiny_neo},
        "lora": {"r": 4, "alpha": 8},  # LoRA dropout stays on: the RNG state matters
        "data": {"train": str(csv), "valid_ratio": 0.25, "test_ratio": 0.25, "stratify": True},
        "train": {"epochs": 2, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "evaluate": ["test"], **train_keys},
        "output_dir": str(out),
    })


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def kinds(log: list[dict]) -> list[tuple[int, str]]:
    """(step, kind) of every record: a training-loss, validation or end-of-training record."""
    return [(r["step"], "summary" if "train_runtime" in r else "eval" if "eval_loss" in r else "train") for r in log]


@pytest.fixture(scope="module")
def interrupted(tiny_neo, tmp_path_factory) -> tuple[Path, Path]:
    """(data dir, run dir) of a run stopped by KeyboardInterrupt at step 9, its newest checkpoint at step 8."""
    tmp = tmp_path_factory.mktemp("resume")
    with pytest.raises(KeyboardInterrupt):
        train(resume_recipe(tiny_neo, tmp, tmp / "run"), callbacks=[Interrupt(STOP_AT)])
    return tmp, tmp / "run"


def test_resumed_run_equals_an_uninterrupted_one(tiny_neo, tmp_path, interrupted):
    data_dir, run = interrupted
    assert checkpoints(run)[-1].name == "checkpoint-8"
    assert max(r["step"] for r in records(run)) == STOP_AT  # logged after the checkpoint: dropped on resume

    train(resume_recipe(tiny_neo, data_dir, run), resume=True)
    whole = train(resume_recipe(tiny_neo, data_dir, tmp_path / "whole"))

    for adapter in ("last", "adapter"):  # the final weights, and the best checkpoint's
        resumed, expected = (load_file(r / adapter / "adapter_model.safetensors") for r in (run, whole))
        assert resumed.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(resumed[name], expected[name], rtol=1e-6, atol=1e-7, msg=f"{adapter} {name}")
    got, want = records(run), records(whole)
    assert kinds(got) == kinds(want)  # every step logged once, none twice, none missing
    assert len(set(kinds(got))) == len(got)
    for r, w in zip(got, want, strict=True):
        assert r.keys() == w.keys()
        for key in r.keys() - TIMING:
            assert r[key] == pytest.approx(w[key], rel=1e-5, abs=1e-7), (r["step"], key)
    results = json.loads((run / "results.json").read_text())
    assert results["test"] == pytest.approx(json.loads((whole / "results.json").read_text())["test"])


def test_raising_epochs_trains_a_finished_run_longer(tiny_neo, tmp_path, caplog):
    recipe = resume_recipe(tiny_neo, tmp_path, tmp_path / "run", epochs=1, eval_steps=3, save_steps=3)
    run = train(recipe)
    assert checkpoints(run)[-1].name == "checkpoint-6"
    recipe.train.epochs = 2.0
    with caplog.at_level(logging.INFO, logger="neogen.train"):
        train(recipe, resume=True)
    assert "resuming from" in caplog.text and "checkpoint-6: step 6" in caplog.text
    assert checkpoints(run)[-1].name == "checkpoint-12"
    log = records(run)
    assert len(set(kinds(log))) == len(log)  # the first leg's end-of-training record is replaced, not repeated
    assert [s for s, kind in kinds(log) if kind == "train"] == list(range(1, 13))
    assert [s for s, kind in kinds(log) if kind == "summary"] == [12]
    # Steps 7-12 follow the linear decay over 12 steps (1 warm-up step), not the 6-step one that ended at 0.
    rates = {r["step"]: r["learning_rate"] for r in log if "learning_rate" in r}
    assert [rates[s] for s in range(7, 13)] == pytest.approx([5e-3 * (13 - s) / 11 for s in range(7, 13)])
    assert "epochs: 2.0" in (run / "recipe.yaml").read_text()


def test_a_resumed_run_stopped_midway_is_unfinished_again(tiny_neo, tmp_path):
    """Training a finished run longer and stopping it: its checkpoints belong to an unfinished run again, so a
    later run without --resume refuses to delete them instead of taking the old results.json as a finished run."""
    recipe = resume_recipe(tiny_neo, tmp_path, tmp_path / "run", epochs=1, eval_steps=3, save_steps=3)
    run = train(recipe)
    recipe.train.epochs = 2.0
    with pytest.raises(KeyboardInterrupt):
        train(recipe, resume=True, callbacks=[Interrupt(10)])
    assert not (run / "results.json").exists() and checkpoints(run)[-1].name == "checkpoint-9"
    with pytest.raises(NeogenError, match=r"holds checkpoints of an unfinished run \(newest: checkpoint-9\)"):
        train(recipe)
    assert checkpoints(run)[-1].name == "checkpoint-9"


def test_resume_refuses_a_changed_recipe_listing_every_change(tiny_neo, interrupted):
    data_dir, run = interrupted
    recipe = resume_recipe(tiny_neo, data_dir, run, lr=1e-3, epochs=3, logging_steps=5)
    recipe.lora.r = 8
    with pytest.raises(NeogenError, match="cannot resume") as info:
        train(recipe, resume=True)
    message = str(info.value)
    assert "train.lr: 0.005 in the run, 0.001 now" in message and "lora.r: 4 in the run, 8 now" in message
    assert "epochs" not in message.split("fix:")[0] and "logging_steps" not in message.split("fix:")[0]
    assert f"neogen train {run / 'recipe.yaml'} --resume" in message


def test_resume_refuses_changed_data(tiny_neo, tmp_path, interrupted):
    data_dir, run = interrupted
    csv = write_csv(tmp_path / "toy.csv", toy_rows(16))  # same labels, more rows
    recipe = resume_recipe(tiny_neo, data_dir, run)
    recipe.data.train = str(csv)
    with pytest.raises(NeogenError, match=r"data\.train: "):  # the path is part of the recipe
        train(recipe, resume=True)
    (run / "recipe.yaml").write_text((run / "recipe.yaml").read_text().replace(str(data_dir / "toy.csv"), str(csv)))
    try:
        with pytest.raises(NeogenError, match=r"rows per split: \{'train': 24, 'valid': 12, 'test': 12\} in the run"):
            train(recipe, resume=True)
    finally:
        (run / "recipe.yaml").write_text((run / "recipe.yaml").read_text().replace(str(csv), str(data_dir / "toy.csv")))


def test_resume_refuses_the_same_number_of_rows_with_other_contents(tiny_neo, interrupted):
    data_dir, run = interrupted
    csv = data_dir / "toy.csv"
    original = csv.read_text()
    rows = toy_rows(12)
    rows[0] = ("an edited first question about " + rows[0][0], rows[0][1])  # same label, same number of rows
    write_csv(csv, rows)
    try:
        with pytest.raises(NeogenError, match=r"the \w+ split's texts or labels \(same number of rows"):
            train(resume_recipe(tiny_neo, data_dir, run), resume=True)
    finally:
        csv.write_text(original)


def test_resume_refuses_another_number_of_processes(tiny_neo, interrupted, monkeypatch):
    data_dir, run = interrupted
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun --nproc_per_node 2; the checkpoint had 1 process
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(NeogenError, match=r"trained by 1 process\(es\), this launch has 2.*a single process"):
        train(resume_recipe(tiny_neo, data_dir, run), resume=True)


def test_resume_without_a_checkpoint_says_how_to_start(tiny_neo, tmp_path):
    with pytest.raises(NeogenError, match=r"nothing to resume: .*checkpoints holds no complete checkpoint.*"
                                          r"leaving out --resume"):
        train(resume_recipe(tiny_neo, tmp_path, tmp_path / "fresh"), resume=True)


def test_cli_resume_without_a_checkpoint_is_one_clear_line(tiny_neo, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "neogen.cli", "train", "recipes/quickstart.yaml", f"model.name={tiny_neo}",
               f"output_dir={tmp_path / 'run'}", "--resume"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: nothing to resume" in proc.stderr and "leaving out --resume" in proc.stderr


def test_a_fresh_run_refuses_an_unfinished_runs_checkpoints(tiny_neo, interrupted, tmp_path):
    data_dir, run = interrupted
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "results.json").unlink(missing_ok=True)  # as the run was before it was resumed to the end
    with pytest.raises(NeogenError, match=r"holds checkpoints of an unfinished run \(newest: checkpoint-\d+\).*"
                                          r"add --resume.*or delete .*checkpoints"):
        train(resume_recipe(tiny_neo, data_dir, copy))
    assert checkpoints(copy)  # nothing deleted


def test_a_refused_fresh_run_leaves_a_finished_run_whole(tiny_neo, interrupted, tmp_path):
    data_dir, run = interrupted
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "results.json").write_text("{}")  # finished
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    for change in ({"data": {"train": str(data_dir / "missing.csv")}},  # refused while reading data
                   {"train": {"class_weight": {"Nope": 2}}}):  # refused once the labels are known
        recipe = resume_recipe(tiny_neo, data_dir, copy)
        for section, keys in change.items():
            for key, value in keys.items():
                setattr(getattr(recipe, section), key, value)
        with pytest.raises(NeogenError):
            train(recipe)
        assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_a_fresh_run_replaces_everything_of_a_finished_run(tiny_neo, interrupted, tmp_path, caplog):
    data_dir, run = interrupted
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "results.json").write_text("{}")  # finished
    for name in ("thresholds.json", "calibration.json", "eval/test/metrics.json", "adapter/stale.txt"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text("{}")  # an earlier run's files this run does not write
    with caplog.at_level(logging.WARNING, logger="neogen.train"):
        train(resume_recipe(tiny_neo, data_dir, copy, epochs=1))
    assert re.search(r"removing the finished earlier run's checkpoints, adapter, (last, )?eval, thresholds.json, "
                     r"calibration.json, results.json", caplog.text)
    assert not (copy / "thresholds.json").exists() and not (copy / "calibration.json").exists()
    assert not (copy / "adapter" / "stale.txt").exists() and json.loads((copy / "results.json").read_text())
    assert [p.name for p in checkpoints(copy)][-1] == "checkpoint-6"  # this run's 6 steps, none of the earlier 12
    Classifier.load(copy)


def test_save_steps_must_fit_validation(tiny_neo, tmp_path):
    # Saving every 4 steps while validating every 2 would lose a best validation at step 2 or 6: Trainer marks a
    # new best only where it also saves.
    with pytest.raises(ConfigError, match=r"train.save_steps: with a validation split the run saves where it "
                                          r"validates.*train.eval_steps=4"):
        resume_recipe(tiny_neo, tmp_path, tmp_path / "run", save_steps=4)
    with pytest.raises(ConfigError, match=r"train\.save_steps: must be >= 1"):
        resume_recipe(tiny_neo, tmp_path, tmp_path / "run", save_steps=0)
    with pytest.raises(ConfigError, match=r"train.save_steps: with a validation split .* train.eval_steps=4"):
        train(resume_recipe(tiny_neo, tmp_path, tmp_path / "run", save_steps=4, eval_steps=None))


def test_every_epoch_reaches_the_length_sampler_however_deep_the_loader_wraps_it(monkeypatch):
    """Under DDP a run resumed mid-epoch wraps the sampler three deep, past Trainer's own set_epoch calls."""
    from transformers import Trainer

    from neogen.resume import resumable

    assert hasattr(Trainer, "_run_epoch")  # the per-epoch hook this relies on exists in this transformers
    sampler_epochs = []
    monkeypatch.setattr(Trainer, "_run_epoch",
                        lambda self, model, epoch, *args, **kwargs: sampler_epochs.append(self._length_sampler.epoch))
    trainer_class = resumable(Trainer)
    trainer = object.__new__(trainer_class)  # only _run_epoch runs: no model needed

    class Sampler:
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

    trainer._length_sampler = Sampler()
    for epoch in (1, 2):
        trainer._run_epoch(None, epoch, "loader", 3, 3, None, None, 0.0, "checkpoint-4", 1, 1)
    assert sampler_epochs == [1, 2]


def test_a_torchrun_checkpoint_missing_a_ranks_rng_state_is_passed_over(tiny_neo, interrupted, tmp_path, monkeypatch):
    from neogen.resume import resume_point

    data_dir, run = interrupted
    copy = shutil.copytree(run, tmp_path / "run")
    report = json.loads((copy / "data_report.json").read_text())
    (copy / "data_report.json").write_text(json.dumps({**report, "processes": 2}))
    older, newest = checkpoints(copy)[-2:]
    for checkpoint, ranks in ((older, (0, 1)), (newest, (0,))):  # newest: rank 1 was killed before saving its RNG
        state = checkpoint / "rng_state.pth"
        for rank in ranks:
            shutil.copy(state, checkpoint / f"rng_state_{rank}.pth")
        state.unlink()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    recipe = resume_recipe(tiny_neo, data_dir, copy)
    assert resume_point(copy, recipe) == older
    (older / "rng_state_1.pth").unlink()
    with pytest.raises(NeogenError, match=r"no checkpoint .* holds the RNG states of all 2 processes"):
        resume_point(copy, recipe)

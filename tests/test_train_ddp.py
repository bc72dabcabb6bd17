"""Training under torchrun (Trainer's DDP), on CPU with two processes and the gloo backend, through the real command.

Rank 0 alone writes the run dir, evaluates and prints the results; rank 1 trains its shard of every batch and
returns. A second launch resumes the run with more epochs (`--resume`), each rank from its own RNG state.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml
from conftest import HANG_TIMEOUT, ROOT, toy_rows, write_csv

from neogen.resume import checkpoints


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "neogen.cli", *args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT)
    assert proc.returncode == 0, f"torchrun neogen {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def stages(run) -> list[tuple[int, str]]:
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], "summary" if "train_runtime" in r else "eval" if "eval_loss" in r else "train") for r in log]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_resume(tiny_neo, tmp_path):
    csv = write_csv(tmp_path / "toy.csv", toy_rows(12))  # 24 train rows: 3 steps per epoch over 2 x batch 4
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": tiny_neo}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "valid_ratio": 0.25, "test_ratio": 0.25, "stratify": True},
        "train": {"epochs": 1, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "logging_steps": 1, "evaluate": ["valid", "test"]},
        "output_dir": str(tmp_path / "run"),
    }))
    run = tmp_path / "run"

    first = torchrun("train", str(recipe))
    for name in ("adapter/adapter_model.safetensors", "last/adapter_model.safetensors", "labels.json", "recipe.yaml",
                 "data_report.json", "metrics.jsonl", "results.json", "eval/test/metrics.json",
                 "checkpoints/checkpoint-3/rng_state_1.pth"):
        assert (run / name).exists(), name
    assert first.stdout.count("run directory:") == 1  # rank 0 prints the results, rank 1 returns quietly
    state = json.loads((run / "checkpoints/checkpoint-3/trainer_state.json").read_text())
    assert state["max_steps"] == 3  # each optimizer step took 2 x 4 rows: the batches were split between ranks
    assert stages(run) == [(1, "train"), (2, "train"), (3, "train"), (3, "eval"), (3, "summary")]  # written once
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["n"] == 12 and results["best_checkpoint"].endswith("checkpoint-3")

    torchrun("train", str(recipe), "train.epochs=2", "--resume")
    assert checkpoints(run)[-1].name == "checkpoint-6"
    assert stages(run) == [(1, "train"), (2, "train"), (3, "train"), (3, "eval"), (4, "train"), (5, "train"),
                           (6, "train"), (6, "eval"), (6, "summary")]
    assert json.loads((run / "results.json").read_text())["test"]["n"] == 12

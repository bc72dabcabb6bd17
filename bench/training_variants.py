"""Training variants: neogen's training step with and without each of its speed measures, in one process.

Every variant trains a fresh copy of the same LoRA model (seed 0) on the same rows with neogen's Trainer, in
interleaved rounds, and reports examples/s and the final training loss (equal losses mean equal arithmetic):

  base      the model as load_model gives it, the model's own attention (SDPA on Llama-style models)
  precast   + frozen base weights cast once to the autocast dtype (neogen.models.cast_frozen_linears)
  eager     + eager attention instead of SDPA (what neogen.models.attention_for_training picks on the CPU)
  both      both measures: neogen's training as `neogen train` runs it

training-profile records torch.profiler's top ops of one `base` run instead (what the measures were chosen
against).

    python -m bench run training-variants rounds=2
    python -m bench run training-profile
    python -m bench run training-variants --out /tmp/smoke model=gpt-neo-125m-random rows=16 rounds=1

Run it on an otherwise idle machine: the variants differ by less than other processes disturb them.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .common import materialize_model
from .scoring_variants import top_ops
from .training import rows

VARIANTS = ("base", "precast", "eager", "both")


def train_once(base: Any, variant: str, data: dict[str, list[Any]], tokenizer: Any, codec: Any,
               args: SimpleNamespace, precision: str) -> tuple[float, float]:
    """(examples/s, final training loss) of one epoch of neogen's Trainer with the variant's measures."""
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from neogen.models import cast_frozen_linears, lora_targets
    from neogen.prompt import PromptEncoder
    from neogen.tasks import task_for
    from neogen.train import CompletionCollator, to_dataset, trainer_class

    torch.manual_seed(0)
    model = copy.deepcopy(base)
    if variant in ("eager", "both") and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation("eager")
    head = model.get_output_embeddings()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=lora_targets(model), task_type="CAUSAL_LM"))
    if variant in ("precast", "both"):
        cast_frozen_linears(model, precision, keep=head)
    task, encoder = task_for(codec), PromptEncoder(tokenizer, args.max_length, codec.separator)
    trainer = trainer_class()(
        model=model, task=task,
        args=TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=8,
                               learning_rate=1e-3, bf16=precision == "bf16", use_cpu=True, save_strategy="no",
                               report_to=[], disable_tqdm=True, remove_unused_columns=False, label_names=["labels"],
                               train_sampling_strategy="group_by_length", logging_steps=10_000, seed=0),
        train_dataset=to_dataset(encoder([ex.text for ex in data["train"]]), task.targets(data["train"], True)),
        data_collator=CompletionCollator(tokenizer.pad_token_id))
    start = time.perf_counter()
    result = trainer.train()
    return len(data["train"]) / (time.perf_counter() - start), result.training_loss


def setup(params: dict[str, Any]) -> tuple[Any, dict[str, list[Any]], Any, Any, SimpleNamespace, str]:
    """The base model as load_model gives it, the rows, tokenizer, codec, settings and resolved precision."""
    from neogen.labels import LabelCodec
    from neogen.models import load_model, load_tokenizer, resolve_precision

    args = SimpleNamespace(**params, test_rows=1)
    data = rows(args)
    model_dir = materialize_model(args.model, Path(tempfile.mkdtemp()))
    tokenizer = load_tokenizer(model_dir)
    codec = LabelCodec.fit([ex.label for ex in data["train"]], tokenizer)
    cpu = torch.device("cpu")
    precision = resolve_precision(args.precision, cpu)
    base = load_model(model_dir, "auto", None, cpu)
    print(f"model {args.model}, {len(data['train'])} rows, batch 8, max_length {args.max_length}, {precision}, "
          f"attention {base.config._attn_implementation}, {torch.get_num_threads()} threads")
    return base, data, tokenizer, codec, args, precision


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """training-variants: every variant once per round, rounds interleaved; ex/s and final loss of each run."""
    base, data, tokenizer, codec, args, precision = setup(params)
    rounds = []
    for round_ in range(args.rounds):
        runs = {}
        for variant in VARIANTS:
            rate, loss = train_once(base, variant, data, tokenizer, codec, args, precision)
            runs[variant] = {"examples_per_s": rate, "final_loss": loss}
            print(f"round {round_}  {variant:<8} {rate:6.2f} ex/s  final loss {loss:.6f}", flush=True)
        rounds.append(runs)
    return {"attention": base.config._attn_implementation, "rounds": rounds}


def profile(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """training-profile: the top ops of one `base` training run by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    base, data, tokenizer, codec, args, precision = setup(params)
    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        train_once(base, "base", data, tokenizer, codec, args, precision)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return {"ops": top_ops(prof, args.top)}

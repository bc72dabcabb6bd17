"""Training variants: neogen's training step with and without each of its speed measures, in one process.

Every variant trains a fresh copy of the same LoRA model (seed 0) on the same rows with neogen's Trainer, in
interleaved rounds, and reports examples/s and the final training loss (equal losses mean equal arithmetic):

  base      the model as load_model gives it, the model's own attention (SDPA on Llama-style models)
  precast   + frozen base weights cast once to the autocast dtype (neogen.models.cast_frozen_linears)
  eager     + eager attention instead of SDPA (what neogen.models.attention_for_training picks on the CPU)
  both      both measures: neogen's training as `neogen train` runs it

--profile prints torch.profiler's top ops of one `base` run instead (what the measures were chosen against).

    python bench/training_variants.py --rows 160 --rounds 2
    python bench/training_variants.py --rows 160 --profile
    python bench/training_variants.py --model gpt-neo-125m-random --rows 16 --rounds 1    # smoke test

Run it on an otherwise idle machine: the variants differ by less than other processes disturb them.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from training import STUDENT, materialize_model, rows

VARIANTS = ("base", "precast", "eager", "both")


def train_once(base: Any, variant: str, data: dict[str, list[Any]], tokenizer: Any, codec: Any,
               args: argparse.Namespace, precision: str) -> tuple[float, float]:
    """(examples/s, final training loss) of one epoch of neogen's Trainer with the variant's measures."""
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from neogen.models import cast_frozen_linears, lora_targets
    from neogen.prompt import PromptEncoder
    from neogen.train import CompletionCollator, _trainer_class, to_dataset

    torch.manual_seed(0)
    model = copy.deepcopy(base)
    if variant in ("eager", "both") and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation("eager")
    head = model.get_output_embeddings()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=lora_targets(model), task_type="CAUSAL_LM"))
    if variant in ("precast", "both"):
        cast_frozen_linears(model, precision, keep=head)
    trainer = _trainer_class()(
        model=model, codec=codec,
        args=TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=8,
                               learning_rate=1e-3, bf16=precision == "bf16", use_cpu=True, save_strategy="no",
                               report_to=[], disable_tqdm=True, remove_unused_columns=False, label_names=["labels"],
                               train_sampling_strategy="group_by_length", logging_steps=10_000, seed=0),
        train_dataset=to_dataset(data["train"], PromptEncoder(tokenizer, args.max_length, codec.separator), codec),
        data_collator=CompletionCollator(tokenizer.pad_token_id))
    start = time.perf_counter()
    result = trainer.train()
    return len(data["train"]) / (time.perf_counter() - start), result.training_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m, gpt-neo-125m-random, or a directory")
    parser.add_argument("--data", default=str(STUDENT))
    parser.add_argument("--text-column", default="eng")
    parser.add_argument("--label-column", default="Subject")
    parser.add_argument("--rows", type=int, default=160, help="training rows (first of the 80%% train split)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="auto", help="auto, bf16 or fp32 (CPU)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile one base run instead of timing variants")
    args = parser.parse_args()
    args.test_rows = 1

    from neogen.labels import LabelCodec
    from neogen.models import load_model, load_tokenizer, resolve_precision

    data = rows(args)
    model_dir = materialize_model(args.model, Path(tempfile.mkdtemp()))
    tokenizer = load_tokenizer(model_dir)
    codec = LabelCodec.fit([ex.label for ex in data["train"]], tokenizer)
    cpu = torch.device("cpu")
    precision = resolve_precision(args.precision, cpu)
    base = load_model(model_dir, "auto", None, cpu)
    print(f"model {args.model}, {len(data['train'])} rows, batch 8, max_length {args.max_length}, {precision}, "
          f"attention {base.config._attn_implementation}, {torch.get_num_threads()} threads")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_once(base, "base", data, tokenizer, codec, args, precision)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        return
    for round_ in range(args.rounds):
        for variant in VARIANTS:
            rate, loss = train_once(base, variant, data, tokenizer, codec, args, precision)
            print(f"round {round_}  {variant:<8} {rate:6.2f} ex/s  final loss {loss:.6f}", flush=True)


if __name__ == "__main__":
    main()

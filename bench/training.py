"""Training speed: neogen's training against the usual causal-LM fine-tuning tutorial's way, in one run.

Both fine-tune the same base model with the same LoRA configuration, rows, epochs, batch size, learning rate and
precision, on the Hugging Face Trainer:

  neogen     neogen.train: length-grouped right-padded batches of prompts; the loss is the completion token's
             cross-entropy, computed at the one position after the separator (the LM head projects one row).
  tutorial   prompt + completion as one text, padded to a fixed length, DataCollatorForLanguageModeling(mlm=False):
             the loss is on every token, over the full vocabulary, at every position.

Each method runs in its own process, so its peak resident memory is its own. Held-out accuracy is measured the same
way for both: neogen's constrained one-token scoring of the test rows with the trained adapter.

    python bench/training.py --json bench/results/training-smollm2.json
    python bench/training.py --seed 1 --json bench/results/training-smollm2-seed1.json      # another seed
    python bench/training.py --model gpt-neo-125m-random --rows 200 --test-rows 100   # speed only (random weights)

Run it on an otherwise idle machine: other processes on the cores distort every figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RANDOM_NEO, SHARED_DATA, cpu_model, gpt2_tokenizer, random_gpt_neo, stock_model

STUDENT = SHARED_DATA / "student_questions" / "subjects-questions-subset.csv"


def rows(args: argparse.Namespace) -> dict[str, list[Any]]:
    """The first --rows of the tutorial's train split and the first --test-rows of its test split."""
    from neogen.prepare import clean, split
    from neogen.read import load_examples

    examples, _ = load_examples(args.data, args.text_column, args.label_column)
    parts = split(clean(examples)[0], test_ratio=0.2)
    return {"train": parts["train"][: args.rows], "test": parts["test"][: args.test_rows]}


RANDOM_NEO_DIR = Path(tempfile.gettempdir()) / "neogen-bench-random-neo"  # saved once, reused by later runs


def materialize_model(name: str, folder: Path = RANDOM_NEO_DIR) -> str:
    """A local model directory: the random GPT-Neo is saved once so both workers load identical weights."""
    if name != RANDOM_NEO:
        return name
    if not (folder / "tokenizer_config.json").exists():  # written last: a save cut short is redone
        random_gpt_neo().save_pretrained(folder)
        gpt2_tokenizer().save_pretrained(folder)
    return str(folder)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train with one method; returns its figures (run in a child process)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from neogen.classify import Classifier
    from neogen.labels import LabelCodec
    from neogen.models import (
        attention_for_training,
        cast_frozen_linears,
        load_model,
        load_tokenizer,
        lora_targets,
        resolve_dtype,
        resolve_precision,
    )
    from neogen.prompt import PromptEncoder, prompt_text
    from neogen.train import CompletionCollator, _trainer_class, to_dataset

    torch.manual_seed(args.seed)
    data = rows(args)
    tokenizer = load_tokenizer(args.model_dir)
    codec = LabelCodec.fit([ex.label for ex in data["train"]], tokenizer)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(args.precision, device)
    # neogen's model is prepared as neogen.train prepares it (tanh-GELU fused; on the CPU eager attention where it
    # is small; frozen weights cast once for autocast); the tutorial's is from_pretrained's.
    neogen = args.worker == "neogen"
    model = load_model(args.model_dir, "auto", None, device) if neogen else \
        stock_model(args.model_dir, device, resolve_dtype("auto", device))
    if neogen:
        attention_for_training(model, args.batch_size, args.max_length, device)
    head = model.get_output_embeddings()
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05,
                                             target_modules=lora_targets(model), task_type="CAUSAL_LM"))
    if neogen:
        cast_frozen_linears(model, precision, keep=head)
    common = dict(output_dir=tempfile.mkdtemp(), num_train_epochs=args.epochs,
                  per_device_train_batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=0.06,
                  bf16=precision == "bf16", fp16=precision == "fp16",
                  use_cpu=device.type == "cpu", save_strategy="no", report_to=[], logging_steps=10_000, seed=args.seed,
                  disable_tqdm=True, dataloader_num_workers=0)
    encoder = PromptEncoder(tokenizer, args.max_length, codec.separator)
    if neogen:
        trainer = _trainer_class()(
            model=model, args=TrainingArguments(**common, remove_unused_columns=False, label_names=["labels"],
                                                train_sampling_strategy="group_by_length"),
            train_dataset=to_dataset(data["train"], encoder, codec),
            data_collator=CompletionCollator(tokenizer.pad_token_id),
            codec=codec)
    else:
        from datasets import Dataset

        texts = [prompt_text(ex.text, codec.separator) + codec.completions[codec.index(ex.label)]
                 for ex in data["train"]]
        # The tutorial's way: truncate the joined text (this can cut the completion off long prompts) and pad to a
        # fixed length; the collator copies input_ids to labels and masks only the padding.
        enc = tokenizer(texts, truncation=True, max_length=args.max_length, padding="max_length")
        trainer = Trainer(model=model, args=TrainingArguments(**common),
                          train_dataset=Dataset.from_dict({"input_ids": enc["input_ids"],
                                                           "attention_mask": enc["attention_mask"]}),
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    classifier = Classifier(model, tokenizer, codec, max_length=args.max_length, precision=precision)
    probs = classifier.predict_proba([ex.text for ex in data["test"]]).probs
    truth = [codec.index(ex.label) for ex in data["test"]]
    accuracy = float((probs.argmax(axis=1) == truth).mean())
    return {"method": args.worker, "train_rows": len(data["train"]), "epochs": args.epochs, "train_seconds": seconds,
            "train_examples_per_second": len(data["train"]) * args.epochs / seconds, "test_rows": len(truth),
            "test_accuracy": accuracy, "precision": precision,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help=f"smollm2-135m, {RANDOM_NEO}, a directory or Hub id")
    parser.add_argument("--data", default=str(STUDENT))
    parser.add_argument("--text-column", default="eng")
    parser.add_argument("--label-column", default="Subject")
    parser.add_argument("--rows", type=int, default=400, help="training rows (first of the 80%% train split)")
    parser.add_argument("--test-rows", type=int, default=200, help="held-out rows (first of the last 20%%)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16 (the same for both methods)")
    parser.add_argument("--seed", type=int, default=0, help="LoRA init, dropout and batch order (both methods)")
    parser.add_argument("--methods", default="neogen,tutorial")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    model_dir = materialize_model(args.model)
    results = []
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", method, "--model-dir", model_dir]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{method} failed:\n{out.stderr[-4000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = {r["method"]: r for r in results}
    print(f"machine: {cpu_model()}; model {args.model}; {results[0]['train_rows']} train rows x {args.epochs} epochs, "
          f"batch {args.batch_size}, max_length {args.max_length}, precision {results[0]['precision']}")
    print(f"{'method':<10} {'train ex/s':>11} {'seconds':>9} {'peak RSS MB':>12} {'test acc':>9}")
    for r in results:
        print(f"{r['method']:<10} {r['train_examples_per_second']:>11.2f} {r['train_seconds']:>9.1f} "
              f"{r['peak_rss_mb']:>12.0f} {r['test_accuracy']:>9.3f}")
    if {"neogen", "tutorial"} <= set(base):
        speedup = base["neogen"]["train_examples_per_second"] / base["tutorial"]["train_examples_per_second"]
        print(f"neogen / tutorial: {speedup:.2f}x examples/s, "
              f"{base['neogen']['peak_rss_mb'] / base['tutorial']['peak_rss_mb']:.2f}x peak memory")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": cpu_model(), "args": vars(args), "results": results},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Training speed: neogen's training against the usual causal-LM fine-tuning tutorial's way, in one run.

Both fine-tune the same base model with the same LoRA configuration, rows, epochs, batch size, learning rate and
precision, on the Hugging Face Trainer:

  neogen     neogen.train: length-grouped right-padded batches of prompts; the loss is the completion token's
             cross-entropy, computed at the one position after the separator (the LM head projects one row).
  tutorial   prompt + completion as one text, padded to a fixed length, DataCollatorForLanguageModeling(mlm=False):
             the loss is on every token, over the full vocabulary, at every position.

Each method runs in its own process, so its peak resident memory is its own. Held-out accuracy is measured the same
way for both: neogen's constrained one-token scoring of the test rows with the trained adapter.

    python -m bench run training --seeds 0,1,2                         # SmolLM2-135M
    python -m bench run training model=gpt-neo-125m-random              # speed only (random weights)
    python -m bench run training --out /tmp/smoke model=gpt-neo-125m-random rows=8 test_rows=4 batch_size=4

Run it on an otherwise idle machine: other processes on the cores distort every figure.
"""

from __future__ import annotations

import resource
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from .common import call_in_process, data_path, materialize_model, stock_model


def resolve(params: dict[str, Any]) -> dict[str, Any]:
    """`precision: auto` as the precision this machine trains in, so that the result names what ran."""
    if params.get("precision", "auto") != "auto":
        return params
    from neogen.models import default_device, resolve_precision

    return params | {"precision": resolve_precision("auto", default_device())}


def rows(args: Any) -> dict[str, list[Any]]:
    """The first `rows` of the tutorial's train split and the first `test_rows` of its test split."""
    from neogen.prepare import clean, split
    from neogen.read import load_examples

    examples, _ = load_examples(data_path(args.data), args.text_column, args.label_column)
    parts = split(clean(examples)[0], test_ratio=0.2)
    return {"train": parts["train"][: args.rows], "test": parts["test"][: args.test_rows]}


def lora_model(args: SimpleNamespace, device: Any, precision: str) -> Any:
    """The method's LoRA model: neogen's prepared as neogen.train prepares it (tanh-GELU fused; on the CPU eager
    attention where it is small; frozen weights cast once for autocast), the tutorial's as from_pretrained gives it."""
    from peft import LoraConfig, get_peft_model

    from neogen.models import attention_for_training, cast_frozen_linears, load_model, lora_targets, resolve_dtype

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
    return model


def trainer_for(args: SimpleNamespace, model: Any, tokenizer: Any, codec: Any, train: list[Any], device: Any,
                precision: str) -> Any:
    """The method's Trainer: neogen's (completion-token loss, length-grouped batches) or the tutorial's."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from neogen.prompt import PromptEncoder, prompt_text
    from neogen.tasks import task_for
    from neogen.train import CompletionCollator, to_dataset, trainer_class

    common = dict(output_dir=tempfile.mkdtemp(), num_train_epochs=args.epochs,
                  per_device_train_batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=0.06,
                  bf16=precision == "bf16", fp16=precision == "fp16",
                  use_cpu=device.type == "cpu", save_strategy="no", report_to=[], logging_steps=10_000, seed=args.seed,
                  disable_tqdm=True, dataloader_num_workers=0)
    if args.worker == "neogen":
        encoder, task = PromptEncoder(tokenizer, args.max_length, codec.separator), task_for(codec)
        return trainer_class()(
            model=model, args=TrainingArguments(**common, remove_unused_columns=False, label_names=["labels"],
                                                train_sampling_strategy="group_by_length"),
            train_dataset=to_dataset(encoder([ex.text for ex in train]), task.targets(train, training=True)),
            data_collator=CompletionCollator(tokenizer.pad_token_id), task=task)
    from datasets import Dataset

    texts = [prompt_text(ex.text, codec.separator) + codec.completions[codec.index(ex.label)] for ex in train]
    # The tutorial's way: truncate the joined text (this can cut the completion off long prompts) and pad to a
    # fixed length; the collator copies input_ids to labels and masks only the padding.
    enc = tokenizer(texts, truncation=True, max_length=args.max_length, padding="max_length")
    return Trainer(model=model, args=TrainingArguments(**common),
                   train_dataset=Dataset.from_dict({"input_ids": enc["input_ids"],
                                                    "attention_mask": enc["attention_mask"]}),
                   data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))


def worker(request: dict[str, Any]) -> dict[str, Any]:
    """Train with one method; returns its figures (run in a child process)."""
    import torch

    from neogen.classify import Classifier
    from neogen.labels import LabelCodec
    from neogen.models import load_tokenizer, resolve_precision

    args = SimpleNamespace(**request["params"], seed=request["seed"], worker=request["method"],
                           model_dir=request["model_dir"])
    torch.manual_seed(args.seed)
    data = rows(args)
    tokenizer = load_tokenizer(args.model_dir)
    codec = LabelCodec.fit([ex.label for ex in data["train"]], tokenizer)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(args.precision, device)
    model = lora_model(args, device, precision)
    trainer = trainer_for(args, model, tokenizer, codec, data["train"], device, precision)
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


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """training: each method trained in its own process on the same rows; their figures."""
    model_dir = materialize_model(params["model"])
    results = [call_in_process("training:worker", {"params": params, "seed": seed, "method": method,
                                                   "model_dir": model_dir})
               for method in params["methods"].split(",")]
    base = {r["method"]: r for r in results}
    print(f"model {params['model']}; {results[0]['train_rows']} train rows x {params['epochs']} epochs, "
          f"batch {params['batch_size']}, max_length {params['max_length']}, precision {results[0]['precision']}")
    print(f"{'method':<10} {'train ex/s':>11} {'seconds':>9} {'peak RSS MB':>12} {'test acc':>9}")
    for r in results:
        print(f"{r['method']:<10} {r['train_examples_per_second']:>11.2f} {r['train_seconds']:>9.1f} "
              f"{r['peak_rss_mb']:>12.0f} {r['test_accuracy']:>9.3f}")
    if {"neogen", "tutorial"} <= set(base):
        speedup = base["neogen"]["train_examples_per_second"] / base["tutorial"]["train_examples_per_second"]
        print(f"neogen / tutorial: {speedup:.2f}x examples/s, "
              f"{base['neogen']['peak_rss_mb'] / base['tutorial']['peak_rss_mb']:.2f}x peak memory")
    return {"results": results}

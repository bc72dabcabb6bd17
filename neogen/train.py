"""LoRA fine-tuning of a causal LM on single-token completions, on the Hugging Face Trainer.

The loss is the causal-LM cross-entropy of the completion token alone (every prompt token is masked out), over the
full vocabulary, computed only at the position after the separator. Trainer supplies the rest: mixed precision,
gradient accumulation, schedules, checkpoints (best and last) and, under torchrun/accelerate, DDP.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from neogen.errors import DataError, NeogenError
from neogen.forward import next_token_logits, pad_right
from neogen.labels import LabelCodec
from neogen.models import default_device, load_model, load_tokenizer, lora_targets, resolve_precision
from neogen.prepare import clean, data_report, format_report, split
from neogen.prompt import PromptEncoder
from neogen.read import Example, load_examples
from neogen.recipe import DataConfig, Recipe

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
LAST_ADAPTER_DIR = "last"
CODEC_FILE = "labels.json"
RECIPE_FILE = "recipe.yaml"




def load_splits(data: DataConfig) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """Read the recipe's files, clean them, and split off valid/test rows where no file is given for them."""
    examples, choice = load_examples(data.train, data.text_column, data.label_column)
    examples, cleaning = clean(examples)
    splits = split(examples, data.valid_ratio, data.test_ratio, data.shuffle, data.stratify, data.seed)
    for name in ("valid", "test"):
        path = getattr(data, name)
        if path:
            extra, _ = load_examples(path, data.text_column, data.label_column)
            splits[name], _ = clean(extra)
    return splits, {"choice": choice, "cleaning": cleaning}


def check_labels(splits: dict[str, list[Example]], codec: LabelCodec) -> None:
    """A held-out label never seen in training cannot be predicted: name its file and line."""
    known = set(codec.labels)
    for name in ("valid", "test"):
        for ex in splits[name]:
            if ex.label not in known:
                raise DataError(ex.source, ex.line, f"label {ex.label!r} in the {name} split is not in the training "
                                f"labels {codec.labels}", "add training rows with this label or fix the label")


def to_dataset(examples: list[Example], encoder: PromptEncoder, codec: LabelCodec) -> Any:
    """A datasets.Dataset of prompt ids, class indexes and lengths (for length-grouped batches)."""
    from datasets import Dataset

    ids = encoder([ex.text for ex in examples])
    return Dataset.from_dict({"input_ids": ids, "labels": [codec.index(ex.label) for ex in examples],
                              "length": [len(x) for x in ids]})


class CompletionCollator:
    """Right-pads prompt ids; `labels` stay class indexes (the trainer maps them to completion tokens)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_right([f["input_ids"] for f in features], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([f["labels"] for f in features], dtype=torch.long)}


def _trainer_class() -> type:
    from transformers import Trainer

    class CompletionTrainer(Trainer):
        """Trainer whose loss is the next-token cross-entropy of the completion token only."""

        def __init__(self, *args: Any, label_token_ids: list[int], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.label_token_ids = torch.tensor(label_token_ids, dtype=torch.long)
            # The loss below is a per-batch mean: let Trainer divide it by the accumulation steps.
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            classes = inputs["labels"]  # (B,) class indexes
            logits = next_token_logits(model, inputs["input_ids"], inputs["attention_mask"])  # (B, V)
            token_ids = self.label_token_ids.to(logits.device)
            loss = F.cross_entropy(logits, token_ids[classes])
            if return_outputs:
                return loss, {"label_logits": logits[:, token_ids]}  # (B, K) for validation metrics
            return loss

    return CompletionTrainer


def _validation_metrics(eval_pred: Any) -> dict[str, float]:
    logits, classes = eval_pred.predictions, eval_pred.label_ids  # (N, K), (N,)
    logits = torch.as_tensor(logits, dtype=torch.float32)
    log_probs = torch.log_softmax(logits, dim=-1)
    classes_t = torch.as_tensor(classes, dtype=torch.long)
    return {"accuracy": float((logits.argmax(-1) == classes_t).float().mean()),
            "log_loss": float(-log_probs[torch.arange(len(classes_t)), classes_t].mean())}


def _metrics_logger(path: Path) -> Any:
    from transformers import TrainerCallback

    class MetricsLogger(TrainerCallback):
        """Appends every Trainer log record (loss, lr, validation metrics) to metrics.jsonl in the run dir."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs and state.is_world_process_zero:
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    return MetricsLogger()


def train(recipe: Recipe) -> Path:
    """Run a recipe end to end; returns the run directory holding adapter, codec, recipe and metrics."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import TrainingArguments, set_seed

    recipe.validate()
    run_dir = Path(recipe.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    set_seed(recipe.train.seed)
    device = default_device()
    precision = resolve_precision(recipe.train.precision, device)

    tokenizer = load_tokenizer(recipe.model.name)
    splits, info = load_splits(recipe.data)
    if not splits["train"]:
        raise NeogenError(f"{recipe.data.train}: no training rows left after cleaning and splitting")
    codec = LabelCodec.fit([ex.label for ex in splits["train"]], tokenizer)
    check_labels(splits, codec)
    encoder = PromptEncoder(tokenizer, recipe.train.max_length, codec.separator)
    report = data_report(splits, codec, encoder, info["choice"], info["cleaning"])
    logger.info("data:\n%s", format_report(report))
    codec.save(run_dir / CODEC_FILE)
    recipe.save(run_dir / RECIPE_FILE)
    (run_dir / "data_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    model = load_model(recipe.model.name, recipe.model.dtype, recipe.model.quantization, device)
    if recipe.model.quantization:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = recipe.lora
    model = get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
        target_modules=lora.target_modules or lora_targets(model)))
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)

    has_valid = bool(splits["valid"])
    t = recipe.train
    steps_per_epoch = math.ceil(len(splits["train"]) / (t.batch_size * t.grad_accum))
    strategy = "steps" if t.eval_steps else "epoch"
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        optim=t.optimizer,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        logging_steps=t.logging_steps,
        eval_strategy=strategy if has_valid else "no",
        eval_steps=t.eval_steps,
        save_strategy=strategy,
        save_steps=t.eval_steps or steps_per_epoch,
        save_total_limit=2,  # with load_best_model_at_end: the best and the last checkpoint
        load_best_model_at_end=has_valid,
        metric_for_best_model="log_loss" if has_valid else None,
        greater_is_better=False,
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=[],
        seed=t.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,  # the CLI quiets transformers logging, which would otherwise hide the bar
    )
    trainer = _trainer_class()(
        model=model, args=args,
        train_dataset=to_dataset(splits["train"], encoder, codec),
        eval_dataset=to_dataset(splits["valid"], encoder, codec) if has_valid else None,
        data_collator=CompletionCollator(tokenizer.pad_token_id),
        compute_metrics=_validation_metrics if has_valid else None,
        callbacks=[_metrics_logger(run_dir / "metrics.jsonl")],
        label_token_ids=codec.token_ids,
    )
    start = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - start
    if not trainer.is_world_process_zero():
        return run_dir  # under torchrun, rank 0 alone writes the adapter and evaluates
    model.save_pretrained(run_dir / ADAPTER_DIR)
    _keep_last_checkpoint(run_dir, trainer)

    from neogen.classify import Classifier
    from neogen.evaluate import format_metrics, write_evaluation

    classifier = Classifier(model, tokenizer, codec, max_length=t.max_length, precision=precision,
                            batch_size=t.eval_batch_size)
    summary: dict[str, Any] = {
        "train_seconds": round(train_seconds, 1),
        "train_examples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "precision": precision, "device": str(device), "best_checkpoint": trainer.state.best_model_checkpoint,
    }
    for name in ("train", "valid", "test"):
        part = splits[name]
        if not part:
            continue
        probs = classifier.predict_proba([ex.text for ex in part]).probs
        y = [codec.index(ex.label) for ex in part]
        metrics = write_evaluation(run_dir / "eval" / name, y, probs, codec.labels, extra={"split": name})
        summary[name] = {k: metrics[k] for k in ("n", "accuracy", "macro_f1", "roc_auc", "log_loss")}
        logger.info("%s split:\n%s", name, format_metrics(metrics))
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir


def _keep_last_checkpoint(run_dir: Path, trainer: Any) -> None:
    """Copy the last checkpoint's adapter to run_dir/last (run_dir/adapter holds the best one)."""
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not checkpoints:
        return
    last = run_dir / LAST_ADAPTER_DIR
    shutil.rmtree(last, ignore_errors=True)
    last.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        if (checkpoints[-1] / name).exists():
            shutil.copy2(checkpoints[-1] / name, last / name)


"""LoRA fine-tuning of a causal LM on single-token completions, on the Hugging Face Trainer.

The loss is the causal-LM cross-entropy of the completion token alone (every prompt token is masked out), over the
full vocabulary, computed only at the position after the separator. Trainer supplies the rest: mixed precision,
gradient accumulation, schedules, checkpoints (best and last) and, under torchrun/accelerate, DDP.
A run resumes from its newest checkpoint (train(recipe, resume=True)) exactly where it stopped, as the tests check.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neogen import distributed
from neogen.calibration import fit_temperature
from neogen.codec import check_labels, completion_token_ids, fit_codec
from neogen.errors import ConfigError, NeogenError
from neogen.forward import next_token_logits, pad_right
from neogen.imbalance import class_weights, weighted_mean
from neogen.labels import LabelCodec
from neogen.models import (
    attention_for_training,
    cast_frozen_linears,
    load_model,
    load_tokenizer,
    lora_targets,
    pinned_name,
    resolve_precision,
)
from neogen.multilabel import MultiLabelCodec, multilabel_loss
from neogen.prepare import clean, data_report, format_report, split
from neogen.prompt import PromptEncoder
from neogen.read import Example, load_examples
from neogen.recipe import DataConfig, Recipe
from neogen.resume import check_resumed_data, resumable, resume_point, truncate_metrics
from neogen.run import Run
from neogen.rundir import (
    ADAPTER_DIR,
    CALIBRATION_FILE,
    CHECKPOINTS_DIR,
    CODEC_FILE,
    DATA_REPORT_FILE,
    LAST_ADAPTER_DIR,
    METRICS_FILE,
    RECIPE_FILE,
    RESULTS_FILE,
    THRESHOLDS_FILE,
    replace_file,
)

logger = logging.getLogger(__name__)

Codec = LabelCodec | MultiLabelCodec


def load_splits(data: DataConfig) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """Read the recipe's files, clean them, and split off valid/test rows where no file is given for them."""
    examples, choice = load_examples(data.train, data.text_column, data.label_column, multi_label=data.multi_label,
                                     label_separator=data.label_separator, allow_empty=data.allow_empty)
    examples, cleaning = clean(examples)
    splits = split(examples, data.valid_ratio, data.test_ratio, data.shuffle, data.stratify, data.seed)
    for name in ("valid", "test"):
        path = getattr(data, name)
        if path:
            # Held-out files are read the way the training file was (a test file may have no joined labels).
            extra, _ = load_examples(path, data.text_column, data.label_column, multi_label=choice.multi_label,
                                     label_separator=choice.label_separator, allow_empty=data.allow_empty)
            splits[name], _ = clean(extra)
    return splits, {"choice": choice, "cleaning": cleaning}


def targets(examples: list[Example], codec: Codec, training: bool) -> list[Any]:
    """What the loss compares with: class indexes (single-label; powerset training), else (L,) 0/1 rows."""
    if not codec.multi_label:
        return [codec.index(ex.label) for ex in examples]
    if codec.encoding == "powerset" and training:
        return [codec.class_index(ex.labels) for ex in examples]  # training sets are the codec's classes
    return [codec.multi_hot(ex.labels) for ex in examples]


def to_dataset(examples: list[Example], encoder: PromptEncoder, codec: Codec, training: bool = True) -> Any:
    """A datasets.Dataset of prompt ids, targets and lengths (for length-grouped batches)."""
    from datasets import Dataset

    ids = encoder([ex.text for ex in examples])
    return Dataset.from_dict({"input_ids": ids, "labels": targets(examples, codec, training),
                              "length": [len(x) for x in ids]})


class CompletionCollator:
    """Right-pads prompt ids; `labels` stay class indexes (long) or 0/1 rows (float) for the loss to map."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_right([f["input_ids"] for f in features], self.pad_id)
        rows = [f["labels"] for f in features]
        dtype = torch.float32 if isinstance(rows[0], list) else torch.long
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(rows, dtype=dtype)}


def _trainer_class() -> type:
    from transformers import Trainer

    class CompletionTrainer(Trainer):
        """Trainer whose loss is the next-token cross-entropy of the completion token only."""

        def __init__(self, *args: Any, codec: Codec, loss: str = "vocab", class_weights: torch.Tensor | None = None,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.codec = codec
            self.loss_over = loss
            self.class_weights = class_weights  # (K,) per class, or (L,) positive weights per label; None: unweighted
            self.label_token_ids = torch.tensor(codec.token_ids, dtype=torch.long)
            # The loss below is a per-batch mean: let Trainer divide it by the accumulation steps.
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if self.codec.multi_label:
                loss, probs = multilabel_loss(model, self.codec, inputs["input_ids"], inputs["attention_mask"],
                                              inputs["labels"], pos_weight=self.class_weights)
                return (loss, {"label_probs": probs}) if return_outputs else loss  # probs (B, L)
            classes = inputs["labels"]  # (B,) class indexes
            logits = next_token_logits(model, inputs["input_ids"], inputs["attention_mask"])  # (B, V)
            token_ids = self.label_token_ids.to(logits.device)
            label_logits = logits[:, token_ids]  # (B, K): what scoring reads, and the validation metrics
            if self.loss_over == "labels":
                # Only the K label logits compete, as when scoring: no gradient spent on the other tokens.
                losses = F.cross_entropy(label_logits, classes, reduction="none")  # (B,)
            else:
                losses = F.cross_entropy(logits, token_ids[classes], reduction="none")  # (B, V) vs label token ids
            loss = weighted_mean(losses, classes, self.class_weights)
            return (loss, {"label_logits": label_logits}) if return_outputs else loss

    return CompletionTrainer


def _multilabel_validation_metrics(eval_pred: Any) -> dict[str, float]:
    probs = torch.as_tensor(eval_pred.predictions, dtype=torch.float32)  # (N, L)
    y = torch.as_tensor(eval_pred.label_ids, dtype=torch.float32)  # (N, L)
    predicted = probs >= 0.5
    tp = float((predicted & (y > 0)).sum())
    micro_f1 = 2 * tp / max(float(predicted.sum() + y.sum()), 1.0)
    return {"log_loss": float(F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), y)), "micro_f1@0.5": micro_f1}


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


def train(recipe: Recipe, resume: bool = False, callbacks: list[Any] | None = None, progress: bool = True) -> Path:
    """Run a recipe end to end; returns the run directory holding adapter, codec, recipe and metrics.

    resume=True continues the run in recipe.output_dir from its newest checkpoint (optimizer, schedule, RNG and
    data position with it), provided the recipe and data match the run's (RESUMABLE_CHANGES may differ).
    callbacks are extra Trainer callbacks (early stopping, custom logging), called after the metrics logger.
    progress=False hides the training progress bar.

    The run folder is claimed and locked before anything loads: a folder neogen did not create is refused, and so
    is a second training into the same folder while this one runs (neogen.run).
    """
    recipe.validate()
    # The saved recipe is how every later load finds the base model: a relative local path would only work from
    # the folder training ran in.
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, name=pinned_name(recipe.model.name)))
    world = distributed.world()
    distributed.check_single_process_devices(world)
    run = Run(recipe.output_dir)
    if not world.is_main:  # under torchrun rank 0 alone claims, locks and writes the run dir
        return _train(recipe, run, resume, callbacks, progress)
    with run.claimed():
        return _train(recipe, run, resume, callbacks, progress)


def _train(recipe: Recipe, run: Run, resume: bool, callbacks: list[Any] | None, progress: bool) -> Path:
    """train()'s body, in a folder this process owns (rank 0) or shares with rank 0 (torchrun)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import TrainingArguments, set_seed

    run_dir = run.path
    world = distributed.world()
    main = world.is_main
    resume_from = resume_point(run_dir, recipe) if resume else None
    if resume_from is None:
        run.refuse_unfinished()
    set_seed(recipe.train.seed)
    device = distributed.use_device(world)  # cuda:LOCAL_RANK under torchrun: each rank loads onto its own GPU
    precision = resolve_precision(recipe.train.precision, device)

    tokenizer = load_tokenizer(recipe.model.name)
    splits, info = load_splits(recipe.data)
    if not splits["train"]:
        raise NeogenError(f"{recipe.data.train}: no training rows left after cleaning and splitting")
    codec = fit_codec(splits["train"], tokenizer, recipe)
    if codec.multi_label and recipe.train.loss != "vocab":
        raise ConfigError([f"train.loss: '{recipe.train.loss}' is for single-label data; {recipe.data.train} holds "
                           f"label sets, whose loss follows multilabel.encoding (leave train.loss at vocab)"])
    if codec.multi_label and recipe.train.calibrate:
        raise ConfigError([f"train.calibrate: {recipe.data.train} holds label sets, whose decisions come from the "
                           "thresholds tuned on the validation split; leave train.calibrate at false"])
    check_labels(splits, codec)
    encoder = PromptEncoder(tokenizer, recipe.train.max_length, codec.separator)
    report = data_report(splits, codec, encoder, info["choice"], info["cleaning"])
    logger.info("data:\n%s", format_report(report))
    if resume_from is not None:
        check_resumed_data(run_dir, codec, splits)
    weights = class_weights(splits["train"], codec, recipe.train.class_weight)

    model = load_model(recipe.model.name, recipe.model.dtype, recipe.model.quantization, device)
    if recipe.model.quantization:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    replaced_attention = attention_for_training(model, recipe.train.batch_size, recipe.train.max_length, device)
    head = model.get_output_embeddings()
    lora = recipe.lora
    model = get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
        target_modules=lora.target_modules or lora_targets(model),
        trainable_token_indices=completion_token_ids(codec) if lora.train_label_tokens else None))
    if not recipe.model.quantization:
        cast_frozen_linears(model, precision, keep=head)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)

    # Everything that can refuse this run has run by now: only from here on is an earlier run's folder replaced, so
    # a refused run leaves it whole, never its old adapter beside this run's labels.
    if main:
        if resume_from is None:
            run.clear_earlier()
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / METRICS_FILE).unlink(missing_ok=True)
        else:
            truncate_metrics(run_dir / METRICS_FILE, int(resume_from.name.removeprefix("checkpoint-")))
            # A resumed run (more epochs after a finished one) that is stopped midway must not look finished: a
            # later fresh run would take its checkpoints for a finished run's and delete them.
            (run_dir / RESULTS_FILE).unlink(missing_ok=True)
        # Replaced whole: under torchrun the other ranks may be reading them to check a resume.
        replace_file(run_dir / CODEC_FILE, codec.save)
        replace_file(run_dir / RECIPE_FILE, recipe.save)
        # With the number of processes, so a resume can tell a checkpoint missing a rank's RNG state from a smaller run.
        replace_file(run_dir / DATA_REPORT_FILE, lambda path: path.write_text(
            json.dumps({**report, "processes": world.size}, indent=2, ensure_ascii=False) + "\n"))

    has_valid = bool(splits["valid"])
    t = recipe.train
    strategy = "steps" if t.eval_steps else "epoch"
    save_strategy = "steps" if t.eval_steps or t.save_steps else "epoch"
    args = TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS_DIR),
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
        save_strategy=save_strategy,
        save_steps=t.save_steps or t.eval_steps or 500,  # read only with save_strategy "steps" (500: its default)
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
        # Under torchrun: every LoRA weight takes part in every forward pass, so DDP need not search the autograd
        # graph for unused ones at every step (Trainer's default for a peft model; torch warns that it is wasted).
        ddp_find_unused_parameters=False,
        disable_tqdm=not progress,  # explicit: the CLI quiets transformers logging, which would hide the bar too
    )
    trainer = resumable(_trainer_class())(
        model=model, args=args,
        train_dataset=to_dataset(splits["train"], encoder, codec),
        eval_dataset=to_dataset(splits["valid"], encoder, codec, training=False) if has_valid else None,
        data_collator=CompletionCollator(tokenizer.pad_token_id),
        compute_metrics=(_multilabel_validation_metrics if codec.multi_label else _validation_metrics)
        if has_valid else None,
        callbacks=[_metrics_logger(run_dir / METRICS_FILE), *(callbacks or [])],
        codec=codec,
        loss=recipe.train.loss,
        class_weights=weights,
    )
    _log_through_logging(trainer)
    start = time.perf_counter()
    if resume_from is not None and main:
        state = json.loads((resume_from / "trainer_state.json").read_text(encoding="utf-8"))
        logger.info("resuming from %s: step %d, epoch %.2f (optimizer, schedule, RNG and data position go on "
                    "from there)", resume_from, state["global_step"], state.get("epoch") or 0.0)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    train_seconds = time.perf_counter() - start
    if not trainer.is_world_process_zero():
        return run_dir  # under torchrun, rank 0 alone writes the adapter and evaluates
    model.save_pretrained(run_dir / ADAPTER_DIR)
    _keep_last_checkpoint(run_dir, trainer)
    if replaced_attention:  # evaluated as Classifier.load will score it, so results.json matches `neogen eval`
        model.set_attn_implementation(replaced_attention)

    from neogen.classify import Classifier
    from neogen.evaluate import classification_metrics, format_metrics, write_evaluation

    classifier = Classifier(model, tokenizer, codec, max_length=t.max_length, precision=precision,
                            batch_size=t.eval_batch_size)
    if codec.multi_label:
        return _finish_multilabel(run_dir, classifier, splits, recipe, train_seconds, result, trainer, device)
    summary: dict[str, Any] = {
        "train_seconds": round(train_seconds, 1),
        "train_examples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "precision": precision, "device": str(device), "best_checkpoint": trainer.state.best_model_checkpoint,
    }
    if trainer.class_weights is not None:
        summary["class_weights"] = dict(zip(codec.labels, trainer.class_weights.tolist(), strict=True))
    (run_dir / CALIBRATION_FILE).unlink(missing_ok=True)  # a temperature from an earlier run in this dir
    if t.calibrate and not splits["valid"]:
        logger.warning("train.calibrate: the validation split is empty, so no temperature was fitted")
    elif t.calibrate:
        valid = splits["valid"]
        fitted = fit_temperature(np.array([codec.index(ex.label) for ex in valid]),
                                 classifier.predict_proba([ex.text for ex in valid]).probs, split="valid")
        fitted.save(run_dir / CALIBRATION_FILE)
        classifier.calibration = fitted  # every split below is evaluated with calibrated scores
        summary["temperature"] = round(fitted.temperature, 4)
    for name in t.evaluate:
        part = splits[name]
        if not part:
            continue
        probs = classifier.predict_proba([ex.text for ex in part]).probs
        y = [codec.index(ex.label) for ex in part]
        metrics = write_evaluation(run_dir / "eval" / name, y, probs, codec.labels, extra={"split": name})
        summary[name] = {k: metrics[k] for k in ("n", "accuracy", "macro_f1", "roc_auc", "log_loss", "ece")}
        if classifier.calibration is not None:  # what the temperature changed, on every split
            raw = classification_metrics(y, classifier.calibration.apply(probs, inverse=True), codec.labels)
            summary[name] |= {"log_loss_uncalibrated": raw["log_loss"], "ece_uncalibrated": raw["ece"]}
        logger.info("%s split:\n%s", name, format_metrics(metrics))
    (run_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir


def _log_through_logging(trainer: Any) -> None:
    """Trainer's progress bar prints each log dict to stdout, where `neogen train > results.json` would take it
    for output; the bar stays, and the logs go to the logger (and metrics.jsonl) instead."""
    from transformers.trainer_callback import ProgressCallback

    class LoggedProgress(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if state.is_world_process_zero and logs:
                logger.info("step %d: %s", state.global_step, ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
                    if k != "total_flos"))

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LoggedProgress)


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



def _finish_multilabel(run_dir: Path, classifier: Any, splits: dict[str, list[Example]], recipe: Recipe,
                       train_seconds: float, result: Any, trainer: Any, device: torch.device) -> Path:
    """Tune the decision thresholds on the validation split, save them, and evaluate every split."""
    from neogen.evaluate_multilabel import format_multilabel_metrics, write_multilabel_evaluation
    from neogen.thresholds import Thresholds, at_least_one_rule, tune_thresholds

    codec, ml = classifier.codec, recipe.multilabel
    # The validation split is scored whatever train.evaluate says: the thresholds are tuned on it.
    wanted = set(recipe.train.evaluate) | {"valid"}
    scored = {name: classifier.predict_proba([ex.text for ex in part], progress=True).probs
              for name, part in splits.items() if part and name in wanted}
    truth = {name: np.array([codec.multi_hot(ex.labels) for ex in splits[name]]) for name in scored}
    if ml.threshold in ("per_label", "shared") and "valid" in scored:
        thresholds = tune_thresholds(truth["valid"], scored["valid"], codec.labels, mode=ml.threshold,
                                     at_least_one=at_least_one_rule(ml, recipe.data.allow_empty),
                                     min_positives=ml.min_positives, split="valid")
    else:
        thresholds = Thresholds.untuned(codec.labels, ml, recipe.data.allow_empty)
        if ml.threshold in ("per_label", "shared"):
            logger.warning("no validation split to tune thresholds on: using %.2f for every label", thresholds.shared)
    thresholds.save(run_dir / THRESHOLDS_FILE)
    classifier.thresholds = thresholds
    summary: dict[str, Any] = {
        "train_seconds": round(train_seconds, 1),
        "train_examples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "precision": classifier.precision, "device": str(device),
        "best_checkpoint": trainer.state.best_model_checkpoint, "encoding": codec.encoding,
        "threshold": ml.threshold,
    }
    if trainer.class_weights is not None:  # each label's positive weight
        summary["class_weights"] = dict(zip(codec.labels, trainer.class_weights.tolist(), strict=True))
    for name, probs in scored.items():
        if name not in recipe.train.evaluate:
            continue
        extra: dict[str, Any] = {"split": name, "encoding": codec.encoding}
        if codec.encoding == "powerset":
            unseen = sum(codec.class_index(ex.labels) is None for ex in splits[name])
            extra["unseen_label_sets"] = unseen
        metrics = write_multilabel_evaluation(run_dir / "eval" / name, truth[name], probs, thresholds.decide(probs),
                                              codec.labels, extra=extra)
        summary[name] = {k: metrics[k] for k in ("n", "micro_f1", "macro_f1", "samples_f1", "roc_auc",
                                                 "hamming_loss", "subset_accuracy")}
        logger.info("%s split:\n%s", name, format_multilabel_metrics(metrics))
    (run_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir

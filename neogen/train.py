"""LoRA fine-tuning of a causal LM on single-token completions, on the Hugging Face Trainer, in named phases.

`train()` runs one `FineTune` top to bottom: setup_data (read, clean, split, fit the label task, tokenize every
split once), setup_model (base model, LoRA), prepare_run_dir (the run folder's files), fit (Trainer: mixed
precision, gradient accumulation, schedules, checkpoints, DDP under torchrun), finish (save the adapter, fit the
decision on the validation split, evaluate every split through the same `Classifier.evaluate` that `neogen eval`
calls, write results.json). What the loss and the metrics are comes from the label encoding's task (neogen.tasks).
A run resumes from its newest checkpoint (train(recipe, resume=True)) exactly where it stopped, as the tests check.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neogen import distributed
from neogen.codec import check_labels, fit_codec
from neogen.errors import ConfigError, NeogenError
from neogen.forward import pad_right
from neogen.models import (
    attention_for_training,
    cast_frozen_linears,
    load_model,
    load_tokenizer,
    lora_targets,
    pinned_name,
    resolve_precision,
)
from neogen.prepare import clean, data_report, format_report, split
from neogen.prompt import PromptEncoder
from neogen.read import Example, load_examples
from neogen.recipe import DataConfig, Recipe
from neogen.resume import check_resumed_data, resumable, resume_point, truncate_metrics
from neogen.run import Run
from neogen.tasks import Task, task_for

logger = logging.getLogger(__name__)


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


@dataclass
class TrainingData:
    """The splits of a run, its label task, and every split's prompt ids, tokenized once."""

    splits: dict[str, list[Example]]
    task: Task
    encoder: PromptEncoder
    prompts: dict[str, list[list[int]]]
    report: dict[str, Any]
    class_weights: torch.Tensor | None  # (K,) per class or (L,) positive weights per label; None: unweighted

    def dataset(self, name: str, training: bool) -> Any:
        return to_dataset(self.prompts[name], self.task.targets(self.splits[name], training))


def to_dataset(prompts: list[list[int]], targets: list[Any]) -> Any:
    """A datasets.Dataset of prompt ids, targets and lengths (for length-grouped batches)."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": prompts, "labels": targets, "length": [len(x) for x in prompts]})


class CompletionCollator:
    """Right-pads prompt ids; `labels` stay class indexes (long) or 0/1 rows (float) for the loss to map."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_right([f["input_ids"] for f in features], self.pad_id)
        rows = [f["labels"] for f in features]
        dtype = torch.float32 if isinstance(rows[0], list) else torch.long
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(rows, dtype=dtype)}


def trainer_class() -> type:
    """The Trainer subclass whose loss is the label task's (built on first use: transformers imports slowly)."""
    from transformers import Trainer

    class CompletionTrainer(Trainer):
        """Trainer whose loss is the label task's: the completion token's, at the position after the separator."""

        def __init__(self, *args: Any, task: Task, loss: str = "vocab", class_weights: torch.Tensor | None = None,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.task = task
            self.loss_over = loss
            self.class_weights = class_weights  # (K,) per class, or (L,) positive weights per label; None: unweighted
            # The loss below is a per-batch mean: let Trainer divide it by the accumulation steps.
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            loss, outputs = self.task.loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                           self.class_weights, self.loss_over)
            return (loss, {"outputs": outputs}) if return_outputs else loss

    return CompletionTrainer


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
    data position with it), provided the recipe and data match the run's (only keys marked resumable may differ).
    callbacks are extra Trainer callbacks (early stopping, custom logging), called after the metrics logger.
    progress=False hides the training progress bar. `fine_tune` returns the results as well.
    """
    return fine_tune(recipe, resume, callbacks, progress)[0]


def fine_tune(recipe: Recipe, resume: bool = False, callbacks: list[Any] | None = None,
              progress: bool = True) -> tuple[Path, dict[str, Any] | None]:
    """train(), returning the run directory and what results.json holds (None on torchrun's other ranks).

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
        return run.path, FineTune(recipe, run, resume, callbacks, progress).run()
    with run.claimed():
        return run.path, FineTune(recipe, run, resume, callbacks, progress).run()


class FineTune:
    """One training run, in the order it happens; each phase reads what the ones before it set up."""

    def __init__(self, recipe: Recipe, run: Run, resume: bool, callbacks: list[Any] | None, progress: bool) -> None:
        self.recipe, self.folder, self.callbacks, self.progress = recipe, run, callbacks or [], progress
        self.run_dir = run.path
        self.world = distributed.world()
        self.resume_from = resume_point(run.path, recipe) if resume else None
        if self.resume_from is None:
            run.refuse_unfinished()

    def run(self) -> dict[str, Any] | None:
        from transformers import set_seed

        set_seed(self.recipe.train.seed)
        self.device = distributed.use_device(self.world)  # cuda:LOCAL_RANK under torchrun: each rank its own GPU
        self.precision = resolve_precision(self.recipe.train.precision, self.device)
        self.tokenizer = load_tokenizer(self.recipe.model.name)
        self.data = self.setup_data()
        self.model = self.setup_model()
        if self.world.is_main:
            self.prepare_run_dir()
        trainer, seconds, result = self.fit()
        if not trainer.is_world_process_zero():
            return None  # under torchrun, rank 0 alone writes the adapter and evaluates
        return self.finish(trainer, seconds, result)

    # --- setup_data ---------------------------------------------------------------------------------------
    def setup_data(self) -> TrainingData:
        """Read, clean and split the data, fit the label task, check held-out labels, tokenize every split once."""
        recipe = self.recipe
        splits, info = load_splits(recipe.data)
        if not splits["train"]:
            raise NeogenError(f"{recipe.data.train}: no training rows left after cleaning and splitting")
        codec = fit_codec(splits["train"], self.tokenizer, recipe)
        task = task_for(codec)
        problems = task.recipe_problems(recipe)
        if problems:
            raise ConfigError(problems)
        check_labels(splits, codec)
        encoder = PromptEncoder(self.tokenizer, recipe.train.max_length, codec.separator)
        prompts = {name: encoder([ex.text for ex in part]) for name, part in splits.items()}
        report = data_report(splits, codec, encoder, info["choice"], info["cleaning"])
        logger.info("data:\n%s", format_report(report))
        if self.resume_from is not None:
            check_resumed_data(self.run_dir, codec, splits)
        weights = task.class_weights(splits["train"], recipe.train.class_weight)  # refused before the folder changes
        if weights is not None:
            logger.info("class weights: %s", ", ".join(
                f"{lab} {w:.3g}" for lab, w in zip(task.labels, weights.tolist(), strict=True)))
        return TrainingData(splits, task, encoder, prompts, report, weights)

    # --- setup_model --------------------------------------------------------------------------------------
    def setup_model(self) -> Any:
        """The base model with LoRA adapters (and the label rows trainable where the recipe asks)."""
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        recipe, device, lora = self.recipe, self.device, self.recipe.lora
        model = load_model(recipe.model.name, recipe.model.dtype, recipe.model.quantization, device)
        if recipe.model.quantization:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        self.replaced_attention = attention_for_training(model, recipe.train.batch_size, recipe.train.max_length,
                                                         device)
        head = model.get_output_embeddings()
        model = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
            target_modules=lora.target_modules or lora_targets(model),
            trainable_token_indices=self.data.task.completion_token_ids() if lora.train_label_tokens else None))
        if not recipe.model.quantization:
            cast_frozen_linears(model, self.precision, keep=head)
        trainable, total = model.get_nb_trainable_parameters()
        logger.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
        return model

    # --- prepare_run_dir ----------------------------------------------------------------------------------
    def prepare_run_dir(self) -> None:
        """Write the run's codec, recipe and data report (rank 0).

        Everything that can refuse this run has run by now: only from here on is an earlier run's folder replaced,
        so a refused run leaves it whole, never its old adapter beside this run's labels.
        """
        if self.resume_from is None:
            self.folder.clear_earlier()
        else:
            truncate_metrics(self.folder.metrics_log, int(self.resume_from.name.removeprefix("checkpoint-")))
            self.folder.drop_results()  # more epochs after a finished run: stopped midway, it must not look finished
        # With the number of processes, so a resume can tell a checkpoint missing a rank's RNG state from a smaller run.
        self.folder.save_setup(self.data.task.codec, self.recipe, {**self.data.report, "processes": self.world.size})

    # --- fit ----------------------------------------------------------------------------------------------
    def fit(self) -> tuple[Any, float, Any]:
        """Train with the Trainer (resuming where asked); the trainer, the training seconds and its result."""
        data, t = self.data, self.recipe.train
        has_valid = bool(data.splits["valid"])
        trainer = resumable(trainer_class())(
            model=self.model, args=self.training_arguments(has_valid),
            train_dataset=data.dataset("train", training=True),
            eval_dataset=data.dataset("valid", training=False) if has_valid else None,
            data_collator=CompletionCollator(self.tokenizer.pad_token_id),
            compute_metrics=(lambda p: data.task.validation_metrics(p.predictions, p.label_ids)) if has_valid else None,
            callbacks=[_metrics_logger(self.folder.metrics_log), *self.callbacks],
            task=data.task, loss=t.loss, class_weights=data.class_weights)
        _log_through_logging(trainer)
        start = time.perf_counter()
        if self.resume_from is not None and self.world.is_main:
            state = json.loads((self.resume_from / "trainer_state.json").read_text(encoding="utf-8"))
            logger.info("resuming from %s: step %d, epoch %.2f (optimizer, schedule, RNG and data position go on "
                        "from there)", self.resume_from, state["global_step"], state.get("epoch") or 0.0)
        checkpoint = str(self.resume_from) if self.resume_from is not None else None
        result = trainer.train(resume_from_checkpoint=checkpoint)
        return trainer, time.perf_counter() - start, result

    def training_arguments(self, has_valid: bool) -> Any:
        from transformers import TrainingArguments

        t = self.recipe.train
        strategy = "steps" if t.eval_steps else "epoch"
        return TrainingArguments(
            output_dir=str(self.folder.checkpoints_dir), num_train_epochs=t.epochs,
            per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
            gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, weight_decay=t.weight_decay,
            optim=t.optimizer, lr_scheduler_type=t.scheduler, warmup_steps=t.warmup,
            bf16=self.precision == "bf16", fp16=self.precision == "fp16", use_cpu=self.device.type == "cpu",
            logging_steps=t.logging_steps, eval_strategy=strategy if has_valid else "no", eval_steps=t.eval_steps,
            save_strategy="steps" if t.eval_steps or t.save_steps else "epoch",
            save_steps=t.save_steps or t.eval_steps or 500,  # read only with save_strategy "steps" (500: its default)
            save_total_limit=2,  # with load_best_model_at_end: the best and the last checkpoint
            load_best_model_at_end=has_valid, metric_for_best_model="log_loss" if has_valid else None,
            greater_is_better=False, train_sampling_strategy="group_by_length", remove_unused_columns=False,
            label_names=["labels"], report_to=t.report_to, seed=t.seed, dataloader_num_workers=0,
            # Under torchrun: every LoRA weight takes part in every forward pass, so DDP need not search the
            # autograd graph for unused ones at every step (torch warns that it is wasted).
            ddp_find_unused_parameters=False,
            disable_tqdm=not self.progress,  # explicit: the CLI quiets transformers logging, which would hide it
        )

    # --- finish -------------------------------------------------------------------------------------------
    def finish(self, trainer: Any, seconds: float, result: Any) -> dict[str, Any]:
        """Save the adapter, fit the decision on the validation split, evaluate every split, write results.json."""
        from neogen.classify import Classifier

        data, t = self.data, self.recipe.train
        self.model.save_pretrained(self.folder.adapter_dir)
        self.folder.keep_last_checkpoint()
        if self.replaced_attention:  # evaluated as Classifier.load will score it, so results match `neogen eval`
            self.model.set_attn_implementation(self.replaced_attention)
        classifier = Classifier(self.model, self.tokenizer, data.task.codec, max_length=t.max_length,
                                precision=self.precision, batch_size=t.eval_batch_size)
        summary: dict[str, Any] = {
            "train_seconds": round(seconds, 1),
            "train_examples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
            "precision": self.precision, "device": str(self.device),
            "best_checkpoint": trainer.state.best_model_checkpoint}
        summary |= data.task.run_summary(self.recipe)
        if trainer.class_weights is not None:
            summary["class_weights"] = dict(zip(data.task.labels, trainer.class_weights.tolist(), strict=True))
        # The validation split is scored whatever train.evaluate says when the decision is fitted on it.
        wanted = set(t.evaluate) | ({"valid"} if data.task.decision_after_training(self.recipe)[1] else set())
        scored = {name: classifier.predict_prompts(data.prompts[name], progress=self.progress)
                  for name in ("train", "valid", "test") if data.splits[name] and name in wanted}
        summary |= self.fit_decision(classifier, scored)
        summary |= self.evaluate(classifier, scored)
        self.folder.save_results(summary)
        return summary

    def fit_decision(self, classifier: Any, scored: dict[str, Any]) -> dict[str, Any]:
        """The softmax temperature (single-label, train.calibrate) or the multi-label thresholds, fitted on the
        validation split, saved in the run and set on `classifier`, so every split is evaluated with it."""
        task = self.data.task
        self.folder.drop_calibration()  # a temperature from an earlier run in this dir
        saved, tuned = task.decision_after_training(self.recipe)
        if not saved:
            return {}
        valid = scored["valid"].probs if "valid" in scored and tuned else None
        if valid is None and tuned:
            logger.warning("no validation split to fit the decision on (%s), so it stays untuned",
                           task.decision_option)
        decision = task.fit_decision(self.data.splits["valid"], valid, self.recipe, split="valid")
        if decision is None:
            return {}
        self.folder.save_decision(decision)
        classifier.set_decision(decision)
        return task.decision_summary(decision)

    def evaluate(self, classifier: Any, scored: dict[str, Any]) -> dict[str, Any]:
        """Each split of train.evaluate through Classifier.evaluate, the path `neogen eval` takes."""
        from neogen.evaluate import classification_metrics

        data, out = self.data, {}
        for name in self.recipe.train.evaluate:
            if name not in scored:
                continue
            raw = scored[name]
            probs = data.task.calibrated(raw.probs, classifier.calibration)
            metrics = classifier.evaluate(data.splits[name], self.folder.eval_dir(name), {"split": name},
                                          probs=probs)
            out[name] = data.task.summary(metrics)
            if classifier.calibration is not None:  # what the temperature changed, on every split
                before = classification_metrics(data.task.truth(data.splits[name]), raw.probs, data.task.labels)
                out[name] |= {"log_loss_uncalibrated": before["log_loss"], "ece_uncalibrated": before["ece"]}
            logger.info("%s split:\n%s", name, data.task.format(metrics))
        return out


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

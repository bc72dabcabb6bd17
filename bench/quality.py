"""Quality: neogen against TF-IDF + logistic regression and a classification-head model, on the same splits.

  tfidf      TF-IDF word 1-2 grams (sublinear tf) + logistic regression (C=10), scikit-learn.
  head       AutoModelForSequenceClassification on the same base model: LoRA on the same modules plus a trained
             score head over the last token's hidden state (the GPT-2 sequence-classification tutorial's way),
             the same epochs, batch size, learning rate, max length and precision as neogen's recipe, and its
             `train.class_weight` (a weighted cross-entropy, as neogen weighs its label loss).
  neogen     `neogen train` with the recipe, on the same files.

One experiment per data set and method (`python -m bench list`), each result one method and one seed; the seed is
the recipe's `train.seed` and the seed of a `train_rows` sample:

    python -m bench run quality-student-neogen --seeds 0,1,2
    python -m bench run quality-trec6-head --seeds 0,1,2 head_lr=5e-4 train.class_weight=balanced
    python -m bench run quality-trec6-neogen --seeds 0,1,2 train_rows=200 train.epochs=4 label_words=trec6
    python -m bench run tfidf-baseline data=my.csv text_column=text label_column=label   # any CSV

Data sets (from ../shared/data): `student` = student questions, first 80% train / last 20% test, unshuffled, as in
the GPT-Neo tutorial; `trec6` = TREC coarse classes, the 5,452 training questions / the 500 TREC-10 test questions;
`trec50` = the same questions with TREC's 50 fine classes (`NUM:date`, `ENTY:animal`, ...), for many labels.
`label_words=trec6` names TREC-6's classes with words (`data.label_words`, LABEL_WORDS below).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neogen.evaluate import classification_metrics
from neogen.prepare import clean, split
from neogen.read import Example, load_examples

from .common import ROOT, SHARED_DATA, data_path, read_trec

KEYS = ("n", "accuracy", "macro_f1", "roc_auc", "log_loss", "ece")
# Named label words (`label_words=NAME`): a word the base model knows for each class.
LABEL_WORDS = {"trec6": "{ABBR: abbreviation, DESC: description, ENTY: entity, HUM: human, LOC: location, "
                        "NUM: number}"}


def write_csv(path: Path, examples: list[Example]) -> Path:
    """The examples as a text,label CSV file (what every method reads)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((ex.text, ex.label) for ex in examples)
    return path


def splits(name: str, folder: Path, train_rows: int | None = None, sample_seed: int = 0) -> dict[str, Path]:
    """Train and test CSV files (text,label) for a data set, written into folder.

    `train_rows` keeps a stratified random sample of that many training rows (the same for every method), to measure
    the low-data regime; the test split is unchanged.
    """
    if name == "student":
        path = SHARED_DATA / "student_questions" / "subjects-questions-subset.csv"
        examples, _ = load_examples(path, "eng", "Subject")
        parts = split(clean(examples)[0], test_ratio=0.2)
    else:
        parts = {}
        for part, file in (("train", "train_5500.label"), ("test", "TREC_10.label")):
            texts, labels = read_trec(SHARED_DATA / "trec" / file, fine=name == "trec50")
            parts[part] = [Example(t, lab, file, i + 1) for i, (t, lab) in enumerate(zip(texts, labels, strict=True))]
    if train_rows is not None and train_rows < len(parts["train"]):
        from sklearn.model_selection import train_test_split

        train = parts["train"]
        parts["train"], _ = train_test_split(train, train_size=train_rows, random_state=sample_seed,
                                             stratify=[ex.label for ex in train])
    # neogen drops repeated texts when it reads its files; cleaning here gives every method the same rows (TREC's
    # training file repeats 71 of its 5,452 questions, the test file none). After sampling, so that the samples
    # stay the ones the figures in bench/README.md were measured on.
    parts = {part: clean(examples)[0] for part, examples in parts.items()}
    return {part: write_csv(folder / f"{part}.csv", parts[part]) for part in ("train", "test")}


def tfidf(files: dict[str, Path]) -> dict[str, Any]:
    """TF-IDF word 1-2 grams (sublinear tf) + logistic regression (C=10): the baseline's test figures."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, _ = load_examples(files["train"], "text", "label")
    test, _ = load_examples(files["test"], "text", "label")
    labels = sorted({ex.label for ex in train})
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, C=10.0).fit(vectorizer.fit_transform([ex.text for ex in train]),
                                                          [labels.index(ex.label) for ex in train])
    probs = model.predict_proba(vectorizer.transform([ex.text for ex in test]))
    metrics = classification_metrics([labels.index(ex.label) for ex in test], np.asarray(probs), labels)
    return {k: metrics[k] for k in KEYS} | {"train_seconds": time.perf_counter() - start}


def weighted_loss(train: list[Example], labels: list[str], tokenizer: Any, spec: Any,
                  grad_accum: int) -> Callable[..., Any] | None:
    """The head's loss under `train.class_weight` (None, the Trainer's own loss, for `none`): the same weights
    and weighted mean as neogen's training, so a weighted comparison weighs both methods alike."""
    if spec == "none":
        return None
    import torch

    from neogen.labels import LabelCodec
    from neogen.tasks import SingleLabelTask, weighted_mean

    codec = LabelCodec.fit(labels, tokenizer)  # its labels are sorted, as `labels` are
    weights = SingleLabelTask(codec).class_weights(train, spec)

    def loss(outputs: Any, targets: Any, num_items_in_batch: Any = None) -> Any:
        """Per-example cross-entropy, averaged with the class weights."""
        per_example = torch.nn.functional.cross_entropy(outputs.logits.float(), targets, reduction="none")  # (B,)
        # With a compute_loss_func the Trainer leaves the division by the accumulation steps to it.
        return weighted_mean(per_example, targets, weights) / grad_accum

    return loss


def head(files: dict[str, Path], recipe_path: str, overrides: list[str], lr: float | None) -> dict[str, Any]:
    """LoRA + a score head on the recipe's base model, trained with the recipe's settings on the Trainer (`lr`, when
    given, replaces the recipe's learning rate)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    from neogen.models import default_device, load_tokenizer, lora_targets, materialize, resolve, resolve_precision
    from neogen.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    t = recipe.train
    torch.manual_seed(t.seed)
    train, _ = load_examples(files["train"], "text", "label")
    test, _ = load_examples(files["test"], "text", "label")
    labels = sorted({ex.label for ex in train})
    tokenizer = load_tokenizer(recipe.model.name)
    device = default_device()
    precision = resolve_precision(t.precision, device)
    model = AutoModelForSequenceClassification.from_pretrained(materialize(resolve(recipe.model.name)),
                                                               num_labels=len(labels), dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    targets = recipe.lora.target_modules or lora_targets(model)
    model = get_peft_model(model, LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha,
                                             lora_dropout=recipe.lora.dropout, target_modules=targets,
                                             task_type="SEQ_CLS"))

    def dataset(examples: list[Example]) -> Dataset:
        """Tokenized texts and label ids, as the Trainer takes them."""
        enc = tokenizer([ex.text for ex in examples], truncation=True, max_length=t.max_length)
        return Dataset.from_dict({**enc, "labels": [labels.index(ex.label) for ex in examples]})

    args = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=t.epochs,
                             per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
                             per_device_eval_batch_size=t.eval_batch_size, learning_rate=lr or t.lr,
                             weight_decay=t.weight_decay, optim=t.optimizer, warmup_steps=t.warmup,
                             lr_scheduler_type=t.scheduler, bf16=precision == "bf16", fp16=precision == "fp16",
                             use_cpu=device.type == "cpu", save_strategy="no", report_to=[], seed=t.seed,
                             train_sampling_strategy="group_by_length", disable_tqdm=True,
                             logging_steps=t.logging_steps)
    trainer = Trainer(model=model, args=args, train_dataset=dataset(train),
                      data_collator=DataCollatorWithPadding(tokenizer),
                      compute_loss_func=weighted_loss(train, labels, tokenizer, t.class_weight, t.grad_accum))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [round(log["loss"], 4) for log in trainer.state.log_history if "loss" in log]
    metrics = predict_in_order(trainer, dataset(test), [labels.index(ex.label) for ex in test], labels)
    return {k: metrics[k] for k in KEYS} | {"train_seconds": seconds, "lr": lr or t.lr, "precision": precision,
                                            "threads": torch.get_num_threads(),
                                            "train_loss_first_last": [losses[0], losses[-1]] if losses else None}


def predict_in_order(trainer: Any, test: Any, y: list[int], labels: list[str]) -> dict[str, Any]:
    """The trained head's metrics on the test rows, predicted in file order.

    Trainer's eval/test sampler follows train_sampling_strategy: with "group_by_length" it returns predictions in a
    shuffled, length-grouped order, which scored against the labels in file order is chance. Predict in file order,
    and check the order through the label ids that come back with the predictions.
    """
    import torch

    trainer.args.train_sampling_strategy = "sequential"
    output = trainer.predict(test)
    if output.label_ids is None or not np.array_equal(output.label_ids, y):
        raise RuntimeError("trainer.predict did not return the test rows in their order")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), -1).numpy()
    return classification_metrics(y, probs, labels)


def neogen(files: dict[str, Path], recipe_path: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """`neogen train` with the recipe on the split's files; its test figures, training time and precision."""
    cmd = [sys.executable, "-m", "neogen.cli", "-q", "train", recipe_path, f"data.train={files['train']}",
           f"data.test={files['test']}", "data.text_column=text", "data.label_column=label", "data.test_ratio=0",
           "data.valid_ratio=0", *overrides, f"output_dir={out}"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    results = json.loads((out / "results.json").read_text())
    # The precision goes with the figures: recipes say auto, which is bf16 only on CPUs that compute it natively.
    return results["test"] | {"train_seconds": results["train_seconds"], "precision": results["precision"]}


def resolve(params: dict[str, Any]) -> dict[str, Any]:
    """`train.precision: auto` as the precision this machine trains in, so that the result names what ran."""
    if params.get("train.precision", "auto") != "auto":
        return params
    from neogen.models import default_device, resolve_precision

    return params | {"train.precision": resolve_precision("auto", default_device())}


def overrides_of(params: dict[str, Any], seed: int) -> list[str]:
    """The recipe overrides of a run: its dotted parameters, the seed, and the named label words."""
    overrides = [f"{key}={value}" for key, value in params.items() if "." in key]
    if params.get("label_words"):
        if params["label_words"] not in LABEL_WORDS:
            raise SystemExit(f"label_words={params['label_words']}: known are {', '.join(LABEL_WORDS)}")
        overrides.append(f"data.label_words={LABEL_WORDS[params['label_words']]}")
    return [*overrides, f"train.seed={seed}"]


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """quality-DATASET-METHOD: one method trained and tested on the data set's split; its test figures."""
    folder = Path(tempfile.mkdtemp(prefix=f"neogen-quality-{params['dataset']}-"))
    files = splits(params["dataset"], folder, params["train_rows"], seed)
    method = params["method"]
    if method == "tfidf":
        figures = tfidf(files)
    elif method == "head":
        figures = head(files, params["recipe"], overrides_of(params, seed), params["head_lr"])
    else:
        figures = neogen(files, params["recipe"], overrides_of(params, seed), folder / "run")
    with files["train"].open(encoding="utf-8") as f:
        figures["train_rows"] = sum(1 for _ in csv.reader(f)) - 1
    print(f"{params['dataset']} {method} seed {seed}: " + ", ".join(
        f"{key} {figures[key]:.4f}" for key in KEYS[1:] if figures.get(key) is not None), flush=True)
    return figures


def tfidf_csv(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """tfidf-baseline: TF-IDF + logistic regression on any CSV, on the split `neogen train` makes of it."""
    examples, _ = load_examples(data_path(params["data"]), params["text_column"], params["label_column"])
    parts = split(clean(examples)[0], test_ratio=params["test_ratio"], shuffle=params["shuffle"], seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        files = {part: write_csv(Path(tmp) / f"{part}.csv", parts[part]) for part in ("train", "test")}
        figures = tfidf(files)
    print(json.dumps(figures, indent=2))
    return figures

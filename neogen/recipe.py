"""Training recipes: small typed sections read from YAML, with dotted command-line overrides.

Every field carries its help text in its metadata (shown by `neogen train --help-recipe`), and validation
collects every problem in the recipe before reporting, so one run of the command shows all there is to fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neogen.errors import ConfigError


class RecipeLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans, true and false only.

    YAML 1.1 (PyYAML's default) also reads yes/no/on/off as booleans, which would turn the common labels `yes` and
    `no` into True and False in label_words and class_weight, and train on the completions ` True` / ` False`.
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


def load_yaml(text: str) -> Any:
    """Parse recipe YAML (a file, a saved run's recipe.yaml, or an override's value) with RecipeLoader."""
    return yaml.load(text, Loader=RecipeLoader)  # a SafeLoader subclass: no arbitrary objects


def doc(help_text: str, default: Any = dataclasses.MISSING, resumable: bool = False, **kwargs: Any) -> Any:
    """A dataclass field with its help text attached.

    `resumable` marks a key a resumed run may change (`neogen train --resume`): one that alters neither the model,
    the data nor the optimizer's path up to the checkpoint (more epochs, logging, scoring, post-training steps).
    """
    metadata = {"help": help_text, "resumable": resumable}
    if isinstance(default, list | dict):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def resumable_keys() -> frozenset[str]:
    """The dotted recipe keys marked resumable (see `doc`), read off the recipe's fields."""
    keys = set()
    for section in dataclasses.fields(Recipe):
        if dataclasses.is_dataclass(section.default_factory):  # model, data, lora, train, multilabel
            keys |= {f"{section.name}.{f.name}" for f in dataclasses.fields(section.default_factory)
                     if f.metadata.get("resumable")}
        elif section.metadata.get("resumable"):
            keys.add(section.name)
    return frozenset(keys)


@dataclass
class ModelConfig:
    name: str = doc("base causal LM: 'smollm2-135m', a Hub id (EleutherAI/gpt-neo-125m), a local dir or a .gguf",
                    "smollm2-135m")
    dtype: str = doc("base weight dtype: auto (fp32 on CPU; on CUDA bf16, fp16 before Ampere), float32, "
                            "bfloat16, float16", "auto")
    quantization: str | None = doc("4bit or 8bit base weights via bitsandbytes (CUDA only); null for none", None)

    def problems(self) -> list[str]:
        out = []
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            out.append(f"model.dtype: '{self.dtype}' is not one of auto, float32, bfloat16, float16")
        if self.quantization not in (None, "4bit", "8bit"):
            out.append(f"model.quantization: '{self.quantization}' is not one of 4bit, 8bit, null")
        return out


@dataclass
class LoraConfig:
    r: int = doc("LoRA rank", 16)
    alpha: int = doc("LoRA alpha (scale = alpha / r)", 32)
    dropout: float = doc("dropout on the LoRA input", 0.05)
    target_modules: list[str] | None = doc("module names to adapt; null picks every linear layer of the "
                                           "architecture (GPT-Neo, GPT-2 and Llama-style names known)", None)
    train_label_tokens: bool = doc("also train the embedding rows of the completion tokens (peft trainable "
                                   "tokens): the label tokens' output rows move too where the LM head is tied to the "
                                   "embeddings, as in GPT-Neo and SmolLM2", False)

    def problems(self) -> list[str]:
        out = []
        if self.r < 1:
            out.append(f"lora.r: must be >= 1, got {self.r}")
        if self.alpha <= 0:
            out.append(f"lora.alpha: must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            out.append(f"lora.dropout: must be in [0, 1), got {self.dropout}")
        return out


@dataclass
class DataConfig:
    train: str | None = doc("training file (.csv, .tsv, .jsonl, .parquet; prepared prompt/completion JSONL too)",
                            None)
    valid: str | None = doc("validation file; null splits valid_ratio off the training file", None)
    test: str | None = doc("test file; null splits test_ratio off the training file", None)
    text_column: str | None = doc("column holding the text; null detects it", None)
    label_column: str | None = doc("column holding the label, or one 0/1 column per label joined by ',' "
                                   "(toxic,obscene,insult); null detects it", None)
    valid_ratio: float = doc("share of the training file held out for validation when no valid file is given", 0.0)
    test_ratio: float = doc("share of the training file held out for testing when no test file is given", 0.0)
    shuffle: bool = doc("shuffle before splitting (false: the last rows are held out, as in the tutorial)", False)
    stratify: bool = doc("keep class proportions in every split (implies shuffling within classes)", False)
    seed: int = doc("seed of the split shuffle", 0)
    multi_label: bool | None = doc("null detects label sets (a list-valued label, labels joined by , ; or |, or one "
                                   "0/1 column per label); true requires them; false reads one label per row", None)
    label_separator: str | None = doc("multi-label: the string joining several labels in one cell; null detects it",
                                      None)
    allow_empty: bool = doc("multi-label: rows with no label are allowed (else they are an error naming the line)",
                            False)
    label_words: dict[str, str] = doc("completion word per label, one token each, e.g. {NUM: number, LOC: place}; "
                                      "labels left out keep their own token or an alias", {})

    def problems(self) -> list[str]:
        out = []
        if not self.train:
            out.append("data.train: a training file is required (e.g. data.train=data/questions.csv)")
        for name in ("valid_ratio", "test_ratio"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                out.append(f"data.{name}: must be in [0, 1), got {value}")
        if self.valid_ratio + self.test_ratio >= 1:
            out.append("data.valid_ratio + data.test_ratio must leave rows for training")
        if self.valid and self.valid_ratio:
            out.append("data.valid and data.valid_ratio are both set; use one")
        if self.test and self.test_ratio:
            out.append("data.test and data.test_ratio are both set; use one")
        empty = sorted(label for label, word in self.label_words.items() if not word.strip())
        if empty:
            out.append(f"data.label_words: no word given for {empty}")
        if self.label_separator == "":
            out.append(f"data.label_separator: {self.label_separator!r} separates nothing (in a YAML file, quote "
                       "a separator such as '|' or ','; null detects it)")
        return out


@dataclass
class MultiLabelConfig:
    encoding: str = doc("how label sets are read off the model: independent (one pass, a sigmoid per label token), "
                        "powerset (each seen label set is one token), yes_no (a yes/no answer per label, the text's "
                        "key/value cache shared by all labels)", "independent")
    threshold: str = doc("decision threshold: per_label or shared (both tuned on the validation split), or a fixed "
                         "number such as 0.5", "per_label", resumable=True)
    at_least_one: bool | None = doc("give every text its most likely label when none passes its threshold; null: "
                                    "true unless data.allow_empty", None, resumable=True)
    min_positives: int = doc("labels with fewer validation positives than this use the shared threshold", 3,
                             resumable=True)

    def problems(self) -> list[str]:
        out = []
        if self.encoding not in ("independent", "powerset", "yes_no"):
            out.append(f"multilabel.encoding: '{self.encoding}' is not one of independent, powerset, yes_no")
        if self.threshold not in ("per_label", "shared"):
            try:
                if not 0 <= float(self.threshold) <= 1:
                    out.append(f"multilabel.threshold: a fixed threshold must be in [0, 1], got {self.threshold}")
            except ValueError:
                out.append(f"multilabel.threshold: '{self.threshold}' is not per_label, shared or a number")
        if self.min_positives < 1:
            out.append(f"multilabel.min_positives: must be >= 1, got {self.min_positives}")
        return out


@dataclass
class TrainConfig:
    epochs: float = doc("passes over the training rows (raise it with --resume to train longer)", 1.0, resumable=True)
    batch_size: int = doc("examples per step per device", 8)
    grad_accum: int = doc("steps accumulated per optimizer update", 1)
    lr: float = doc("peak learning rate", 1e-3)
    weight_decay: float = doc("AdamW weight decay", 0.0)
    optimizer: str = doc("optimizer name as transformers knows it (adamw_torch, adamw_8bit, adafactor, ...)",
                         "adamw_torch")
    scheduler: str = doc("learning-rate schedule (linear, cosine, constant_with_warmup, ...)", "linear")
    warmup: float = doc("warm-up: a share of the steps if < 1, else a step count", 0.06)
    max_length: int = doc("tokens per prompt; the text is truncated, never the separator", 256)
    precision: str = doc("auto (bf16 where the hardware computes it: CUDA Ampere+, CPUs with "
                                 "AVX512-BF16/AMX; fp16 on older GPUs; else fp32), fp32, bf16, fp16", "auto")
    eval_steps: int | None = doc("validate every N steps; null validates once per epoch", None)
    logging_steps: int = doc("log the training loss every N steps", 10, resumable=True)
    eval_batch_size: int = doc("most examples per scoring batch", 64, resumable=True)
    seed: int = doc("seed of LoRA init, data order and dropout", 0)
    loss: str = doc("single-label loss at the completion position: vocab (cross-entropy over the whole vocabulary, "
                    "the legacy OpenAI recipe; label_mass stays meaningful) or labels (over the label tokens only, "
                    "the softmax that scoring reads)", "vocab")
    evaluate: list[str] = doc("splits scored and evaluated after training (eval/<split>/metrics.json)",
                              ["train", "valid", "test"], resumable=True)
    class_weight: str | dict[str, float] = doc(
        "weight of each class in the loss: none; balanced (n / (K x n_class): every class carries the same total "
        "weight, for rare classes and macro-F1); or {label: weight}, others 1. Multi-label (independent, yes_no): "
        "a label's positive weight, balanced = negatives / positives", "none")
    calibrate: bool = doc("fit a softmax temperature on the validation split after training (calibration.json), "
                          "applied to every score; single-label runs with a validation split", False, resumable=True)
    save_steps: int | None = doc("save a resumable checkpoint (neogen train --resume) every N optimizer steps, for "
                                 "long runs without a validation split; null saves where it validates (eval_steps, "
                                 "else once per epoch), which a run with a validation split always does", None,
                                 resumable=True)
    report_to: list[str] = doc("where the Trainer also logs training metrics: [] (metrics.jsonl only), or names it "
                               "knows: tensorboard (event files under the run's checkpoints/runs), mlflow, wandb, ...",
                               [], resumable=True)

    def problems(self) -> list[str]:
        out = []
        unknown = sorted(set(self.evaluate) - {"train", "valid", "test"})
        if unknown:
            out.append(f"train.evaluate: {unknown} are not splits; use train, valid, test")
        for name in ("batch_size", "grad_accum", "max_length", "logging_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                out.append(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        # `not 0 < x < inf` rather than `x <= 0`: NaN fails every comparison, so it is refused here, not mid-run.
        if not 0 < self.epochs < math.inf:
            out.append(f"train.epochs: must be a number > 0, got {self.epochs}")
        if not 0 < self.lr < math.inf:
            out.append(f"train.lr: must be a number > 0, got {self.lr}")
        if not 0 <= self.warmup < math.inf:
            out.append(f"train.warmup: must be a number >= 0, got {self.warmup}")
        if not 0 <= self.weight_decay < math.inf:
            out.append(f"train.weight_decay: must be a number >= 0, got {self.weight_decay}")
        out += _transformers_names(self.optimizer, self.scheduler)
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            out.append(f"train.precision: '{self.precision}' is not one of auto, fp32, bf16, fp16")
        if self.eval_steps is not None and self.eval_steps < 1:
            out.append(f"train.eval_steps: must be >= 1 or null, got {self.eval_steps}")
        if self.loss not in ("vocab", "labels"):
            out.append(f"train.loss: '{self.loss}' is not one of vocab, labels")
        if isinstance(self.class_weight, str) and self.class_weight not in ("none", "balanced"):
            out.append(f"train.class_weight: '{self.class_weight}' is not none, balanced or a mapping "
                       "{label: weight}")
        if isinstance(self.class_weight, dict):
            bad = {label: w for label, w in self.class_weight.items() if not w > 0}
            if bad:
                out.append(f"train.class_weight: weights must be numbers > 0, got {bad}")
        if self.save_steps is not None and self.save_steps < 1:
            out.append(f"train.save_steps: must be >= 1 or null, got {self.save_steps}")
        return out


@dataclass
class Recipe:
    """A whole training run: what to load, what to learn from, how, and where to write it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    multilabel: MultiLabelConfig = field(default_factory=MultiLabelConfig)
    output_dir: str = doc("run directory (adapter, label codec, resolved recipe, metrics)", "runs/default",
                          resumable=True)

    def problems(self) -> list[str]:
        out = (self.model.problems() + self.lora.problems() + self.data.problems() + self.train.problems()
               + self.multilabel.problems())
        has_valid = bool(self.data.valid or self.data.valid_ratio)
        if self.train.save_steps and has_valid and self.train.save_steps != self.train.eval_steps:
            # Trainer marks a new best only when it saves at that validation: a best validated between two saves
            # is lost, and adapter/ would hold a worse checkpoint. So a validated run saves at every validation.
            out.append(f"train.save_steps: with a validation split the run saves where it validates, so that the best "
                       f"validation is a saved checkpoint; leave save_steps null (and set train.eval_steps="
                       f"{self.train.save_steps} to validate and save every {self.train.save_steps} steps)")
        if self.train.calibrate and not has_valid:
            out.append("train.calibrate: the temperature is fitted on a validation split; set data.valid or "
                       "data.valid_ratio (e.g. data.valid_ratio=0.1)")
        return out

    def validate(self, source: str = "recipe") -> Recipe:
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> Recipe:
        """Build and validate a recipe; unknown keys and wrong types are reported together with the rest."""
        problems: list[str] = []
        recipe = _build(cls, data, "", problems)
        if problems:
            raise ConfigError(problems + recipe.problems(), source)
        return recipe.validate(source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {data!r}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {', '.join(fields)}"
            problems.append(f"{prefix}{key}: unknown key{hint}")
            continue
        f = fields[key]
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            kwargs[key] = _build(f.default_factory, value, f"{prefix}{key}.", problems)
        else:
            kwargs[key] = _coerce(value, f, f"{prefix}{key}", problems)
    return cls(**kwargs)


def _coerce(value: Any, f: dataclasses.Field, name: str, problems: list[str]) -> Any:
    annotation = str(f.type)
    if value is None:
        if "None" not in annotation:
            problems.append(f"{name}: may not be null")
            return f.default
        return None
    if annotation.startswith("float") and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation.startswith("float") and isinstance(value, str):
        try:  # YAML 1.1 reads 5e-3 (no dot) as a string; users mean the number
            return float(value)
        except ValueError:
            pass
    if annotation.startswith("int") and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation.startswith("bool") and isinstance(value, bool):
        return value
    if annotation.startswith("str") and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    if "dict[str, float]" in annotation and isinstance(value, dict):
        numbers = {}
        for k, v in value.items():
            try:
                numbers[str(k)] = float(v)
            except (TypeError, ValueError):
                problems.append(f"{name}.{k}: expected a number, got {v!r}")
        return numbers
    if annotation.startswith("list") and isinstance(value, list):
        return [str(v) for v in value]
    if annotation.startswith("dict") and isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    problems.append(f"{name}: expected {annotation}, got {value!r}")
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default if f.default is not dataclasses.MISSING else None


def _override_value(raw: str) -> Any:
    """An override's value as YAML reads it (numbers, booleans, null, lists, mappings), else the text as typed.

    A one-line value that is not YAML (`,`) or a block-scalar sign alone (`|`, `>`, which YAML reads as an empty
    string) can only mean the characters themselves: data.label_separator=| and data.label_separator=, say so.
    """
    if not raw:
        return ""
    try:
        value = load_yaml(raw)
    except yaml.YAMLError:
        return raw
    return raw if value == "" and raw.strip() in ("|", ">", "|-", ">-", "|+", ">+") else value


def _transformers_names(optimizer: str, scheduler: str) -> list[str]:
    """Problems with the optimizer and scheduler names, checked against transformers' own lists before a run
    starts rather than by TrainingArguments once the model is loaded."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    out = []
    for key, value, names in (("optimizer", optimizer, [o.value for o in OptimizerNames]),
                              ("scheduler", scheduler, [s.value for s in SchedulerType])):
        if value not in names:
            near = difflib.get_close_matches(str(value), names, n=3)
            out.append(f"train.{key}: '{value}' is not one transformers knows" +
                       (f"; did you mean {' or '.join(near)}?" if near else f" ({', '.join(names[:8])}, ...)"))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `dotted.key=value` overrides; values are parsed as YAML (numbers, booleans, null, lists, mappings)."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"override '{item}': expected dotted.key=value, e.g. train.epochs=2")
            continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"override '{item}': '{part}' is not a section")
                break
        else:
            node[parts[-1]] = _override_value(raw)
    if problems:
        raise ConfigError(problems, "overrides")
    return data


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file (or start from the defaults), apply overrides and validate everything at once."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError([f"recipe file not found: {path}"], source) from None
        except yaml.YAMLError as e:
            raise ConfigError([f"invalid YAML: {e}"], source) from None
        if not isinstance(data, dict):
            raise ConfigError([f"a recipe is a mapping of sections (model:, data:, train:, ...), not a "
                               f"{type(data).__name__}"], source)
    data = apply_overrides(data, overrides or [])
    return Recipe.from_dict(data, source)


def recipe_help() -> str:
    """Every recipe key with its default and help text."""
    lines = []
    for section in dataclasses.fields(Recipe):
        if section.default_factory is not dataclasses.MISSING:
            for f in dataclasses.fields(section.default_factory):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                lines.append(f"  {section.name}.{f.name} = {default!r}\n      {f.metadata.get('help', '')}")
        else:
            lines.append(f"  {section.name} = {section.default!r}\n      {section.metadata.get('help', '')}")
    return "\n".join(lines)


def recipe_reference_markdown() -> str:
    """docs/recipe.md (less its final newline): every recipe key with its default and help text, a table per section.

    `neogen train --help-recipe --markdown > docs/recipe.md` writes it; tests/test_docs.py checks it is current.
    """

    def cell(value: Any, code: bool = False) -> str:
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=10**6)
        text = text.removesuffix("\n...\n").strip().replace("|", "\\|")
        return f"`{text}`" if code else text.replace("<", "&lt;")  # eval/<split>/ is no HTML tag

    out = ["# Recipe reference", "",
           "<!-- Generated from neogen/recipe.py by `neogen train --help-recipe --markdown > docs/recipe.md`; "
           "do not edit. -->", "",
           "A recipe is a YAML file of the sections below (`neogen train RECIPE`, or `neogen train -` for the "
           "defaults). Any key can be overridden on the command line as `section.key=value`, the value read as "
           "YAML (`train.epochs=2`, `data.label_words={NUM: number}`, `model.quantization=null`). Unknown keys, "
           "wrong types and invalid values are all reported at once, before anything loads. The resolved recipe, "
           "every default filled in, is saved in the run folder as `recipe.yaml`.", ""]
    top = []
    for section in dataclasses.fields(Recipe):
        if section.default_factory is dataclasses.MISSING:
            top.append(section)
            continue
        out += [f"## {section.name}", "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(section.default_factory):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(f"| `{section.name}.{f.name}` | {cell(default, True)} | {cell(f.metadata.get('help', ''))} |")
        out.append("")
    if top:
        out += ["## Top level", "", "| key | default | meaning |", "|---|---|---|"]
        out += [f"| `{f.name}` | {cell(f.default, True)} | {cell(f.metadata.get('help', ''))} |" for f in top]
        out.append("")
    return "\n".join(out).rstrip("\n")

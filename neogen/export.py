"""`neogen export`: a trained run as a standard Hugging Face model folder, loadable without neogen.

Three formats, each with neogen's label codec (`labels.json`) and a model card (`README.md`) beside the weights:

  sequence-classification  the architecture's `*ForSequenceClassification` with the LoRA merged, whose score layer
                           is the LM head's rows of the label tokens (divided by the run's softmax temperature, if
                           calibrated), and a tokenizer that strips the text and appends the separator itself, so
                           `pipeline("text-classification", model=OUT, top_k=None)` classifies raw texts as neogen
                           does. Multi-label runs export with the independent encoding only.
  causal-lm                the merged causal LM and its plain tokenizer: `generate(max_new_tokens=1)` on
                           `text + separator` yields the label token.
  adapter                  the peft adapter and the plain tokenizer, in the layout `AutoPeftModelForCausalLM` loads,
                           naming a base model outside neogen's cache.

The folder is claimed with the marker `neogen-export.json` (neogen.folders): an export never writes into a folder
that holds anything but an earlier export, and a new export replaces only the files the earlier one wrote. The
marker is completed last, with the format and what `Classifier.load(OUT)` needs to rebuild neogen's classifier
(`load_export`), so an interrupted export is never taken for a finished one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neogen.errors import NeogenError, OutputError
from neogen.folders import FileLock, claim, is_marked, read_json, write_error
from neogen.run import Run

if TYPE_CHECKING:
    import torch

    from neogen.classify import Classifier
    from neogen.recipe import Recipe

logger = logging.getLogger(__name__)

EXPORT_MARKER = "neogen-export.json"
EXPORT_KIND = "export"
FORMATS = ("sequence-classification", "causal-lm", "adapter")
THRESHOLDS_FILE = "thresholds.json"
CALIBRATION_FILE = "calibration.json"
CARD_FILE = "README.md"
# The LM head of a model whose head is not tied to its input embeddings: a sequence-classification checkpoint keeps
# only the label rows, and neogen's label_mass needs all of them.
LM_HEAD_FILE = "neogen_lm_head.safetensors"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Largest difference allowed between the exported head's probabilities and neogen's on the probe texts.
TOLERANCE = 1e-4
# What a sequence-classification tokenizer's normalizer does before tokenizing: neogen's strip_text (surrounding
# whitespace, and a trailing separator less its trailing whitespace, as OpenAI-style prompts end).
SEPARATOR_TOKEN = "<neogen-separator>"
# Texts the exported head and tokenizer are checked on before the export counts as done: plain, padded with
# whitespace, OpenAI-style, non-ASCII, and one longer than any max_length (truncated).
PROBES = ("What is the SI unit of force?", "  Balance the equation Fe + O2 -> Fe2O3.\n", "Integrate x^2 dx",
          "Which organelle makes ATP?\n\n###\n\n", "Résumé: naïve café, 東京, emoji 🙂", "a",
          "word " * 600)
SAFE_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_export(path: str | Path) -> bool:
    """Whether `path` is a folder `neogen export` wrote (finished or not): it carries the export marker."""
    return is_marked(Path(path).expanduser(), EXPORT_MARKER, EXPORT_KIND)


def read_marker(folder: Path) -> dict[str, Any]:
    """The export marker's content; an unfinished export raises NeogenError naming the fix."""
    data = read_json(folder / EXPORT_MARKER, f"fix: export the run again with `neogen export RUN {folder}`")
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        raise NeogenError(f"{folder} holds an unfinished export: {EXPORT_MARKER} names no format, so the export "
                          f"stopped before it was done (fix: export the run again with `neogen export RUN {folder}`)")
    return data


# ---------------------------------------------------------------------------------------------------------- export


def export(run_dir: str | Path, out: str | Path, fmt: str = "sequence-classification",
           base_model: str | None = None) -> dict[str, Any]:
    """Write run `run_dir` as a Hugging Face model folder `out` in format `fmt`; returns the marker's content.

    `base_model` names the base model as others can load it (a Hub id or a path): required for the adapter of a
    run whose base is a GGUF file (its dequantized copy lives in neogen's cache), recorded in the model card
    otherwise. Everything that can be refused is checked before the model loads or anything is written.
    """
    from neogen.multilabel import load_codec
    from neogen.recipe import load_recipe

    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    if fmt not in FORMATS:
        raise NeogenError(f"unknown export format {fmt!r} (fix: use one of {', '.join(FORMATS)})")
    if is_export(run_dir):
        raise NeogenError(f"{run_dir} is an export, not a run (fix: export the run folder `neogen train` wrote)")
    adapter_dir = Run(run_dir).check()
    recipe = load_recipe(run_dir / Run.RECIPE_FILE)
    codec = load_codec(run_dir / Run.CODEC_FILE)
    base = check_format(fmt, recipe, codec, base_model, run_dir)
    if out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents:
        raise OutputError(f"{out} is inside the run folder {run_dir} (fix: export to a folder outside the run)")
    fix = "give an empty folder, one that does not exist, or an earlier export's folder"
    claim(out, EXPORT_MARKER, EXPORT_KIND, fix)
    with FileLock(out / EXPORT_MARKER, f"the export folder {out} (another export is writing it)"):
        clear_earlier(out)
        info = {"kind": EXPORT_KIND, "version": 1, "format": fmt, "base_model": base,
                "model_dtype": recipe.model.dtype, "precision": recipe.train.precision,
                "max_length": recipe.train.max_length, "batch_size": recipe.train.eval_batch_size,
                "run": str(run_dir.resolve())}
        try:
            files, extra = write_format(fmt, run_dir, adapter_dir, out, base)
            files += copy_run_files(run_dir, out)
            info |= extra
            write_card(out, fmt, info, recipe)
            info["files"] = sorted({*files, CARD_FILE})
            write_marker(out, info)
        except OSError as e:
            raise write_error(e, out, "the export is unfinished") from None
    logger.info("exported %s as %s into %s", run_dir, fmt, out)
    return info


def check_format(fmt: str, recipe: Recipe, codec: Any, base_model: str | None, run_dir: Path) -> str | None:
    """Refuse what the format cannot express, before any loading; the base model name to record (or None)."""
    encoding = getattr(codec, "encoding", None)
    if fmt == "sequence-classification" and codec.multi_label and encoding != "independent":
        why = ("its label probabilities are sums of a softmax over label-set tokens, not one sigmoid or softmax of "
               "a linear score layer" if encoding == "powerset" else "each label needs its own extra step (the "
               "label token appended, then a yes/no answer read), not one score layer over the text's last state")
        raise NeogenError(f"{run_dir} is a multi-label run with the {encoding} encoding, which a sequence-"
                          f"classification model cannot express: {why} (fix: export it with --as causal-lm or "
                          "--as adapter and score it with neogen, or train with multilabel.encoding=independent)")
    if fmt != "adapter" and recipe.model.quantization:
        raise NeogenError(f"{run_dir} was trained on {recipe.model.quantization} base weights, which a LoRA cannot "
                          "be merged into without changing the scores (fix: export it with --as adapter)")
    if base_model:
        return base_model
    return default_base(recipe.model.name, fmt, run_dir)


def default_base(name: str, fmt: str, run_dir: Path) -> str | None:
    """The base model as others can name it: a Hub id or a local directory outside neogen's cache."""
    from neogen.models import SMOLLM2, cache_root, pinned_name, resolve

    source = resolve(name)
    pinned = pinned_name(name)
    in_cache = Path(pinned).is_dir() and Path(cache_root()).resolve() in Path(pinned).resolve().parents
    if source.gguf_file is not None or in_cache:
        if fmt == "adapter":
            shown = ("the bundled SmolLM2-135M (a GGUF file)," if name == SMOLLM2
                     else f"{name}, a GGUF file or a copy in neogen's cache,")
            raise NeogenError(f"{run_dir}'s base model is {shown} which only neogen loads; an adapter must name a "
                              "base that others can load (fix: give --base-model with a Hub id or a folder, e.g. "
                              "--base-model HuggingFaceTB/SmolLM2-135M-Instruct for smollm2-135m; the adapter was "
                              "trained on its Q4_1 weights, so scores on the original weights differ a little)")
        return "HuggingFaceTB/SmolLM2-135M-Instruct" if name == SMOLLM2 else None
    return pinned


def clear_earlier(out: Path) -> None:
    """Remove what an earlier export into `out` wrote (as its marker lists), and mark the export unfinished."""
    try:
        earlier = json.loads((out / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = {}
    files = earlier.get("files") if isinstance(earlier, dict) else None
    for name in files if isinstance(files, list) else []:
        path = out / name
        if isinstance(name, str) and path.parent.resolve() == out.resolve() and path.is_file():
            path.unlink()
    write_marker(out, {"kind": EXPORT_KIND, "version": 1})


def write_marker(out: Path, info: dict[str, Any]) -> None:
    """The marker, written through a temporary file so that a reader never sees half of it."""
    from neogen import __version__

    temporary = out / (EXPORT_MARKER + ".tmp")
    temporary.write_text(json.dumps({**info, "neogen": __version__}, indent=2) + "\n", encoding="utf-8")
    temporary.replace(out / EXPORT_MARKER)


def copy_run_files(run_dir: Path, out: Path) -> list[str]:
    """The run's codec, recipe, data report and results beside the weights (the card is made from them)."""
    copied = []
    for name in (Run.CODEC_FILE, Run.RECIPE_FILE, Run.REPORT_FILE, Run.RESULTS_FILE):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
            copied.append(name)
    return copied


def write_format(fmt: str, run_dir: Path, adapter_dir: Path, out: Path,
                 base: str | None) -> tuple[list[str], dict[str, Any]]:
    """The format's own files; returns their names and what the marker must add for `load_export`."""
    from neogen.classify import Classifier

    if fmt == "adapter":
        return write_adapter(run_dir, adapter_dir, out, base), {}
    classifier = Classifier.load(run_dir, device="cpu", precision="fp32")  # merged, in the weights' own fp32
    files = save_scoring_files(classifier.codec, classifier.thresholds, classifier.calibration, out)
    extra: dict[str, Any] = {}
    if fmt == "causal-lm":
        classifier.model.save_pretrained(out)
        classifier.tokenizer.save_pretrained(out)
    else:
        extra = write_sequence_classification(classifier, out)
    return files + listed(out, exclude=files), extra


def save_scoring_files(codec: Any, thresholds: Any, calibration: Any, out: Path) -> list[str]:
    """The thresholds (multi-label) and temperature (calibrated single-label) the run scores with."""
    files = []
    if codec.multi_label and thresholds is not None:
        thresholds.save(out / THRESHOLDS_FILE)
        files.append(THRESHOLDS_FILE)
    if calibration is not None and not codec.multi_label:
        calibration.save(out / CALIBRATION_FILE)
        files.append(CALIBRATION_FILE)
    return files


def listed(out: Path, exclude: list[str]) -> list[str]:
    """The files now in `out`, less the marker and `exclude`: what save_pretrained wrote."""
    return sorted(p.name for p in out.iterdir() if p.is_file() and p.name not in (*exclude, EXPORT_MARKER))


def run_scoring_files(run_dir: Path, codec: Any) -> tuple[Any, Any]:
    """The thresholds and temperature a run scores with, as Classifier.load reads them (None where absent)."""
    from neogen.calibration import Temperature
    from neogen.recipe import load_recipe
    from neogen.thresholds import Thresholds

    thresholds = None
    if codec.multi_label:
        recipe = load_recipe(run_dir / Run.RECIPE_FILE)
        thresholds = (Thresholds.load(run_dir / THRESHOLDS_FILE) if (run_dir / THRESHOLDS_FILE).is_file()
                      else Thresholds.untuned(codec.labels, recipe.multilabel, recipe.data.allow_empty))
    calibration = Temperature.load(run_dir / CALIBRATION_FILE) if (run_dir / CALIBRATION_FILE).is_file() else None
    return thresholds, calibration


def write_adapter(run_dir: Path, adapter_dir: Path, out: Path, base: str | None) -> list[str]:
    """The run's peft adapter naming `base`, with the plain tokenizer and the run's thresholds or temperature."""
    from neogen.models import load_tokenizer
    from neogen.multilabel import load_codec
    from neogen.recipe import load_recipe

    if not (adapter_dir / ADAPTER_FILES[1]).is_file():
        raise NeogenError(f"{adapter_dir} holds no {ADAPTER_FILES[1]} (fix: load the run with neogen and save its "
                          "adapter as safetensors, or train it again)")
    tokenizer = load_tokenizer(load_recipe(run_dir / Run.RECIPE_FILE).model.name)
    codec = load_codec(run_dir / Run.CODEC_FILE, tokenizer)
    if base and Path(base).expanduser().is_dir():  # a base we can read must hold the tokenizer the run trained with
        try:
            codec.check_tokenizer(load_tokenizer(base))
        except NeogenError as e:
            raise NeogenError(f"--base-model {base} cannot serve this adapter: {e}") from None
    config = json.loads((adapter_dir / ADAPTER_FILES[0]).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    (out / ADAPTER_FILES[0]).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(adapter_dir / ADAPTER_FILES[1], out / ADAPTER_FILES[1])
    tokenizer.save_pretrained(out)
    files = listed(out, exclude=[])
    return sorted({*files, *save_scoring_files(codec, *run_scoring_files(run_dir, codec), out)})


# --------------------------------------------------------------------------------------- sequence classification


def write_sequence_classification(classifier: Classifier, out: Path) -> dict[str, Any]:
    """The `*ForSequenceClassification` model and the separator-appending tokenizer, checked against neogen."""
    from safetensors.torch import save_file

    model = classifier.model
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise NeogenError(f"{type(model).__name__} has no bias-free LM head whose label rows could be a score layer "
                          "(fix: export it with --as causal-lm or --as adapter)")
    sequence_classifier(classifier, head.weight).save_pretrained(out)
    untied = head.weight.data_ptr() != embeddings.weight.data_ptr()
    if untied:  # the sequence classifier keeps only the label rows; label_mass needs the whole head
        save_file({"weight": head.weight.detach().contiguous()}, str(out / LM_HEAD_FILE))
    originals = save_separator_tokenizer(classifier, out)
    difference = verify_sequence_classification(classifier, out)
    return {"tokenizer_originals": originals, "lm_head": untied, "max_abs_diff": difference}


def sequence_classifier(classifier: Classifier, head_weight: torch.Tensor) -> Any:
    """The architecture's sequence classifier with the merged model's weights and the label rows as score layer."""
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification

    lm, codec = classifier.model, classifier.codec
    config = copy.deepcopy(lm.config)
    config.architectures = None
    config.id2label = dict(enumerate(codec.labels))
    config.label2id = {label: i for i, label in enumerate(codec.labels)}
    config.problem_type = "multi_label_classification" if codec.multi_label else "single_label_classification"
    config.pad_token_id = classifier.tokenizer.pad_token_id
    try:
        seq = AutoModelForSequenceClassification.from_config(config)
    except ValueError:
        raise NeogenError(f"transformers has no sequence-classification model for {config.model_type} (fix: export "
                          "it with --as causal-lm or --as adapter)") from None
    score = getattr(seq, "score", None)
    if not isinstance(score, torch.nn.Linear) or score.bias is not None:
        raise NeogenError(f"{type(seq).__name__} has no bias-free `score` layer to hold the label rows (fix: export "
                          "it with --as causal-lm or --as adapter)")
    prefix = seq.base_model_prefix + "."
    state = {key: value for key, value in lm.state_dict().items() if key.startswith(prefix)}
    missing, unexpected = seq.load_state_dict(state, strict=False)
    if unexpected or [key for key in missing if not key.startswith("score.")]:
        raise NeogenError(f"{type(seq).__name__} does not take {type(lm).__name__}'s weights as they are (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}) (fix: export it with --as causal-lm)")
    rows = head_weight.detach()[codec.token_ids].float()  # (K, hidden): the label tokens' rows of the LM head
    if classifier.calibration is not None and not codec.multi_label:
        rows = rows / classifier.calibration.temperature  # softmax(W h / T): neogen's calibrated scores
    with torch.no_grad():
        score.weight.copy_(rows.to(score.weight.dtype))
    return seq.eval()


def strip_pattern(separator: str) -> str:
    """An Oniguruma pattern of the separator less its trailing whitespace at the end of the text (strip_text)."""
    end = separator.rstrip()
    return "".join(c if c.isalnum() else f"\\x{{{ord(c):x}}}" for c in end) + r"\z"


def save_separator_tokenizer(classifier: Classifier, out: Path) -> dict[str, Any]:
    """Save the tokenizer so that it prepares a raw text as neogen's PromptEncoder does; returns the parts replaced.

    A normalizer strips the text (and a trailing separator) as `strip_text` does, and a post-processor appends the
    separator's ids after the text's, tokenized apart. `model_max_length` is the run's max_length, so truncation
    (`truncation=True`) cuts the text and keeps the separator, as neogen does.
    """
    from tokenizers import Regex, normalizers, processors
    from transformers import AutoTokenizer

    classifier.tokenizer.save_pretrained(out)
    if not (out / "tokenizer.json").is_file():
        raise NeogenError("the run's tokenizer has no tokenizer.json (a slow tokenizer), so it cannot append the "
                          "separator itself (fix: export it with --as causal-lm or --as adapter)")
    saved = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    originals = {"normalizer": saved.get("normalizer"), "post_processor": saved.get("post_processor")}
    tokenizer = AutoTokenizer.from_pretrained(out)
    backend = tokenizer.backend_tokenizer
    separator = classifier.codec.separator
    ids = classifier.encoder.separator_ids
    special = {"id": SEPARATOR_TOKEN, "ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)}
    template = processors.TemplateProcessing(single=f"$A {SEPARATOR_TOKEN}", pair=f"$A $B:1 {SEPARATOR_TOKEN}:1",
                                             special_tokens=[special])
    backend.post_processor = template if backend.post_processor is None else processors.Sequence(
        [backend.post_processor, template])
    strip = [normalizers.Strip()]
    if separator.strip():
        strip += [normalizers.Replace(Regex(strip_pattern(separator)), ""), normalizers.Strip()]
    backend.normalizer = normalizers.Sequence(strip if backend.normalizer is None else [*strip, backend.normalizer])
    tokenizer.model_max_length = classifier.encoder.max_length
    tokenizer.padding_side = "right"  # positions from 0, as neogen scores: the model reads the last non-pad token
    tokenizer.truncation_side = "right"
    tokenizer.save_pretrained(out)
    # The generic class reads the whole tokenizer.json; a model's own class (GPT2Tokenizer) rebuilds its normalizer.
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    return originals


def verify_sequence_classification(classifier: Classifier, out: Path) -> float:
    """Reload the export as any user would and compare ids and probabilities with neogen's on the probe texts."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = [*PROBES, *classifier.codec.labels]
    for text, want, have in zip(texts, classifier.encoder(texts), tokenizer(texts, truncation=True)["input_ids"],
                                strict=True):
        if list(have) != list(want):
            raise NeogenError(f"the exported tokenizer prepares {text[:60]!r} as {list(have)[:12]}..., neogen as "
                              f"{want[:12]}... (fix: export it with --as causal-lm or --as adapter)")
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits.double()
    probs = torch.sigmoid(logits) if classifier.codec.multi_label else torch.softmax(logits, -1)
    difference = float((probs.numpy() - classifier.predict_proba(texts).probs).__abs__().max())
    if difference > TOLERANCE:
        raise NeogenError(f"the exported {type(model).__name__} scores differ from neogen's by {difference:.2e} "
                          f"(more than {TOLERANCE:g}) on the probe texts: the architecture computes its logits "
                          "otherwise (fix: export it with --as causal-lm or --as adapter)")
    logger.info("exported head matches neogen within %.1e on %d probe texts", difference, len(texts))
    return difference


# ------------------------------------------------------------------------------------------------------- loading


def load_export(folder: str | Path, device: str | None = None, precision: str | None = None,
                batch_size: int | None = None, max_batch_tokens: int | None = None) -> Classifier:
    """neogen's classifier from an export of any format, scoring as the run did (Classifier.load's hook)."""
    import torch
    from peft import PeftModel

    from neogen.classify import Classifier
    from neogen.models import cast_for_inference, load_model, load_tokenizer, resolve_precision
    from neogen.multilabel import load_codec

    folder = Path(folder).expanduser()
    info = read_marker(folder)
    dev = torch.device(device) if device else None
    if info["format"] == "adapter":
        if not info.get("base_model"):
            raise NeogenError(f"{folder}'s adapter names no base model (fix: export the run again with --base-model)")
        model = load_model(info["base_model"], info["model_dtype"], None, dev)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
        tokenizer = load_tokenizer(str(folder))
    else:  # a sequence classifier's checkpoint holds the causal LM's body, and its head where it is not tied
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the sequence classifier's unused score layer is expected: no load report
        try:
            model = load_model(str(folder), info["model_dtype"], None, dev)
        finally:
            hf_logging.set_verbosity(verbosity)
        if info.get("lm_head"):
            load_lm_head(model, folder / LM_HEAD_FILE)
        tokenizer = load_tokenizer(str(folder))
        if info["format"] == "sequence-classification":
            restore_tokenizer(tokenizer, folder, info["tokenizer_originals"])
    codec = load_codec(folder / Run.CODEC_FILE, tokenizer)
    thresholds, calibration = run_scoring_files(folder, codec)
    precision = resolve_precision(precision or info["precision"], next(model.parameters()).device)
    cast_for_inference(model, precision)
    return Classifier(model, tokenizer, codec, max_length=info["max_length"], precision=precision,
                      batch_size=batch_size or info["batch_size"], max_batch_tokens=max_batch_tokens,
                      thresholds=thresholds, calibration=calibration)


def load_lm_head(model: Any, path: Path) -> None:
    """Put the saved LM head of an untied model back (from_pretrained left it freshly initialised)."""
    import torch
    from safetensors.torch import load_file

    if not path.is_file():
        raise NeogenError(f"{path} is missing; the model's LM head is not tied to its embeddings and lives there "
                          "(fix: copy the whole export folder, or export the run again)")
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.copy_(load_file(str(path))["weight"].to(head.weight.dtype))


def restore_tokenizer(tokenizer: Any, folder: Path, originals: dict[str, Any]) -> None:
    """Undo the export's normalizer and post-processor: neogen strips texts and appends the separator itself."""
    from tokenizers import Tokenizer

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    data.update(originals)
    plain = Tokenizer.from_str(json.dumps(data))
    tokenizer.backend_tokenizer.normalizer = plain.normalizer
    tokenizer.backend_tokenizer.post_processor = plain.post_processor


# ---------------------------------------------------------------------------------------------------- model card

USAGE = {
    "sequence-classification": '''```python
from transformers import pipeline

classifier = pipeline("text-classification", model="{out}", top_k=None)
classifier(["{example}"], truncation=True)   # every label with its {kind}
```

The tokenizer strips each text and appends the separator itself, so raw texts go in as they are.''',
    "causal-lm": '''```python
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{out}")
model = AutoModelForCausalLM.from_pretrained("{out}")
ids = tokenizer("{example}", add_special_tokens=False)["input_ids"] + {separator_ids}   # text, then separator
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0, -1]
print(logits[{token_ids}].softmax(-1))   # over the labels' completion tokens, in the order below
```

`generate(max_new_tokens=1)` on the same ids yields the label's completion token. Tokenize the stripped text and the
separator apart, as above: tokenized together, the text's last characters can merge with the separator.''',
    "adapter": '''```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("{out}")   # loads the base model named in adapter_config.json
tokenizer = AutoTokenizer.from_pretrained("{out}")
```

Then score as with the merged causal LM: the next-token logits after `text ids + {separator_ids}`, read at the label
tokens {token_ids}.''',
}


def label_table(codec: Any, thresholds: Any) -> str:
    """Markdown rows: each label, its completion token and id (and its decision threshold, multi-label)."""
    classes = codec.classes if codec.multi_label else codec
    cutoffs = thresholds.cutoffs() if thresholds is not None else None
    head = "| label | completion token | token id |" + (" threshold |" if cutoffs is not None else "")
    rows = [head, "|---|---|---|" + ("---|" if cutoffs is not None else "")]
    for i, (label, completion, token_id) in enumerate(zip(codec.labels, classes.completions, classes.token_ids,
                                                          strict=True)):
        cut = f" {cutoffs[i]:.3f} |" if cutoffs is not None else ""
        rows.append(f"| {label.replace('|', '&#124;')} | `{completion!r}` | {token_id} |{cut}")
    return "\n".join(rows)


def metrics_table(results: dict[str, Any]) -> str:
    """Markdown rows of the numeric metrics of each evaluated split in results.json."""
    splits = {name: row for name in ("train", "valid", "test") if isinstance(row := results.get(name), dict)}
    keys = [key for key in next(iter(splits.values()), {}) if isinstance(next(iter(splits.values()))[key],
                                                                         (int, float))]
    if not splits or not keys:
        return "No evaluation was recorded."
    rows = ["| split | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, row in splits.items():
        cells = [f"{row.get(k):.4f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def data_summary(report: dict[str, Any]) -> str:
    """The training data report in a few lines: rows per split, classes, prompt lengths."""
    rows = report.get("rows", {})
    classes = report.get("classes") or {}
    tokens = report.get("prompt_tokens") or {}
    shown = ", ".join(f"{label} {count}" for label, count in list(classes.items())[:30])
    more = f" and {len(classes) - 30} more" if len(classes) > 30 else ""
    return (f"- rows: {', '.join(f'{k} {v}' for k, v in rows.items())}\n"
            f"- classes (all splits): {shown}{more}\n"
            f"- prompt tokens: median {tokens.get('p50')}, 95th percentile {tokens.get('p95')}, max {tokens.get('max')}"
            f"; {tokens.get('over_max_length', 0)} over max_length {tokens.get('max_length')}")


def limitations(fmt: str, info: dict[str, Any], calibration: Any, multi_label: bool) -> str:
    """What the exported model does not do as neogen does, said plainly."""
    items = [f"Texts are cut to {info['max_length']} tokens with the separator (the text is cut, never the "
             "separator)" + (": pass `truncation=True`, as above, or longer texts score differently or fail."
                             if fmt == "sequence-classification" else ".")]
    if fmt == "sequence-classification":
        items += ["`label_mass` (the probability the free model puts on any label token, low for texts unlike the "
                  "training data) is not part of a classification head's output; `neogen classify` or "
                  "`neogen serve` on this folder give it" + (" (they read the full LM head from "
                                                            f"`{LM_HEAD_FILE}`)." if info.get("lm_head") else "."),
                  "The tokenizer strips surrounding whitespace as Unicode defines it; Python's `str.strip`, which "
                  "neogen uses, also strips the control characters U+001C to U+001F, so a text that begins or ends "
                  "with them gets other ids. Whitespace next to a special token inside a text (such as "
                  "`<|endoftext|>`) is stripped too, which neogen does not do."]
    else:
        items.append("`label_mass` is the exp-sum of the label tokens' log-probabilities in the full next-token "
                     "distribution: near 1 for texts like the training data, low for others.")
    if calibration is not None:
        how = (", folded into the score layer (its rows are the label rows divided by T), so the pipeline's softmax "
               "is neogen's calibrated score." if fmt == "sequence-classification" else
               " (`calibration.json`): divide the label logits by T before the softmax.")
        items.append(f"Scores are calibrated with the softmax temperature T={calibration.temperature:.4f} fitted on "
                     f"{calibration.split}{how}")
    if multi_label:
        items.append("Multi-label: each label's probability is the sigmoid of its token's logit; the decision "
                     "thresholds tuned on the validation split are in `thresholds.json` and the table above (a "
                     "pipeline does not apply them).")
    items.append("neogen scores in bf16 where the hardware computes it natively; scores then differ from fp32 by "
                 "bf16 rounding (about 1e-3), labels rarely.")
    return "\n".join(f"- {item}" for item in items)


def write_card(out: Path, fmt: str, info: dict[str, Any], recipe: Recipe) -> None:
    """The model card, README.md, with huggingface_hub's ModelCard: metadata, labels, usage, metrics, limitations."""
    from huggingface_hub import ModelCard, ModelCardData

    from neogen.multilabel import load_codec

    codec = load_codec(out / Run.CODEC_FILE)
    classes = codec.classes if codec.multi_label else codec
    base = info.get("base_model")
    hub_base = base if base and SAFE_NAME.fullmatch(base) and not Path(base).exists() else None
    tags = ["neogen", "lora", "text-classification", *(["multi-label"] if codec.multi_label else [])]
    data = ModelCardData(base_model=hub_base, library_name="peft" if fmt == "adapter" else "transformers",
                         pipeline_tag="text-classification" if fmt == "sequence-classification" else "text-generation",
                         tags=tags)
    usage = USAGE[fmt].format(out=out, example=PROBES[0], separator_ids=classes.separator_ids,
                              token_ids=classes.token_ids,
                              kind="probability" if codec.multi_label else "score (they sum to 1)")
    body = card_body(out, fmt, info, recipe, codec, usage, hub_base)
    ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").save(out / CARD_FILE)


def card_body(out: Path, fmt: str, info: dict[str, Any], recipe: Recipe, codec: Any, usage: str,
              hub_base: str | None) -> str:
    """The model card's Markdown below its metadata."""
    thresholds, calibration = run_scoring_files(out, codec)
    base = info.get("base_model")
    results = Run(out).results()
    report = (read_json(out / Run.REPORT_FILE, "fix: export the run again")
              if (out / Run.REPORT_FILE).is_file() else {})
    scoring = (f"Multi-label ({codec.encoding} encoding): each label's probability is the sigmoid of its token's "
               "logit after the separator." if codec.multi_label else "Class scores are the softmax of the label "
               "tokens' logits after the separator; the label is their argmax.")
    described = {"sequence-classification": "a sequence-classification model whose score layer is the LM head's "
                 "rows of the label tokens", "causal-lm": "the merged causal LM",
                 "adapter": f"a LoRA adapter for `{base}`"}[fmt]
    return f"""# {out.name}

A text classifier fine-tuned with neogen from `{recipe.model.name}`{f" ({hub_base})" if hub_base and
hub_base != recipe.model.name else ""}: LoRA on a causal LM, where each label is one completion token after the
separator `{codec.separator!r}`. Exported as {described}.

## Labels

{label_table(codec, thresholds if codec.multi_label else None)}

{scoring}

## How to use

{usage}

With neogen installed, `neogen classify {out} "some text"`, `neogen serve {out}` and
`neogen.Classifier.load("{out}")` score it as the run did, `label_mass` included.

## Evaluation

{metrics_table(results)}

## Training data

{data_summary(report)}

## Training recipe

```yaml
{(out / Run.RECIPE_FILE).read_text(encoding="utf-8").strip()}
```

## Limitations

{limitations(fmt, info, calibration, codec.multi_label)}
"""

"""The `neogen` command: prepare, train, classify, score, eval, export, serve."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from neogen.errors import NeogenError

logger = logging.getLogger("neogen")


def cmd_prepare(args: argparse.Namespace) -> None:
    from neogen.codec import check_labels, fit_codec
    from neogen.models import load_tokenizer
    from neogen.prepare import check_out_dir, clean, data_report, format_report, split, write_prepared
    from neogen.prompt import PromptEncoder
    from neogen.read import load_examples
    from neogen.recipe import DataConfig, MultiLabelConfig, Recipe

    if args.valid_ratio + args.test_ratio >= 1:
        raise NeogenError(f"--valid-ratio {args.valid_ratio} + --test-ratio {args.test_ratio} leave no rows for "
                          "training; give them a sum below 1")
    check_out_dir(Path(args.out), args.input)  # before any work: never over the input or a file neogen did not write
    examples, choice = load_examples(args.input, args.text_column, args.label_column, multi_label=args.multi_label,
                                     label_separator=args.label_separator, allow_empty=args.allow_empty)
    examples, cleaning = clean(examples)
    splits = split(examples, args.valid_ratio, args.test_ratio, args.shuffle, args.stratify, args.seed)
    tokenizer = load_tokenizer(args.model)
    words = dict(args.label_word or [])
    if choice.multi_label and words:
        # Training re-reads single-label completions only, so words here would be silently lost on label sets.
        raise NeogenError("--label-word is for single-label data; for label sets give the words at training time, "
                          "data.label_words={...} in the recipe")
    # The codec comes from the training split alone and held-out labels are checked, as training does on these
    # files: prepare refuses (naming the label, split and fix) what training would refuse, before writing anything.
    recipe = Recipe(data=DataConfig(allow_empty=args.allow_empty, label_words=words),
                    multilabel=MultiLabelConfig(encoding=args.encoding))
    codec = fit_codec(splits["train"], tokenizer, recipe)
    check_labels(splits, codec)
    report = data_report(splits, codec, PromptEncoder(tokenizer, args.max_length), choice, cleaning)
    report["tokenizer"] = args.model
    written = write_prepared(Path(args.out), splits, codec, report, args.input)
    print(format_report(report))
    print("wrote " + ", ".join(str(p) for p in written))


def cmd_train(args: argparse.Namespace) -> None:
    from neogen import distributed
    from neogen.recipe import load_recipe, recipe_help, recipe_reference_markdown
    from neogen.train import fine_tune

    if args.help_recipe or args.markdown:
        print(recipe_reference_markdown() if args.markdown else recipe_help())
        return
    if args.recipe is None:
        raise NeogenError("give a recipe file (recipes/quickstart.yaml) or '-' for the defaults")
    recipe = load_recipe(None if args.recipe == "-" else args.recipe, args.overrides)
    run_dir, results = fine_tune(recipe, resume=args.resume, progress=not args.quiet)
    if not distributed.world().is_main:
        return  # under torchrun, rank 0 evaluates and writes results.json, and prints them
    print(json.dumps(results, indent=2))
    print(f"run directory: {run_dir}")


def cmd_classify(args: argparse.Namespace) -> None:
    from neogen.classify import Classifier

    classifier = Classifier.load(args.run_dir)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text, row in zip(texts, classifier.scores(texts), strict=True):
        print(json.dumps({"text": text, **row}, ensure_ascii=False))


def cmd_score(args: argparse.Namespace) -> None:
    from neogen import distributed
    from neogen.classify import Classifier
    from neogen.ray import check_cluster_options, score_command  # Ray itself is imported only under --ray
    from neogen.score import check_options, output_lock, score_jsonl

    check_cluster_options(args)
    if args.ray:
        score_command(args)
        return
    world = distributed.world()  # under torchrun: this process's rank, scoring every WORLD_SIZE-th chunk
    # Before minutes of model loading: the options, the files, and a lock that proves the output can be written.
    check_options(args.input, args.output, args.rejects, args.resume, world)
    if world.distributed:
        distributed.exit_on_sigterm()
    distributed.init(world)
    with contextlib.ExitStack() as stack:
        stack.callback(distributed.shutdown, world)
        stack.enter_context(output_lock(args.output, world))
        device = str(distributed.device(world)) if world.distributed else None
        classifier = Classifier.load(args.run_dir, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                                     device=device)
        stats = score_jsonl(classifier, args.input, args.output, text_field=args.text_field, rejects=args.rejects,
                            chunk_size=args.chunk_size, progress=not args.no_progress, resume=args.resume,
                            run_dir=args.run_dir, world=world)
    if world.is_main:
        logger.info("scored %d of %d lines%s", stats.scored, stats.read,
                    f"; {stats.rejected} rejected into {args.rejects}" if stats.rejected else "")


def cmd_eval(args: argparse.Namespace) -> None:
    from neogen.classify import Classifier
    from neogen.recipe import Recipe

    classifier = Classifier.load(args.run_dir)
    task, run = classifier.task, classifier.run
    refit = "--calibrate" if args.calibrate else "--tune-thresholds" if args.tune_thresholds else None
    if refit and refit != task.decision_option:
        kinds = ("single-label", "multi-label")[::-1 if task.multi_label else 1]
        raise NeogenError(f"{refit} is for {kinds[1]} runs; a {kinds[0]} run's decision is fitted with "
                          f"{task.decision_option}")
    if run is None and (refit or not args.out):
        raise NeogenError(f"{args.run_dir} is an export, which holds no run folder to write into (fix: give --out "
                          f"for the metrics; fit {task.decision_option} on the run it was exported from)")
    recipe = run.recipe() if run is not None else Recipe()
    examples = task.read_labeled(args.data, *_eval_columns(args), args.label_separator or recipe.data.label_separator)
    raw = classifier.predict_prompts(classifier.encoder([ex.text for ex in examples]), progress=True).probs
    if refit:
        decision = task.fit_decision(examples, raw, recipe, split=str(args.data))
        path = run.save_decision(decision)
        classifier.set_decision(decision)
        print(f"{task.decision_done} on {args.data} and saved to {path}; the metrics below are on the same rows, "
              "so optimistic")
    out = Path(args.out) if args.out else run.eval_dir(Path(args.data).stem)
    metrics = classifier.evaluate(examples, out, {"data": str(args.data)},
                                  probs=task.calibrated(raw, classifier.calibration))
    print(task.format(metrics))
    print(f"wrote {out}/metrics.json, confusion_matrix.png, roc_curves.png")


def _eval_columns(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The text and label columns to evaluate: as given, else the run's own (its recipe's data.text_column and
    label_column) where the file has them, so a test file of the training file's shape needs no flags and is read
    as training read it; else None, detected."""
    if args.text_column or args.label_column:
        return args.text_column, args.label_column
    from neogen.read import LABEL_JOIN, read_records
    from neogen.run import Run

    if not Run(args.run_dir).recipe_file.is_file():  # an export: its columns are detected
        return None, None
    data = Run(args.run_dir).recipe().data
    first = next(iter(read_records(args.data)), None)
    columns = set(first[1]) if first else set()
    wanted = [data.text_column, *(data.label_column.split(LABEL_JOIN) if data.label_column else [None])]
    if any(wanted) and all(c is None or c.strip() in columns for c in wanted):
        return data.text_column, data.label_column
    return None, None


def cmd_export(args: argparse.Namespace) -> None:
    from neogen.export import export

    info = export(args.run_dir, args.out, args.format, base_model=args.base_model)
    print(f"exported {args.run_dir} as {info['format']} into {args.out}: {', '.join(info['files'])}")


def cmd_serve(args: argparse.Namespace) -> None:
    from neogen.classify import Classifier
    from neogen.serve import ServeOptions, bind, serve

    options = ServeOptions(host=args.host, port=args.port, name=args.name or Path(args.model).expanduser().name,
                           max_wait_ms=args.max_wait_ms, max_batch_texts=args.max_batch_texts,
                           max_queue=args.max_queue, max_request_texts=args.max_request_texts,
                           max_request_bytes=args.max_request_bytes, access_log=args.access_log)
    if options.max_request_texts > options.max_queue:
        raise NeogenError(f"--max-request-texts {options.max_request_texts} exceeds --max-queue {options.max_queue}: "
                          "such a request could never be queued (fix: raise --max-queue or lower the other)")
    sock = bind(args.host, args.port)  # before minutes of model loading: a taken port is refused at once
    classifier = Classifier.load(args.model, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens)
    classifier.predict_proba(["warm up"])  # the first pass's one-off costs, before the first client pays them
    serve(classifier, options, sock, ready=lambda url: print(f"serving {options.name} at {url}", file=sys.stderr,
                                                               flush=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neogen", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    _prepare_command(sub)
    _train_command(sub)
    _classify_command(sub)
    _score_command(sub)
    _eval_command(sub)
    _export_command(sub)
    _serve_command(sub)
    return parser


def _prepare_command(sub: Any) -> None:
    p = sub.add_parser("prepare", help="clean, split and report on a labeled file; write prompt/completion JSONL")
    p.add_argument("input", help=".csv, .tsv, .jsonl or .parquet with a text and a label column")
    p.add_argument("--out", required=True, help="output folder for train/valid/test.jsonl, labels.json, report.json")
    p.add_argument("--text-column", help="text column (detected when omitted)")
    p.add_argument("--label-column", help="label column (detected when omitted)")
    p.add_argument("--valid-ratio", type=_ratio, default=0.0, help="share held out for validation (default 0)")
    p.add_argument("--test-ratio", type=_ratio, default=0.2, help="share held out for testing (default 0.2)")
    p.add_argument("--shuffle", action="store_true", help="shuffle before splitting (default: last rows are test)")
    p.add_argument("--stratify", action="store_true", help="keep class proportions in every split")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    p.add_argument("--model", default="smollm2-135m", help="base model whose tokenizer counts tokens and labels")
    p.add_argument("--max-length", type=int, default=256, help="prompt token budget used in the report")
    p.add_argument("--label-word", action="append", type=_label_word, metavar="LABEL=WORD",
                   help="completion word of a label, one token (repeat per label), e.g. --label-word NUM=number; "
                        "training on the prepared files keeps it")
    _multilabel_options(p)
    p.add_argument("--allow-empty", action="store_true", help="multi-label: rows may carry no label")
    p.add_argument("--encoding", default="independent", choices=["independent", "powerset", "yes_no"],
                   help="multi-label encoding whose completions and label sets are reported (default independent)")
    p.set_defaults(func=cmd_prepare)


def _train_command(sub: Any) -> None:
    p = sub.add_parser("train", help="fine-tune with LoRA from a recipe; dotted overrides follow the recipe")
    p.add_argument("recipe", nargs="?", help="recipe YAML ('-' for the built-in defaults)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.epochs=2 data.train=my.csv")
    p.add_argument("--help-recipe", action="store_true", help="list every recipe key with its default and meaning")
    p.add_argument("--markdown", action="store_true", help="with --help-recipe: as Markdown (docs/recipe.md)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the recipe's output_dir from its newest checkpoint (optimizer, schedule "
                        "and data position included); the recipe must match the run's recipe.yaml, except "
                        "train.epochs (raise it to train longer) and a few keys that do not change the model")
    p.set_defaults(func=cmd_train)


def _classify_command(sub: Any) -> None:
    p = sub.add_parser("classify", help="classify texts given as arguments (or one per stdin line)")
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="*")
    p.set_defaults(func=cmd_classify)


def _score_command(sub: Any) -> None:
    p = sub.add_parser("score", help="add label and scores to every line of a JSONL file ('-': stdin/stdout)")
    p.add_argument("run_dir")
    p.add_argument("input", help="JSONL to score ('-': stdin)")
    p.add_argument("output", help="JSONL to write ('-': stdout); under torchrun, every process scores a share of "
                   "the chunks and rank 0 merges them here")
    p.add_argument("--text-field", help="field holding the text (default: text, else an OpenAI-style prompt; a field "
                   "named here is never swapped for another)")
    p.add_argument("--rejects", help="write malformed lines here and go on, instead of stopping at the first")
    p.add_argument("--batch-size", type=_positive, default=None, help="texts per forward pass (default: the recipe's)")
    p.add_argument("--max-batch-tokens", type=_positive, default=None,
                   help="padded tokens per forward pass at most (rows x longest prompt), for long texts whose batches "
                        "would not fit in memory; a longer prompt is scored alone (default: no cap)")
    p.add_argument("--chunk-size", type=_positive, default=1024, help="lines read, scored and written at a time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="go on where an interrupted run into OUTPUT stopped (from OUTPUT.progress.json)")
    p.add_argument("--ray", action="store_true", help="score on a Ray cluster (pip install 'neogen[ray]'): INPUT is "
                   "a JSONL or Parquet file, a folder or a glob; OUTPUT a folder of part files and manifest.json")
    p.add_argument("--address", help="--ray: the cluster's HOST:PORT, as `ray start --head` prints it (default: "
                   "RAY_ADDRESS, else a cluster started on this machine, else a new local one)")
    p.add_argument("--actors", type=_positive, help="--ray: model replicas (default: one per GPU, or without GPUs one "
                   "per node of the smallest node's size)")
    p.add_argument("--gpus-per-actor", type=float, help="--ray: GPUs per replica; 0.5 puts two on a GPU (default: 1 "
                   "where the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-actor", type=float, help="--ray: CPUs per replica, its torch threads (default: 1 with "
                   "GPUs; without, a node's CPUs, or the cluster's CPUs shared among --actors)")
    p.add_argument("--single-file", action="store_true", help="--ray: write OUTPUT as one file, in input order")
    p.set_defaults(func=cmd_score)


def _eval_command(sub: Any) -> None:
    p = sub.add_parser("eval", help="metrics.json and plots for a run on a labeled file")
    p.add_argument("run_dir")
    p.add_argument("data", help="labeled .csv/.tsv/.jsonl/.parquet (prepared test.jsonl works)")
    p.add_argument("--out", help="output folder (default RUN_DIR/eval/<data name>)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--label-separator", help="multi-label runs: the string joining labels in one cell (detected)")
    p.add_argument("--tune-thresholds", action="store_true",
                   help="multi-label runs: tune the decision thresholds on this (validation) file and save them")
    p.add_argument("--calibrate", action="store_true",
                   help="single-label runs: fit the softmax temperature on this (validation) file and save it")
    p.set_defaults(func=cmd_eval)


def _export_command(sub: Any) -> None:
    p = sub.add_parser("export", help="write a run as a Hugging Face model folder (with a model card)")
    p.add_argument("run_dir")
    p.add_argument("out", help="folder to write: empty, new, or an earlier export (whose files it replaces)")
    p.add_argument("--as", dest="format", default="sequence-classification",
                   choices=["sequence-classification", "causal-lm", "adapter"],
                   help="sequence-classification (default: pipeline('text-classification') loads it), causal-lm "
                        "(the merged model) or adapter (the LoRA adapter for AutoPeftModelForCausalLM)")
    p.add_argument("--base-model", help="the base model as others load it, a Hub id or a folder (needed for the "
                   "adapter of a GGUF base such as smollm2-135m; named in the model card)")
    p.set_defaults(func=cmd_export)


def _serve_command(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a run or an export over HTTP: /v1/classify, /v1/completions, a form at /")
    p.add_argument("model", help="a run folder or an export folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--name", help="the model id clients see (default: the folder's name)")
    p.add_argument("--batch-size", type=_positive, default=None, help="texts per forward pass (default: the recipe's)")
    p.add_argument("--max-batch-tokens", type=_positive, default=None, help="padded tokens per forward pass at most")
    p.add_argument("--max-wait-ms", type=float, default=20.0,
                   help="how long the server waits for requests to score together; a quarter of it without a new "
                        "request ends the wait (default 20)")
    p.add_argument("--max-batch-texts", type=_positive, default=None,
                   help="texts scored in one call at most (default: 4 x the batch size)")
    p.add_argument("--max-queue", type=_positive, default=1024,
                   help="texts waiting at most; beyond it requests get 503 with Retry-After (default 1024)")
    p.add_argument("--max-request-texts", type=_positive, default=256, help="texts per request at most (default 256)")
    p.add_argument("--max-request-bytes", type=_positive, default=1 << 20,
                   help="bytes per request body at most (default 1 MiB)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


def _label_word(value: str) -> tuple[str, str]:
    label, sep, word = value.partition("=")
    if not sep or not label.strip() or not word.strip():
        raise argparse.ArgumentTypeError(f"{value!r}: expected LABEL=WORD, e.g. NUM=number")
    return label.strip(), word.strip()


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number of at least 1, e.g. 64")
    return number


def _ratio(value: str) -> float:
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if not 0 <= ratio < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a share in [0, 1), e.g. 0.2")
    return ratio


def _multilabel_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--multi-label", dest="multi_label", action="store_const", const=True, default=None,
                       help="rows carry label sets (detected when neither flag is given)")
    group.add_argument("--single-label", dest="multi_label", action="store_const", const=False,
                       help="one label per row, even where a label looks like a joined set")
    p.add_argument("--label-separator", help="multi-label: the string joining labels in one cell (detected)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `train RECIPE --resume key=value` keeps overrides that follow a flag."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and not any(e.startswith("-") for e in extra):
        args.overrides += extra  # argparse ends the overrides list at the first flag
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if args.quiet:
            hf_logging.disable_progress_bar()  # "Loading weights" bars; -q leaves warnings and errors only
        # peft 0.21 asks transformers >= 5.24 a deprecated question at every adapter load: the user can do nothing
        # about it, so the command does not show it (library callers still see it).
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        args.func(args)
    except NeogenError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # `neogen score RUN in.jsonl - | head`: the reader has what it wanted. Point stdout at /dev/null so that
        # Python's flush at exit does not raise a second time, and exit as a process killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as e:  # a write the commands did not foresee: still one line naming the path, never a traceback
        from neogen.folders import write_error

        error = write_error(e, e.filename or "output")
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

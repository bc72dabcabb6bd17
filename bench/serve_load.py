"""neogen serve under load, against offline scoring of the same texts in the same run; and its page in Chromium.

serve-load  A run folder of SmolLM2-135M with a fresh LoRA adapter (zero update: speed does not depend on training)
            and the TREC labels is scored offline by `Classifier.predict_proba` on all `rows` texts at once (in a
            child process, best of `repeats`), then served by `neogen serve` on a free port of 127.0.0.1 and loaded
            by 1, 8 and 64 concurrent clients, each sending one text per request (POST /v1/classify) over a
            keep-alive connection, until the texts run out or `max_seconds` pass. Reported per level: requests per
            second, p50/p99 latency, and the share of the offline rate; the served labels are compared with the
            offline ones. The clients are a few lines of asyncio over raw sockets, so that the load generator
            takes little of the CPU the server runs on.
serve-page  The same kind of run served, and its form at `/` opened by headless Chromium (Debian's `chromium`) with a
            text in the URL: the page classifies it, and the DOM Chromium dumps must hold the label and a bar per
            label with the percentages /v1/classify gives; a screenshot is saved to look at.

    python -m bench run serve-load                                   # SmolLM2-135M, bf16, 512 TREC questions
    python -m bench run serve-load --out /tmp/smoke rows=64 clients=1,8 model=gpt-neo-125m-random
    python -m bench run serve-page --out /tmp/smoke                  # then look at the screenshot it names
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import ROOT, data_path, materialize_model, read_trec

START_TIMEOUT = 600  # seconds for the server to load the model: a hang guard
REQUEST_TIMEOUT = 120


def make_run(folder: Path, model: str, labels: list[str], precision: str, batch_size: int, max_length: int) -> Path:
    """A run folder neogen loads: the recipe, the label codec and a fresh LoRA adapter (B = 0: the base model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from neogen.labels import LabelCodec
    from neogen.models import load_model, load_tokenizer, lora_targets
    from neogen.recipe import Recipe

    name = materialize_model(model)
    recipe = Recipe.from_dict({"model": {"name": name}, "output_dir": str(folder), "data": {"train": "unused.csv"},
                               "train": {"precision": precision, "eval_batch_size": batch_size,
                                         "max_length": max_length}})
    folder.mkdir(parents=True, exist_ok=True)
    recipe.save(folder / "recipe.yaml")
    tokenizer = load_tokenizer(name)
    LabelCodec.fit(labels, tokenizer).save(folder / "labels.json")
    base = load_model(name, "auto", None, torch.device("cpu"))
    config = LoraConfig(r=16, lora_alpha=32, target_modules=lora_targets(base), task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(folder / "adapter")
    return folder


def offline(payload: dict[str, Any]) -> dict[str, Any]:
    """In a child process: predict_proba on all texts at once, best of `repeats`; ex/s and the labels."""
    from neogen.classify import Classifier

    classifier = Classifier.load(payload["run"])
    texts = payload["texts"]
    classifier.predict_proba(texts[:8])
    runs = []
    for _ in range(payload["repeats"]):
        start = time.perf_counter()
        probs = classifier.predict_proba(texts).probs
        runs.append(time.perf_counter() - start)
    labels = [classifier.labels[k] for k in probs.argmax(1)]
    return {"wall_s": min(runs), "runs_wall_s": runs, "examples_per_s": len(texts) / min(runs), "labels": labels,
            "precision": classifier.precision, "batch_size": classifier.batch_size}


class Server:
    """`neogen serve RUN --port 0` in its own process; its URL once it answers."""

    def __init__(self, run: Path, log: Path, *options: str) -> None:
        self.log = log
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "neogen.cli", "serve", str(run), "--port", "0",
                                          *options], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            found = re.search(r"serving \S+ at http://(127\.0\.0\.1):(\d+)", log.read_text(errors="replace"))
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"neogen serve did not start:\n{log.read_text(errors='replace')[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> int | None:
        """SIGTERM and wait (a kill only if it hangs); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
               body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a keep-alive connection; the status and the body."""
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    return status, await reader.readexactly(length)


async def load_level(host: str, port: int, texts: list[str], clients: int, max_seconds: float) -> dict[str, Any]:
    """`clients` connections sending one text per request until the texts run out or `max_seconds` pass."""
    bodies = [json.dumps({"text": t}).encode() for t in texts]
    latencies: list[float] = []
    labels: dict[int, str] = {}
    failures = 0
    next_index = 0
    stop_at = time.perf_counter() + max_seconds

    async def client() -> None:
        nonlocal next_index, failures
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(bodies) and time.perf_counter() < stop_at:
                i, next_index = next_index, next_index + 1
                start = time.perf_counter()
                status, answer = await asyncio.wait_for(post(reader, writer, "/v1/classify", bodies[i]),
                                                        REQUEST_TIMEOUT)
                latencies.append(time.perf_counter() - start)
                if status == 200:
                    labels[i] = json.loads(answer)["label"]
                else:
                    failures += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "failures": failures, "wall_s": wall,
            "requests_per_s": len(latencies) / wall, "p50_ms": 1000 * percentile(ordered, 0.50),
            "p99_ms": 1000 * percentile(ordered, 0.99), "mean_ms": 1000 * sum(ordered) / len(ordered),
            "labels": labels}


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def run_folder(payload: dict[str, Any]) -> str:
    """In a child process (torch stays out of the load generator's): make_run with the payload's settings."""
    return str(make_run(Path(payload["folder"]), payload["model"], payload["labels"], payload["precision"],
                        payload["batch_size"], payload["max_length"]))


def prepared(params: dict[str, Any], tmp: Path) -> tuple[Path, list[str]]:
    """The run folder and the texts of an experiment."""
    from .common import call_in_process

    texts, gold = read_trec(data_path(params["data"]))
    run = call_in_process("serve_load:run_folder", {"folder": str(tmp / "run"), "model": params["model"],
                                                    "labels": sorted(set(gold)), "precision": params["precision"],
                                                    "batch_size": params["batch_size"],
                                                    "max_length": params["max_length"]})
    return Path(run), texts[: params["rows"]]


def server_options(params: dict[str, Any]) -> list[str]:
    options = ["--max-wait-ms", str(params["max_wait_ms"])]
    if params.get("max_batch_tokens"):
        options += ["--max-batch-tokens", str(params["max_batch_tokens"])]
    return options


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """serve-load: offline predict_proba, then the server at each number of clients, on the same texts."""
    from .common import call_in_process

    with tempfile.TemporaryDirectory(prefix="neogen-serve-load-") as name:
        tmp = Path(name)
        run_dir, texts = prepared(params, tmp)
        offline_figures = call_in_process("serve_load:offline", {"run": str(run_dir), "texts": texts,
                                                                 "repeats": params["repeats"]})
        print(f"offline predict_proba: {offline_figures['examples_per_s']:.1f} ex/s on {len(texts)} texts",
              flush=True)
        server = Server(run_dir, tmp / "server.log", *server_options(params))
        levels = []
        try:
            for clients in (int(c) for c in str(params["clients"]).split(",")):
                asyncio.run(load_level(server.host, server.port, texts[: 2 * clients], clients, 60))  # warm-up
                level = asyncio.run(load_level(server.host, server.port, texts, clients, params["max_seconds"]))
                offline_labels = offline_figures["labels"]
                level["labels_as_offline"] = sum(offline_labels[i] == lab for i, lab in level.pop("labels").items())
                level["share_of_offline"] = level["requests_per_s"] / offline_figures["examples_per_s"]
                levels.append(level)
                print(f"{clients:>3} clients: {level['requests_per_s']:.1f} req/s "
                      f"({100 * level['share_of_offline']:.0f}% of offline), p50 {level['p50_ms']:.0f} ms, "
                      f"p99 {level['p99_ms']:.0f} ms, {level['labels_as_offline']}/{level['requests']} labels as "
                      f"offline, {level['failures']} failures", flush=True)
        finally:
            exit_status = server.stop()
    return summary(offline_figures, levels, exit_status)


def summary(offline_figures: dict[str, Any], levels: list[dict[str, Any]], exit_status: int | None) -> dict[str, Any]:
    """The figures: one line per level first (what the generic report table shows), the details after."""
    figures: dict[str, Any] = {"offline_ex_s": round(offline_figures["examples_per_s"], 1)}
    for level in levels:
        figures[f"clients_{level['clients']}"] = (
            f"{level['requests_per_s']:.1f} req/s = {100 * level['share_of_offline']:.0f}% of offline, p50 "
            f"{level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms")
    figures |= {"sigterm_exit_status": exit_status, "precision": offline_figures["precision"],
                "batch_size": offline_figures["batch_size"], "offline": {k: v for k, v in offline_figures.items()
                                                                         if k != "labels"},
                "levels": levels}
    return figures


def page_check(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """serve-page: Chromium opens /?text=..., the page classifies it; the DOM must show what /v1/classify says."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("serve-page needs headless Chromium: apt-get install -y chromium")
    from urllib.parse import quote
    from urllib.request import Request, urlopen

    with tempfile.TemporaryDirectory(prefix="neogen-serve-page-") as name:
        tmp = Path(name)
        run_dir, _ = prepared(params | {"rows": 1}, tmp)
        server = Server(run_dir, tmp / "server.log", *server_options(params))
        try:
            request = Request(f"{server.url}/v1/classify", json.dumps({"text": params["text"]}).encode(),
                              {"Content-Type": "application/json"})
            with urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                want = json.loads(response.read())
            page = f"{server.url}/?text={quote(params['text'])}"
            common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                      "--window-size=900,640", f"--user-data-dir={tmp / 'profile'}"]
            dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120,
                                 check=True).stdout
            subprocess.run([*common, f"--screenshot={params['screenshot']}", page], capture_output=True,
                           timeout=120, check=True)
        finally:
            exit_status = server.stop()
    shown = re.findall(r'<div class="name" title="[^"]*">([^<]*)</div>.*?<div class="value">([\d.]+)%</div>', dom)
    expected = sorted(((label, f"{100 * p:.1f}") for label, p in want["scores"].items()), key=lambda lp: -float(lp[1]))
    checks = {"answer_shown": f"Label: {want['label']}" in dom, "bars": len(shown),
              "bars_as_api": [(label, value) for label, value in shown] == expected,
              "label_mass_shown": "label_mass" in dom}
    print(f"page check: {checks}; screenshot {params['screenshot']}", flush=True)
    if not (checks["answer_shown"] and checks["bars_as_api"]):
        raise SystemExit(f"the page did not render the scores of /v1/classify: {checks}\n{dom[-2000:]}")
    return {"rendered": "label, bars and label_mass as /v1/classify gives them", **checks,
            "label": want["label"], "screenshot": params["screenshot"], "sigterm_exit_status": exit_status}

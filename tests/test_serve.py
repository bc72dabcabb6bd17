"""neogen serve: a real server process on a free loopback port, called with real HTTP clients (httpx, openai).

Every request loop here is bounded in count and time, and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, needs, toy_rows

from neogen.classify import Classifier

try:
    import httpx
    import openai
except ImportError:  # the test extra installs them; without it every test here says how to get them
    httpx = openai = None

pytestmark = needs(httpx is not None and openai is not None, "httpx and openai, the serve tests' clients",
                   "pip install -e '.[test]'")
START_TIMEOUT = 300  # seconds for a server to load its model and answer: a guard against a hang, not a speed check
REQUEST_TIMEOUT = 120
SCORE_TOLERANCE = 1e-6  # float rounding of batches of other shapes; labels must be identical


class Server:
    """A `neogen serve` process on a free port of 127.0.0.1 (port 0: the OS picks it)."""

    def __init__(self, model: Path, log: Path, *options: str) -> None:
        self.log = log
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "neogen.cli", "serve", str(model), "--port", "0",
                                          *options], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = re.search(r"serving \S+ at (http://127\.0\.0\.1:\d+)", self.log.read_text(errors="replace"))
            if found:
                url = found.group(1)
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                            return url
                    except httpx.TransportError:
                        time.sleep(0.1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"neogen serve did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait (a kill only if it hangs); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def health(self) -> dict:
        return httpx.get(f"{self.url}/healthz", timeout=REQUEST_TIMEOUT).json()


@pytest.fixture(scope="module")
def server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tiny_run, tmp_path_factory.mktemp("serve") / "stderr.log", "--max-wait-ms", "20",
                     "--max-request-texts", "16", "--max-request-bytes", "4096")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def reference(tiny_run: Path) -> Classifier:
    return Classifier.load(tiny_run)


def same_answers(got: list[dict], want: list[dict]) -> None:
    """Labels identical, scores and label_mass equal up to float rounding."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["label"] == w["label"] and list(g["scores"]) == list(w["scores"])
        assert max(abs(g["scores"][k] - w["scores"][k]) for k in w["scores"]) < SCORE_TOLERANCE
        assert abs(g["label_mass"] - w["label_mass"]) < SCORE_TOLERANCE


def test_classify_answers_what_classifier_scores_gives(server, reference):
    texts = [text for text, _ in toy_rows(3)]
    one = httpx.post(f"{server.url}/v1/classify", json={"text": texts[0]}, timeout=REQUEST_TIMEOUT)
    assert one.status_code == 200
    same_answers([one.json()], [reference.scores(texts[0])])
    many = httpx.post(f"{server.url}/v1/classify", json={"texts": texts}, timeout=REQUEST_TIMEOUT)
    same_answers(many.json()["results"], reference.scores(texts))


def test_64_concurrent_clients_get_the_results_of_sequential_scoring_in_shared_passes(server, reference):
    texts = [f"{text} ({i})" for i, (text, _) in enumerate(toy_rows(16))][:64]
    want = [reference.scores(text) for text in texts]  # one text at a time
    before = server.health()

    async def post_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT, limits=limits) as client:
            return await asyncio.gather(*(client.post("/v1/classify", json={"text": t}) for t in texts))

    responses = asyncio.run(asyncio.wait_for(post_all(), timeout=REQUEST_TIMEOUT))
    assert [r.status_code for r in responses] == [200] * 64
    same_answers([r.json() for r in responses], want)
    after = server.health()
    assert after["texts_scored"] - before["texts_scored"] == 64
    assert after["scoring_calls"] - before["scoring_calls"] < 64  # clients shared passes


def test_the_openai_client_calls_the_legacy_completions_endpoint(server, reference):
    import torch

    from neogen.forward import next_token_logits, pad_right

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=REQUEST_TIMEOUT, max_retries=0)
    texts = [text for text, _ in toy_rows(1)]
    prompts = [text + "\n\n###\n\n" for text in texts]  # as the legacy fine-tunes' prompts ended
    done = client.completions.create(model="ft-legacy-name", prompt=prompts, max_tokens=1, temperature=0,
                                     logprobs=3)
    assert done.object == "text_completion" and len(done.choices) == len(texts)
    codec = reference.codec
    for choice, text in zip(done.choices, texts, strict=True):
        label = reference.classify(text)
        assert choice.text == codec.completions[codec.labels.index(label)]
        ids, mask = pad_right(reference.encoder([text]), reference.tokenizer.pad_token_id)
        with torch.inference_mode():
            logprobs = torch.log_softmax(next_token_logits(reference.model, ids, mask), -1)[0]
        top = logprobs.topk(3)
        want = {reference.tokenizer.decode([int(t)]): float(v) for t, v in zip(top.indices, top.values, strict=True)}
        got = choice.logprobs.top_logprobs[0]
        assert list(got) == list(want) and max(abs(got[k] - want[k]) for k in want) < 1e-4
        assert choice.logprobs.tokens == [choice.text] and choice.finish_reason == "length"
    assert done.usage.completion_tokens == len(texts)
    with pytest.raises(openai.BadRequestError, match="max_tokens must be 1"):
        client.completions.create(model="x", prompt=prompts[0], max_tokens=5, temperature=0)


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"not json", 400, "not JSON"),
    (b"[1, 2]", 400, "not an object"),
    (b"{}", 400, "no \"text\""),
    (b'{"text": 3}', 400, "text is a number"),
    (b'{"texts": "one"}', 400, "texts is a string"),
    (b'{"texts": ["a", null]}', 400, "texts\\[1\\] is a null"),
    (b'{"text": "a", "texts": ["b"]}', 400, "exactly one"),
    (b'{"texts": []}', 400, "empty array"),
    (json.dumps({"texts": ["a"] * 17}).encode(), 413, "at most 16"),
    (json.dumps({"text": "a" * 5000}).encode(), 413, "at most 4,096"),
    (b'{"text": "\\ud800"}', 400, "lone surrogate"),
])
def test_bad_requests_get_a_4xx_json_error_naming_the_problem(server, body, status, message):
    response = httpx.post(f"{server.url}/v1/classify", content=body, timeout=REQUEST_TIMEOUT)
    assert response.status_code == status
    assert re.search(message, response.json()["error"]["message"]), response.json()


def test_the_other_endpoints(server, reference):
    models = httpx.get(f"{server.url}/v1/models", timeout=REQUEST_TIMEOUT).json()
    assert models["data"][0]["labels"] == reference.labels and models["object"] == "list"
    assert httpx.get(f"{server.url}/v1/classify", timeout=REQUEST_TIMEOUT).status_code == 405
    missing = httpx.get(f"{server.url}/nowhere", timeout=REQUEST_TIMEOUT)
    assert missing.status_code == 404 and "error" in missing.json()
    bad = httpx.post(f"{server.url}/v1/completions", json={"prompt": "a", "stream": True}, timeout=REQUEST_TIMEOUT)
    assert bad.status_code == 400 and "stream" in bad.json()["error"]["message"]


def test_the_page_holds_the_form_and_the_script_that_draws_the_bars(server):
    page = httpx.get(f"{server.url}/", timeout=REQUEST_TIMEOUT)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for part in ("<form", "<textarea", "v1/classify", "<script>", "track.appendChild(bar)", "label_mass"):
        assert part in page.text, part
    assert "<title>neogen: run</title>" in page.text  # the folder's name is the model's name


def test_a_full_queue_answers_503_and_sigterm_drains_accepted_requests(tiny_run, tmp_path):
    # A 3 s wait for company keeps two one-text requests queued; the queue holds two texts.
    server = Server(tiny_run, tmp_path / "stderr.log", "--max-queue", "2", "--max-request-texts", "2",
                    "--max-wait-ms", "3000")
    results: list[httpx.Response] = []
    try:
        threads = [threading.Thread(target=lambda t=t: results.append(httpx.post(
            f"{server.url}/v1/classify", json={"text": t}, timeout=REQUEST_TIMEOUT))) for t in ("cell", "acid")]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while server.health()["pending"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        busy = httpx.post(f"{server.url}/v1/classify", json={"text": "one more"}, timeout=REQUEST_TIMEOUT)
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        assert "busy" in busy.json()["error"]["message"]
        server.proc.send_signal(signal.SIGTERM)  # while both accepted requests still wait
        for thread in threads:
            thread.join(REQUEST_TIMEOUT)
        assert [r.status_code for r in results] == [200, 200]
        assert server.stop() == 0
    finally:
        server.stop()

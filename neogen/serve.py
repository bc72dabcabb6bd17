"""`neogen serve`: a run or an export over HTTP (FastAPI on uvicorn), with dynamic batching.

    POST /v1/classify      {"text": ...} -> what Classifier.scores(text) gives; {"texts": [...]} -> {"results": [...]}
    POST /v1/completions   the legacy OpenAI completions API as its classifier fine-tunes were called: the prompt
                           (ending with the separator or not), max_tokens 1, temperature 0, logprobs k
    GET  /v1/models        the one model served;  GET /healthz;  GET /  a form that draws the probabilities as bars

Dynamic batching: every request's texts join one queue; a single worker thread takes what is queued once requests
stop arriving (no new one for a quarter of `max_wait_ms`, or `max_wait_ms` in all) and scores it in one call,
which splits it into forward passes under the classifier's batch size and token budget. Concurrent clients so
share passes, and the model is only ever used by one thread. The queue is bounded: a request that would overfill
it gets 503 with Retry-After at once, instead of a queue (and latency) that grows without bound. Bad requests get
a 4xx JSON error naming the problem, in the shape OpenAI's clients read (`{"error": {"message": ...}}`). SIGTERM
stops accepting connections, answers every request already accepted, and exits 0.
"""

import asyncio
import contextlib
import html
import json
import logging
import math
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from neogen.errors import NeogenError

if TYPE_CHECKING:  # annotations naming these are quoted: FastAPI reads the handlers' annotations at run time
    from fastapi import FastAPI, Request

    from neogen.classify import Classifier

logger = logging.getLogger(__name__)

SERVE_FIX = "pip install 'neogen[serve]'"


@dataclass
class ServeOptions:
    """How the server listens, batches and bounds its work."""

    host: str = "127.0.0.1"
    port: int = 8000
    name: str = "neogen"  # the model id /v1/models and completions answer with
    max_wait_ms: float = 20.0  # how long the worker waits for requests to share a pass (a quarter without one ends it)
    max_batch_texts: int | None = None  # texts per scoring call (default: 4 x the classifier's batch size)
    max_queue: int = 1024  # texts accepted and not yet answered, at most
    max_request_texts: int = 256
    max_request_bytes: int = 1 << 20
    max_logprobs: int = 20
    graceful_timeout: float = 60.0  # seconds SIGTERM waits for accepted requests
    access_log: bool = False


class ApiError(Exception):
    """A request the server refuses: the HTTP status, and the message the JSON error carries."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_busy" if self.status == 503 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": None}}


# ------------------------------------------------------------------------------------------------------- scoring


class Scorer:
    """What the worker thread computes for a batch: neogen's scores, or the next-token distribution (completions)."""

    def __init__(self, classifier: "Classifier") -> None:
        self.classifier = classifier
        codec = classifier.codec
        self.one_token = not codec.multi_label or codec.encoding == "powerset"  # an answer is one completion token
        self.answer_ids = list(codec.token_ids)

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        """Classifier.scores of the texts, one dict each."""
        return list(self.classifier.scores(texts))

    def complete(self, texts: list[str], k: int) -> list[dict[str, Any]]:
        """Per prompt: the answer token (the classifier's label token), its log-probability, the top k tokens of the
        free next-token distribution and the prompt's length in tokens."""
        import torch

        from neogen.forward import next_token_logits, pad_right

        c = self.classifier
        prompts = c.encoder(texts)
        answer_ids = torch.tensor(self.answer_ids, dtype=torch.long)
        out: list[dict[str, Any]] = [{} for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        device = next(c.model.parameters()).device
        with torch.inference_mode(), self.autocast(device):
            for start in range(0, len(order), c.batch_size):
                rows = order[start: start + c.batch_size]
                ids, mask = pad_right([prompts[i] for i in rows], c.tokenizer.pad_token_id)
                logprobs = torch.log_softmax(next_token_logits(c.model, ids.to(device), mask.to(device)), -1).cpu()
                chosen = answer_ids[logprobs[:, answer_ids].argmax(-1)]
                top = logprobs.topk(k, dim=-1) if k else None
                for j, i in enumerate(rows):
                    pairs = zip(top.indices[j].tolist(), top.values[j].tolist(), strict=True) if top is not None else ()
                    out[i] = {"token": self.decode(int(chosen[j])), "logprob": float(logprobs[j, chosen[j]]),
                              "top": [(self.decode(t), v) for t, v in pairs], "prompt_tokens": len(prompts[i])}
        return out

    def decode(self, token_id: int) -> str:
        return self.classifier.tokenizer.decode([token_id])

    def autocast(self, device: Any) -> contextlib.AbstractContextManager:
        """bf16/fp16 autocast where the classifier scores in it, as its own passes do."""
        import torch

        precision = getattr(self.classifier, "precision", "fp32")
        if precision in ("bf16", "fp16"):
            return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        return contextlib.nullcontext()


@dataclass
class Job:
    """One request's texts waiting for the worker, and the future its handler awaits."""

    kind: str  # "classify" or "complete"
    texts: list[str]
    future: asyncio.Future
    k: int = 0


@dataclass
class Batcher:
    """The queue of every request's texts and the one worker that scores them in shared calls."""

    scorer: Scorer
    max_batch_texts: int
    max_wait: float
    max_queue: int
    jobs: deque[Job] = field(default_factory=deque)
    pending: int = 0  # texts accepted and not yet answered
    rate: float = 0.0  # texts per second of recent scoring calls (for Retry-After)
    calls: int = 0  # scoring calls made, and the texts they scored: /healthz shows how well requests share them
    scored: int = 0

    def __post_init__(self) -> None:
        self.wake = asyncio.Event()
        self.closing = False
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neogen-scorer")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.work())

    async def close(self) -> None:
        """Answer what is queued, then stop the worker and its thread."""
        self.closing = True
        self.wake.set()
        if self.task is not None:
            await self.task
        self.executor.shutdown(wait=True)

    async def submit(self, kind: str, texts: list[str], k: int = 0) -> list[Any]:
        """Queue the texts and wait for their results; ApiError 503 when the queue cannot take them now."""
        if self.closing:
            raise ApiError(503, "the server is shutting down", headers={"Retry-After": "1"})
        if self.pending + len(texts) > self.max_queue:
            wait = max(1, math.ceil(self.pending / self.rate)) if self.rate > 0 else 1
            raise ApiError(503, f"the server is busy: {self.pending} texts are waiting (at most {self.max_queue}); "
                           f"retry after {wait} s", headers={"Retry-After": str(wait)})
        job = Job(kind, texts, asyncio.get_running_loop().create_future(), k)
        self.jobs.append(job)
        self.pending += len(texts)
        self.wake.set()
        try:
            return await job.future
        finally:
            self.pending -= len(texts)

    async def work(self) -> None:
        """Take what is queued (once requests stop arriving), score it, hand out the results."""
        loop = asyncio.get_running_loop()
        while True:
            if not self.jobs:
                if self.closing:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            await self.gather(loop)
            batch = self.take()
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.score, batch)
            except Exception as e:  # every request of the batch gets the failure; the server goes on
                logger.exception("scoring failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(ApiError(500, f"scoring failed: {e}"))
                continue
            texts = sum(len(job.texts) for job in batch)
            self.calls, self.scored = self.calls + 1, self.scored + texts
            self.rate = 0.8 * self.rate + 0.2 * texts / max(time.perf_counter() - start, 1e-6) if self.rate else (
                texts / max(time.perf_counter() - start, 1e-6))
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():  # a client that went away cancelled its future
                    job.future.set_result(result)

    async def gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait while requests keep arriving, so that they share the pass: until none came for a quarter of
        max_wait, max_wait passed, or a full batch is queued. After a pass, the clients it answered send their next
        requests within a few milliseconds; starting at once would score the first few alone."""
        deadline = loop.time() + self.max_wait
        while self.queued() < self.max_batch_texts and not self.closing:
            left = min(self.max_wait / 4, deadline - loop.time())
            if left <= 0:
                return
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                return

    def queued(self) -> int:
        return sum(len(job.texts) for job in self.jobs)

    def take(self) -> list[Job]:
        """Jobs from the front of the queue up to max_batch_texts texts (always at least one job)."""
        batch = [self.jobs.popleft()]
        count = len(batch[0].texts)
        while self.jobs and count + len(self.jobs[0].texts) <= self.max_batch_texts:
            count += len(self.jobs[0].texts)
            batch.append(self.jobs.popleft())
        return batch

    def score(self, batch: list[Job]) -> list[list[Any]]:
        """In the worker thread: each kind's texts in one call, the results split back per job."""
        results: list[list[Any]] = [[] for _ in batch]
        for kind in ("classify", "complete"):
            index = [i for i, job in enumerate(batch) if job.kind == kind]
            if not index:
                continue
            texts = [text for i in index for text in batch[i].texts]
            rows = (self.scorer.classify(texts) if kind == "classify"
                    else self.scorer.complete(texts, max(batch[i].k for i in index)))
            start = 0
            for i in index:
                n = len(batch[i].texts)
                results[i] = rows[start: start + n] if kind == "classify" else [
                    {**row, "top": row["top"][: batch[i].k]} for row in rows[start: start + n]]
                start += n
        return results


# ------------------------------------------------------------------------------------------------------ requests


async def read_json(request: "Request", limit: int) -> dict[str, Any]:
    """The request's JSON object, read no further than `limit` bytes; ApiError naming what is wrong."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared):,} bytes; this server takes at most {limit:,} per request "
                       "(split the texts over several requests)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the body is over {limit:,} bytes, the most this server takes per request (split "
                           "the texts over several requests)")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not JSON ({e}); send a JSON object such as {{\"text\": \"...\"}}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the body is a JSON {type(data).__name__}, not an object such as {{\"text\": \"...\"}}")
    return data


def checked_text(value: Any, where: str) -> str:
    """A text from a request: a str that is valid Unicode (a JSON string may hold a lone surrogate escape)."""
    if not isinstance(value, str):
        raise ApiError(400, f"{where} is a {json_type(value)}, not a string", param=where.split("[")[0])
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ApiError(400, f"{where} holds a lone surrogate at character {e.start}, which is not valid Unicode",
                           param=where.split("[")[0]) from None
    return value


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def texts_of(data: dict[str, Any], field_name: str, limit: int) -> list[str]:
    """The list of texts in `data[field_name]` (a string or an array of strings), at most `limit` of them."""
    value = data[field_name]
    if isinstance(value, str):
        return [checked_text(value, field_name)]
    if not isinstance(value, list):
        raise ApiError(400, f"{field_name} is a {json_type(value)}; give a string or an array of strings",
                       param=field_name)
    if not value:
        raise ApiError(400, f"{field_name} is an empty array; give at least one text", param=field_name)
    if len(value) > limit:
        raise ApiError(413, f"{field_name} holds {len(value):,} texts; this server takes at most {limit:,} per "
                       "request (split them over several requests)", param=field_name)
    return [checked_text(v, f"{field_name}[{i}]") for i, v in enumerate(value)]


def classify_request(data: dict[str, Any], limit: int) -> tuple[list[str], bool]:
    """The texts of a /v1/classify body and whether it asked for one text ({"text"}) or several ({"texts"})."""
    fields = [name for name in ("text", "texts") if name in data]
    if len(fields) != 1:
        raise ApiError(400, "give exactly one of \"text\" (a string) or \"texts\" (an array of strings)" if fields
                       else "the body has no \"text\" (a string) or \"texts\" (an array of strings)")
    if fields[0] == "text":
        return [checked_text(data["text"], "text")], True
    if isinstance(data["texts"], str):
        raise ApiError(400, "texts is a string; give an array of strings, or use \"text\" for one", param="texts")
    return texts_of(data, "texts", limit), False


# Parameters of the legacy completions API that change nothing for one greedy token, and so are accepted as given.
IGNORED = ("model", "top_p", "presence_penalty", "frequency_penalty", "user", "seed", "stop", "suffix",
           "stream_options")


def completion_request(data: dict[str, Any], options: ServeOptions) -> tuple[list[str], int]:
    """The prompts and logprobs k of a /v1/completions body, refusing what one greedy token cannot honour."""
    if "prompt" not in data:
        raise ApiError(400, "the body has no \"prompt\"", param="prompt")
    unknown = sorted(set(data) - {"prompt", "max_tokens", "temperature", "logprobs", "n", "best_of", "echo",
                                  "stream", "logit_bias", *IGNORED})
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]!r}", param=unknown[0])
    rules = (("max_tokens", (None, 1), "max_tokens must be 1: a classifier answers with one token"),
             ("temperature", (None, 0), "temperature must be 0: a classifier answers greedily"),
             ("n", (None, 1), "n must be 1"), ("best_of", (None, 1), "best_of must be 1"),
             ("echo", (None, False), "echo is not supported"), ("stream", (None, False), "stream is not supported"),
             ("logit_bias", (None, {}), "logit_bias is not supported"))
    for name, allowed, message in rules:
        value = data.get(name)
        if not any(same(value, wanted) for wanted in allowed):
            raise ApiError(400, f"{message} (got {json.dumps(value)})", param=name)
    k = data.get("logprobs")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= options.max_logprobs):
        raise ApiError(400, f"logprobs must be a whole number from 0 to {options.max_logprobs} (got "
                       f"{json.dumps(k)})", param="logprobs")
    prompt = data["prompt"]
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        raise ApiError(400, "token-id prompts are not supported; send the prompt as text", param="prompt")
    return texts_of(data, "prompt", options.max_request_texts), -1 if k is None else k


def same(value: Any, wanted: Any) -> bool:
    """Whether a JSON value is `wanted`: numbers by value (1 == 1.0), booleans, null and objects by kind too."""
    if wanted is None or isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    if isinstance(wanted, int):
        return isinstance(value, (int, float)) and value == wanted
    return type(value) is type(wanted) and value == wanted


def completion_response(rows: list[dict[str, Any]], prompts: list[str], k: int, name: str) -> dict[str, Any]:
    """The legacy completions response: one choice per prompt, its text the label token, logprobs if asked."""
    choices = []
    for i, (row, prompt) in enumerate(zip(rows, prompts, strict=True)):
        logprobs = None
        if k >= 0:
            top: dict[str, float] = {}
            for token, value in row["top"]:
                top.setdefault(token, value)  # two ids may decode alike (partial UTF-8): keep the likelier
            logprobs = {"tokens": [row["token"]], "token_logprobs": [row["logprob"]], "top_logprobs": [top],
                        "text_offset": [len(prompt)]}
        choices.append({"text": row["token"], "index": i, "logprobs": logprobs, "finish_reason": "length"})
    prompt_tokens = sum(row["prompt_tokens"] for row in rows)
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": name, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(rows),
                      "total_tokens": prompt_tokens + len(rows)}}


# ------------------------------------------------------------------------------------------------------ the app


def create_app(classifier: "Classifier", options: ServeOptions,
               on_start: Callable[[], None] | None = None) -> "FastAPI":
    """The FastAPI application serving `classifier`; the batcher starts and drains with the app's lifespan, and
    `on_start` is called once it runs."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    batcher_box: list[Batcher] = []
    scorer = Scorer(classifier)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        batcher = Batcher(scorer, options.max_batch_texts or 4 * classifier.batch_size, options.max_wait_ms / 1000,
                          options.max_queue)
        batcher.start()
        batcher_box.append(batcher)
        if on_start is not None:
            on_start()
        yield
        await batcher.close()

    app = FastAPI(title="neogen", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:  # 404, 405 in the same shape
        return JSONResponse(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}").body(),
                            status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.post("/v1/classify")
    async def classify(request: Request) -> JSONResponse:
        texts, single = classify_request(await read_json(request, options.max_request_bytes),
                                         options.max_request_texts)
        rows = await batcher_box[0].submit("classify", texts)
        return JSONResponse(rows[0] if single else {"results": rows})

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        prompts, k = completion_request(await read_json(request, options.max_request_bytes), options)
        if not scorer.one_token:
            raise ApiError(400, f"this {classifier.codec.encoding} multi-label classifier answers with a set of "
                           "labels, not one token; use POST /v1/classify")
        rows = await batcher_box[0].submit("complete", prompts, k=max(k, 0))
        return JSONResponse(completion_response(rows, prompts, k, options.name))

    add_info_routes(app, classifier, options, batcher_box)
    return app


def add_info_routes(app: "FastAPI", classifier: "Classifier", options: ServeOptions,
                    batcher_box: list[Batcher]) -> None:
    """GET /v1/models, /healthz and / (the form)."""
    from fastapi.responses import HTMLResponse, JSONResponse

    from neogen.serve_page import PAGE

    created = int(time.time())

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        codec = classifier.codec
        return JSONResponse({"object": "list", "data": [{
            "id": options.name, "object": "model", "created": created, "owned_by": "neogen",
            "labels": list(codec.labels), "multi_label": bool(codec.multi_label),
            "separator": codec.separator}]})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        batcher = batcher_box[0]
        return JSONResponse({"status": "ok", "model": options.name, "pending": batcher.pending,
                             "scoring_calls": batcher.calls, "texts_scored": batcher.scored})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        kind = "Multi-label classifier" if classifier.codec.multi_label else "Classifier"
        return HTMLResponse(PAGE.replace("{name}", html.escape(options.name)).replace("{kind}", kind)
                            .replace("{count}", str(len(classifier.codec.labels))))


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port before the model loads, so a taken port is refused at once (port 0: any)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise NeogenError(f"cannot listen on {host}:{port}: {e.strerror or e} (fix: pick another --port, or stop "
                          "the process that holds it)") from None
    return sock


def serve(classifier: "Classifier", options: ServeOptions, sock: socket.socket | None = None,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then answer every accepted request and return (the process exits 0).

    `sock` is a socket from `bind` (made here when None); `ready` is called with the base URL once requests are
    answered.
    """
    try:
        import uvicorn
    except ImportError:
        raise NeogenError(f"neogen serve needs FastAPI and uvicorn (fix: {SERVE_FIX})") from None
    sock = sock or bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    app = create_app(classifier, options, on_start=None if ready is None else lambda: ready(url))
    config = uvicorn.Config(app, log_config=None, access_log=options.access_log,
                            timeout_graceful_shutdown=options.graceful_timeout, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler makes that a clean exit.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    logger.info("stopped serving %s", url)

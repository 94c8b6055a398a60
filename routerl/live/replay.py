"""A replay server: an OpenAI-compatible chat-completions endpoint that answers from recorded data.

It serves ``POST /v1/chat/completions`` on loopback. For the requested ``model`` it looks up the
last user message's text among the outcome table's prompts and returns that model's recorded
response, with the table's ``prompt_tokens``/``response_tokens`` as ``usage``. It lets you try
probing and ``routerl complete`` without any API key, and it is what the tests call over real
HTTP. A ``fault`` hook can make it answer with an HTTP error or hang first, or send an odd body
(one of its own, slowly, or cut short) for retry, timeout and fallback tests, and it counts every
request per (model, prompt_id).

    python -m routerl.live.replay --data ../shared/data/zeroeval.jsonl.gz \\
        --models claude-3-5-haiku-20241022,gpt-4o-mini-2024-07-18 --port 8765
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable

from routerl.data.outcomes import OutcomeTable, iter_json_rows

LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Recorded:
    """One recorded answer: its prompt id, text and token counts (None when unknown)."""

    prompt_id: str
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None


def _count(value: float) -> int | None:
    return int(value) if math.isfinite(value) else None


class ReplayBook:
    """Recorded answers by (model name, prompt text)."""

    def __init__(self, answers: dict[str, dict[str, Recorded]]):
        self._answers = answers

    @property
    def models(self) -> list[str]:
        return sorted(self._answers)

    @classmethod
    def from_table(cls, table: OutcomeTable, responses: dict[tuple[str, str], str], models: Iterable[str]) -> "ReplayBook":
        """Answers of ``models`` from a table (prompt text, tokens) and response texts keyed by
        (prompt_id, model) (see ``load_responses``)."""
        answers: dict[str, dict[str, Recorded]] = {}
        for model in models:
            j = table.model_index(model)
            book: dict[str, Recorded] = {}
            for i, pid in enumerate(table.prompt_ids):
                text = responses.get((pid, model))
                if text is None:
                    continue
                book[table.prompt_text[i]] = Recorded(
                    pid, text, _count(table.prompt_tokens[i, j]), _count(table.response_tokens[i, j])
                )
            answers[model] = book
        return cls(answers)

    def lookup(self, model: str, prompt_text: str) -> Recorded | None:
        return self._answers.get(model, {}).get(prompt_text)

    def knows_model(self, model: str) -> bool:
        return model in self._answers


def load_responses(path: str | Path, models: Iterable[str]) -> dict[tuple[str, str], str]:
    """Response texts of some models only, keyed by (prompt_id, model), from a responses file."""
    wanted = set(models)
    out: dict[tuple[str, str], str] = {}
    for _, row in iter_json_rows(path):
        if row.get("model") in wanted and isinstance(row.get("response"), str):
            out[(row["prompt_id"], row["model"])] = row["response"]
    return out


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or before) answering: wait ``delay_s``, then, when ``status`` is
    set, answer with that HTTP status (and ``headers``, e.g. ``Retry-After``).

    Body faults (all off by default; they apply to whatever body is sent):
        body: these bytes are sent as the body instead of the recorded answer (or of the error
            of ``status``), with status ``status`` or else 200 and ``headers``: a body that is not
            JSON, not UTF-8, or a 200 answer without content.
        drip_s: the body is sent in ``drip_bytes``-byte pieces with a pause of ``drip_s`` before
            each (a provider that drips its answer); 0 sends it at once.
        cut_after: only the first ``cut_after`` bytes of the body are sent (``Content-Length``
            announces all of it), then the connection is closed: a truncated body.
    """

    status: int = 0
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    drip_s: float = 0.0
    drip_bytes: int = 8
    cut_after: int | None = None


# (model, prompt_id or "", hit number of this model, 1-based) -> a Fault, or None to answer
FaultHook = Callable[[str, str, int], "Fault | None"]


class ReplayServer:
    """The replay endpoint on ``127.0.0.1`` (port 0 = a free port), served from a thread.

    ``api_key``: when set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
    ``hits`` counts requests per (model, prompt_id); ``requests`` counts all requests.
    """

    def __init__(self, book: ReplayBook, *, port: int = 0, fault: FaultHook | None = None, api_key: str | None = None):
        self.book = book
        self.fault = fault
        self.api_key = api_key
        self.hits: Counter = Counter()
        self.model_hits: Counter = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer((LOOPBACK, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def start(self) -> "ReplayServer":
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="replay-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # releases handlers held by a hang fault
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling ---------------------------------------------------------------------
    def _answer(self, body: dict) -> tuple[int, dict, dict]:
        """(status, JSON payload, extra headers) for one chat-completions request body."""
        return self._respond(body)[:3]

    def _respond(self, body: dict) -> tuple[int, dict, dict, Fault | None]:
        """``_answer`` and the fault applied (whose body faults the handler carries out)."""
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list) or not messages:
            return 400, _error("the body needs 'model' and a non-empty 'messages' list"), {}
        user = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = user[-1] if user and isinstance(user[-1], str) else ""
        recorded = self.book.lookup(model, prompt)
        with self._lock:
            self.requests += 1
            self.model_hits[model] += 1
            self.hits[(model, recorded.prompt_id if recorded else "")] += 1
            hit_no = self.model_hits[model]
        fault = self.fault(model, recorded.prompt_id if recorded else "", hit_no) if self.fault else None
        if fault is not None:
            if fault.delay_s > 0:
                self._closing.wait(fault.delay_s)
            if fault.status:
                return fault.status, _error(f"injected HTTP {fault.status}"), dict(fault.headers), fault
            if fault.body is not None:
                return 200, {}, dict(fault.headers), fault
        if not self.book.knows_model(model):
            return 404, _error(f"model {model!r} not found"), {}, fault
        if recorded is None:
            return 404, _error(f"no recorded response of {model!r} to this prompt"), {}, fault
        payload = {
            "id": f"replay-{hit_no}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": recorded.text}, "finish_reason": "stop"}],
        }
        if recorded.prompt_tokens is not None and recorded.completion_tokens is not None:
            payload["usage"] = {
                "prompt_tokens": recorded.prompt_tokens,
                "completion_tokens": recorded.completion_tokens,
                "total_tokens": recorded.prompt_tokens + recorded.completion_tokens,
            }
        return 200, payload, {}, fault

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # quiet: tests and demos read their own output
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None, fault: Fault | None = None) -> None:
                data = fault.body if fault is not None and fault.body is not None else json.dumps(payload).encode("utf-8")
                size = len(data)
                if fault is not None and fault.cut_after is not None:
                    data = data[: max(0, fault.cut_after)]
                    self.close_connection = True  # the rest never comes: the client sees the body cut short
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(size))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    if fault is not None and fault.drip_s > 0:
                        step = max(1, fault.drip_bytes)
                        for i in range(0, len(data), step):
                            if server._closing.wait(fault.drip_s):
                                self.close_connection = True
                                return
                            self.wfile.write(data[i : i + step])
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test): nothing to answer

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length <= 0 or length > MAX_BODY_BYTES:
                    return self._send(400, _error("a JSON body is required"))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, _error(f"unknown path {self.path}"))
                if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, _error("invalid API key"))
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    return self._send(400, _error("the body is not JSON"))
                if not isinstance(body, dict):
                    return self._send(400, _error("the body must be a JSON object"))
                status, payload, headers, fault = server._respond(body)
                self._send(status, payload, headers, fault)

        return Handler


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "replay_error"}}


def main(argv: list[str] | None = None) -> int:
    """Serve recorded answers until interrupted (see the module docstring)."""
    from routerl.data.outcomes import load_outcomes

    parser = argparse.ArgumentParser(prog="python -m routerl.live.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="outcome table (JSONL or JSONL.gz)")
    parser.add_argument("--responses", help="responses file (default: <name>_responses.jsonl.gz beside --data)")
    parser.add_argument("--models", required=True, help="comma-separated model names to serve")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    data = Path(args.data)
    table = load_outcomes(data, responses=False)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    responses = Path(args.responses) if args.responses else data.with_name(f"{table.name}_responses.jsonl.gz")
    book = ReplayBook.from_table(table, load_responses(responses, models), models)
    server = ReplayServer(book, port=args.port).start()
    print(f"serving {', '.join(book.models)} at {server.base_url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

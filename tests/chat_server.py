"""A real OpenAI-compatible chat-completions server on loopback, with scripted answers.

Tests start it, queue answers (JSON content, raw text, HTTP errors, delays, answers
trickled byte by byte, dropped connections) or install a responder function, and read
back every request it received. It also serves ``/v1/embeddings`` (the same script for
errors; a success, or an empty script, answers a vector per input). It speaks HTTP over
a socket; nothing in memlane is mocked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Scripted:
    """One scripted reply: ``content`` (str, or an object sent as JSON text), or an
    HTTP ``status`` error, optionally after ``delay_s``; ``tool_call`` answers as a call
    of tool ``tool_name`` (id ``call_id``, default: unique per answer) whose arguments are
    ``content``."""

    content: Any = ""
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    tool_call: bool = False
    tool_name: str = "answer"
    call_id: str | None = None
    trickle_s: float = 0.0
    """Send the answer's body one byte at a time, this many seconds apart."""
    drop: bool = False
    """Close the connection without answering (a transport error for the client)."""


class ChatServer:
    def __init__(self) -> None:
        self.script: list[Scripted] = []
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        """When each request came in (``time.monotonic()``), in order."""
        self.responder: Callable[[dict[str, Any]], Any] | None = None
        self._lock = threading.Lock()
        self.httpd = _HTTPServer(self)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> ChatServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def queue(self, *steps: Scripted | Any) -> None:
        with self._lock:
            self.script += [s if isinstance(s, Scripted) else Scripted(content=s) for s in steps]

    def reset(self) -> None:
        with self._lock:
            self.script.clear()
            self.requests.clear()
            self.arrivals.clear()
            self.responder = None

    def operations(self) -> list[str]:
        """Which prompt each request carried, by the first words of its system message."""
        out = []
        for r in self.requests:
            messages = r.get("messages", [])
            system = next((m["content"] for m in messages if m["role"] == "system"), "")
            out.append(system[:40])
        return out


class _Handler(BaseHTTPRequestHandler):
    """Serves one request from the script of the :class:`ChatServer` it belongs to."""

    server: _HTTPServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        server = self.server.chat
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        with server._lock:
            server.requests.append({"path": self.path, **body})
            server.arrivals.append(time.monotonic())
            step = server.script.pop(0) if server.script else None
        if self.path == "/v1/embeddings":
            self._embeddings(step or Scripted(), body)
            return
        if step is None:
            if server.responder is None:
                step = Scripted(status=500, content="script exhausted")
            else:
                answer = server.responder(body)
                step = answer if isinstance(answer, Scripted) else Scripted(content=answer)
        if step.delay_s:
            time.sleep(step.delay_s)
        if self.path != "/v1/chat/completions":
            step = Scripted(status=404, content="no such route")
        if step.status != 200:
            self._answer(step, {"error": {"message": str(step.content)}})
            return
        content = step.content
        text = content if isinstance(content, str) else json.dumps(content)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if step.tool_call:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": step.call_id or f"call_{len(server.requests)}",
                        "type": "function",
                        "function": {"name": step.tool_name, "arguments": text},
                    }
                ],
            }
        if body.get("stream"):
            self._stream(message)
            return
        prompt_chars = sum(len(m.get("content") or "") for m in body["messages"])
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": len(text) // 4,
                "total_tokens": prompt_chars // 4 + len(text) // 4,
            },
        }
        self._answer(step, payload)

    def _embeddings(self, step: Scripted, body: dict[str, Any]) -> None:
        """A vector per input, ``[len(text), 1, 0]``, listed in reverse order
        (clients must sort by ``index``), or the scripted error."""
        if step.delay_s:
            time.sleep(step.delay_s)
        if step.status != 200 or step.drop:
            self._answer(step, {"error": {"message": str(step.content)}})
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]}
            for i, t in enumerate(inputs)
        ]
        payload = {"object": "list", "data": data[::-1], "model": body.get("model")}
        self._answer(step, payload)

    def _answer(self, step: Scripted, payload: Any) -> None:
        """Send ``payload`` as JSON with ``step``'s status and headers, trickled
        when it says so; or drop the connection."""
        if step.drop:
            self.close_connection = True
            return
        data = json.dumps(payload).encode()
        try:
            self.send_response(step.status)
            for k, v in step.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for part in [data] if not step.trickle_s else [bytes([b]) for b in data]:
                self.wfile.write(part)
                time.sleep(step.trickle_s)
        except OSError:  # the client gave up (timed out): what such a test wants
            self.close_connection = True

    def _stream(self, message: dict[str, Any]) -> None:
        """Answer ``stream: true`` as server-sent events: the whole message in
        one delta, then the finish chunk and ``[DONE]``."""
        delta = dict(message)
        for i, call in enumerate(delta.get("tool_calls") or []):
            call["index"] = i
        chunks = [
            {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for chunk in chunks:
            body = {"id": "chatcmpl-test", "object": "chat.completion.chunk"}
            body |= {"created": 0, "model": "scripted", **chunk}
            self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    def __init__(self, chat: ChatServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.chat = chat

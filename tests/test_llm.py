"""The OpenAI-compatible chat adapter and structured answers, against a real loopback server."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from chat_server import ChatServer, Scripted
from memlane import LLMError, LLMOutputError, Memory
from memlane.core.flow import Runtime, run_sync
from memlane.llm import ChatMessage, ChatRequest, OpenAIChat, ask, validate
from memlane.settings import Settings
from memlane.testing import FakeEmbedder


class Pet(BaseModel):
    name: str
    legs: int


@pytest.fixture()
def chat(server: ChatServer) -> OpenAIChat:
    server.reset()
    return OpenAIChat(
        base_url=server.base_url, model="scripted-1", api_key="k", timeout_s=2.0, max_backoff_s=0.05
    )


def _ask(chat: OpenAIChat, repairs: int = 2) -> Pet:
    flow = ask(Pet, [ChatMessage("user", "describe a pet")], operation="test", repairs=repairs)
    with Memory("memory://", embedder=FakeEmbedder()) as m:
        return run_sync(flow, Runtime(m.store, m.embedder, chat)).value


def test_structured_answer_with_schema_and_usage(server: ChatServer, chat: OpenAIChat) -> None:
    server.queue({"name": "Rex", "legs": 4})
    assert _ask(chat) == Pet(name="Rex", legs=4)
    sent = server.requests[0]
    assert sent["model"] == "scripted-1"
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["name", "legs"]
    assert chat.usage.calls == 1 and chat.usage.prompt_tokens > 0
    assert chat.usage.latency_ms > 0


def test_invalid_answer_is_repaired(server: ChatServer, chat: OpenAIChat) -> None:
    server.queue('```json\n{"name": "Rex"}\n```', {"name": "Rex", "legs": 4})
    assert _ask(chat).legs == 4
    repair = server.requests[1]["messages"]
    assert repair[-2]["role"] == "assistant"
    assert "legs" in repair[-1]["content"] and "rejected" in repair[-1]["content"]


def test_answer_that_stays_invalid_is_reported(server: ChatServer, chat: OpenAIChat) -> None:
    server.queue("", "not json at all", {"name": 3})
    with pytest.raises(LLMOutputError) as info:
        _ask(chat)
    assert "after 2 repair" in str(info.value)
    assert info.value.answer == '{"name": 3}'
    assert len(server.requests) == 3


def test_retries_429_and_5xx_then_succeeds(server: ChatServer, chat: OpenAIChat) -> None:
    server.queue(
        Scripted(status=429, headers={"Retry-After": "0"}),
        Scripted(status=503),
        {"name": "Tom", "legs": 4},
    )
    assert _ask(chat).name == "Tom"
    assert len(server.requests) == 3
    assert chat.usage.retries == 2


def test_gives_up_after_retries_and_fails_fast_on_4xx(server: ChatServer, chat: OpenAIChat) -> None:
    server.queue(*[Scripted(status=500)] * 4)
    with pytest.raises(LLMError, match="gave up after 4 attempts"):
        chat.complete(ChatRequest((ChatMessage("user", "hi"),)))
    server.reset()
    server.queue(Scripted(status=401, content="bad key"))
    with pytest.raises(LLMError, match="401"):
        chat.complete(ChatRequest((ChatMessage("user", "hi"),)))
    assert len(server.requests) == 1


def test_timeout_is_an_llm_error(server: ChatServer) -> None:
    server.reset()
    slow = OpenAIChat(base_url=server.base_url, model="m", timeout_s=0.2, max_retries=0)
    server.queue(Scripted(content="late", delay_s=0.6))
    with pytest.raises(LLMError, match="timed out"):
        slow.complete(ChatRequest((ChatMessage("user", "hi"),)))


def test_tool_mode_and_async(server: ChatServer) -> None:
    server.reset()
    tools = OpenAIChat(base_url=server.base_url, model="m", mode="tools")
    server.queue(Scripted(content={"name": "Kit", "legs": 4}, tool_call=True))
    request = ChatRequest((ChatMessage("user", "pet"),), schema={"type": "object"})
    answer = asyncio.run(tools.acomplete(request))
    assert validate(Pet, answer.content)[0] == Pet(name="Kit", legs=4)
    assert server.requests[0]["tool_choice"]["function"]["name"] == "answer"


def test_llm_from_settings() -> None:
    s = Settings.from_env(
        {"MEMLANE_LLM_BASE_URL": "http://127.0.0.1:9/v1", "MEMLANE_LLM_MODEL": "x"},
        store_url="memory://",
    )
    assert (s.llm_base_url, s.llm_model, s.llm_api_key) == ("http://127.0.0.1:9/v1", "x", None)
    with pytest.raises(LLMError, match="unknown structured output mode"):
        OpenAIChat(base_url="http://127.0.0.1:9", model="x", mode="yaml")  # type: ignore[arg-type]


def test_timeout_bounds_the_whole_attempt_against_a_trickling_server() -> None:
    """httpx's timeout bounds each read; a server sending one byte at a time must still
    be cut off after timeout_s in all."""
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            body = b'{"choices": [{"message": {"content": "' + b"x" * 200 + b'"}}]}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
            for byte in body:
                if stop.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.02)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    chat = OpenAIChat(base_url=f"http://127.0.0.1:{port}", model="m", timeout_s=0.5, max_retries=0)
    start = time.monotonic()
    with pytest.raises(LLMError, match="timed out"):
        chat.complete(ChatRequest([ChatMessage("user", "hi")], operation="t"))
    assert time.monotonic() - start < 2.0  # the whole answer would take ~5 s
    stop.set()
    chat.close()
    listener.close()


def test_odd_usage_counts_and_settings_are_clean_errors_or_zero() -> None:
    from memlane.llm.openai_chat import parse_body

    payload = {
        "choices": [{"message": {"content": "x"}}],
        "usage": {"prompt_tokens": float("inf"), "completion_tokens": -5},
    }
    usage = parse_body(payload, latency_ms=1.0, retries=0).usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, 0)
    for bad in (
        {"base_url": "http://[::1", "model": "m"},
        {"base_url": "ftp://host", "model": "m"},
        {"base_url": "http://h", "model": "m", "max_retries": -1},
        {"base_url": "http://h", "model": "m", "timeout_s": 0},
    ):
        with pytest.raises(LLMError):
            OpenAIChat(**bad)  # type: ignore[arg-type]


def test_settings_repr_hides_keys_and_passwords() -> None:
    s = Settings("postgresql://u:pw1@h/db", llm_api_key="sk-SECRET", redis_url="redis://:pw2@h")
    shown = repr(s)
    assert "sk-SECRET" not in shown and "pw1" not in shown and "pw2" not in shown
    assert "postgresql://u:***@h/db" in shown


def test_a_compressed_answer_is_decoded_once() -> None:
    """Providers behind proxies gzip their answers; the deadline-bounded read must not
    decode them twice."""
    import gzip
    import json as jsonlib
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    body = gzip.compress(jsonlib.dumps({"choices": [{"message": {"content": "hello"}}]}).encode())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    chat = OpenAIChat(base_url=f"http://127.0.0.1:{httpd.server_port}", model="m", max_retries=0)
    request = ChatRequest([ChatMessage("user", "hi")], operation="t")
    assert chat.complete(request).content == "hello"
    assert asyncio.run(chat.acomplete(request)).content == "hello"
    chat.close()
    httpd.shutdown()

"""The one HTTP layer (memlane.http) behind the chat and embeddings adapters.

Every property is checked four ways (chat and embeddings, sync and async) against the
real loopback server of tests/chat_server.py; the retry policy itself is also stepped by
hand, sans I/O, with real httpx responses.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from chat_server import ChatServer, Scripted
from memlane import EmbeddingError, LLMError
from memlane.embedders import OpenAIEmbedder
from memlane.errors import MemlaneError
from memlane.http import JsonReply, RetryPolicy, Send, Service, Sleep, exchange, retry_after
from memlane.llm import ChatMessage, ChatRequest, OpenAIChat

OK = Scripted(content="fine")  # chat answers "fine"; embeddings answer a vector


@dataclass
class Caller:
    """One call through one adapter (``chat`` or ``embeddings``), blocking or async."""

    kind: str
    mode: str
    base_url: str

    @property
    def error(self) -> type[MemlaneError]:
        return LLMError if self.kind == "chat" else EmbeddingError

    def __call__(self, **options: Any) -> Any:
        if self.kind == "chat":
            chat = OpenAIChat(base_url=self.base_url, model="m", **options)
            request = ChatRequest((ChatMessage("user", "hi"),))
            try:
                if self.mode == "sync":
                    return chat.complete(request).content
                return asyncio.run(chat.acomplete(request)).content
            finally:
                chat.close()
        embedder = OpenAIEmbedder(base_url=self.base_url, model="m", **options)
        if self.mode == "sync":
            return embedder.embed(["abc"])[0].tolist()
        return asyncio.run(embedder.aembed(["abc"]))[0].tolist()


@pytest.fixture(params=["chat-sync", "chat-async", "embeddings-sync", "embeddings-async"])
def call(request: pytest.FixtureRequest, server: ChatServer) -> Caller:
    server.reset()
    kind, mode = request.param.split("-")
    return Caller(kind, mode, server.base_url)


def _answered(call: Caller, result: Any) -> None:
    if call.kind == "chat":
        assert result == "fine"
    else:
        assert result == pytest.approx([3 / 10**0.5, 1 / 10**0.5, 0.0])


def test_429_5xx_and_dropped_connections_are_retried(server: ChatServer, call: Caller) -> None:
    server.queue(Scripted(status=429), Scripted(status=503), Scripted(drop=True), OK)
    _answered(call, call(max_backoff_s=0))
    assert len(server.requests) == 4


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_fail_at_once(server: ChatServer, call: Caller, status: int) -> None:
    server.queue(Scripted(status=status, content="bad key"), OK)
    with pytest.raises(call.error, match=f"answered {status}: .*bad key"):
        call(max_backoff_s=0)
    assert len(server.requests) == 1


def test_gives_up_after_max_retries(server: ChatServer, call: Caller) -> None:
    server.queue(*[Scripted(status=500)] * 3, OK)
    with pytest.raises(call.error, match="answered 500; gave up after 3 attempts"):
        call(max_retries=2, max_backoff_s=0)
    assert len(server.requests) == 3


def test_connection_refused_is_retried_then_reported(call: Caller) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = Caller(call.kind, call.mode, f"http://127.0.0.1:{port}/v1")
    with pytest.raises(call.error, match=r"endpoint failed: .*gave up after 3 attempts"):
        refused(max_retries=2, max_backoff_s=0)


@pytest.mark.parametrize("header", ["seconds", "http-date"])
def test_retry_after_is_honoured(server: ChatServer, call: Caller, header: str) -> None:
    """Backoff alone would wait at most 0.25 s here; the server asks for more."""
    value = "1" if header == "seconds" else formatdate(time.time() + 2, usegmt=True)
    server.queue(Scripted(status=429, headers={"Retry-After": value}), OK)
    _answered(call, call(max_backoff_s=5))
    waited = server.arrivals[1] - server.arrivals[0]
    assert 0.9 < waited < 2.5


def test_retry_after_is_capped_by_max_backoff(server: ChatServer, call: Caller) -> None:
    server.queue(Scripted(status=503, headers={"Retry-After": "30"}), OK)
    _answered(call, call(max_backoff_s=0.1))
    assert server.arrivals[1] - server.arrivals[0] < 1.0


def test_timeout_bounds_an_attempt_whose_answer_trickles(server: ChatServer, call: Caller) -> None:
    """httpx's own timeout bounds each read; the answer arriving byte by byte (5 s or
    more in all) must still be cut off after timeout_s."""
    server.queue(Scripted(content="x" * 60, trickle_s=0.05))
    start = time.monotonic()
    with pytest.raises(call.error, match=r"timed out after 0\.3 s; gave up after 1 attempts"):
        call(timeout_s=0.3, max_retries=0)
    assert time.monotonic() - start < 2.0


def test_deadline_bounds_the_whole_call_retries_included(server: ChatServer, call: Caller) -> None:
    server.queue(*[Scripted(status=503, headers={"Retry-After": "0.2"})] * 20)
    start = time.monotonic()
    with pytest.raises(call.error, match=r"answered 503; .*the 0\.7 s deadline would pass"):
        call(max_retries=50, deadline_s=0.7)
    assert time.monotonic() - start < 2.0  # 20 answers, 0.2 s apart, would take 4 s
    assert 2 <= len(server.requests) <= 5


def test_deadline_shortens_an_attempt(server: ChatServer, call: Caller) -> None:
    server.queue(Scripted(content="late", delay_s=3))
    start = time.monotonic()
    with pytest.raises(call.error, match=r"timed out after 0\.4 s; .*0\.4 s deadline"):
        call(timeout_s=10, deadline_s=0.4)
    assert time.monotonic() - start < 2.0
    assert len(server.requests) == 1


def test_bad_settings_are_the_adapters_errors() -> None:
    for adapter, error in ((OpenAIChat, LLMError), (OpenAIEmbedder, EmbeddingError)):
        for bad in (
            {"base_url": "ftp://host"},
            {"max_retries": -1},
            {"timeout_s": 0},
            {"deadline_s": 0},
            {"max_backoff_s": -1},
        ):
            options: dict[str, Any] = {"base_url": "http://h", "model": "m", **bad}
            with pytest.raises(error):
                adapter(**options)


# ---------------------------------------------------------------- the policy, sans I/O

SERVICE = Service("test", LLMError)
REQUEST = httpx.Request("POST", "http://h/x")


def _response(status: int, body: bytes = b"{}", **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, content=body, request=REQUEST)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after("3", now) == 3.0
    assert retry_after(formatdate(now + 5, usegmt=True), now) == pytest.approx(5.0)
    assert retry_after(formatdate(now - 5, usegmt=True), now) == 0.0
    assert retry_after("-4", now) == 0.0
    for unreadable in (None, "soon", "", "Wed, 21 Oct 2015 07:28:00"):
        assert retry_after(unreadable, now) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_backoff_s=0.25, max_backoff_s=8.0)
    assert [policy.wait(a, None, 1.0) for a in range(7)] == [0.25, 0.5, 1, 2, 4, 8, 8]
    assert policy.wait(2, None, 0.0) == 0.5  # jitter keeps at least half
    assert policy.wait(0, 3.0, 0.5) == 3.0 and policy.wait(0, 30.0, 0.5) == 8.0


def test_deadline_limits_attempts_and_waits() -> None:
    policy = RetryPolicy(timeout_s=5, deadline_s=2)
    assert policy.attempt_timeout(0.5) == 1.5 and RetryPolicy().attempt_timeout(99) == 60
    assert policy.out_of_time(1.5, 0.5) and not policy.out_of_time(1.0, 0.5)


def test_exchange_steps_through_a_retry() -> None:
    flow = exchange({"q": 1}, RetryPolicy(), SERVICE, rand=lambda: 0.0)
    assert next(flow) == Send({"q": 1}, 60.0)
    assert flow.send(_response(429, **{"Retry-After": "2"})) == Sleep(2.0)
    assert flow.send(None) == Send({"q": 1}, 60.0)
    # the second backoff, 0.25 * 2**1, at the floor of its jitter
    assert flow.throw(httpx.ConnectError("refused")) == Sleep(0.25)
    assert flow.send(None) == Send({"q": 1}, 60.0)
    with pytest.raises(StopIteration) as done:
        flow.send(_response(200, b'{"a": 1}'))
    reply = done.value.value
    assert isinstance(reply, JsonReply) and (reply.payload, reply.retries) == ({"a": 1}, 2)


def test_exchange_fails_on_invalid_json_and_on_4xx() -> None:
    flow = exchange({}, RetryPolicy(), SERVICE)
    next(flow)
    with pytest.raises(LLMError, match="sent invalid JSON"):
        flow.send(_response(200, b"<html>"))
    flow = exchange({}, RetryPolicy(), SERVICE)
    next(flow)
    with pytest.raises(LLMError, match="answered 403: nope"):
        flow.send(_response(403, b"nope"))

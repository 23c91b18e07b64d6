"""End to end: `memlane serve` on loopback (real uvicorn), the MCP SDK's own client over
streamable HTTP and stdio, and the dashboard in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "memlane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Served:
    def __init__(self, base: str, env: dict[str, str], store: str) -> None:
        self.base = base
        self.env = env
        self.store = store
        self.key = _cli(env, "keys", "create", "--tenant", "acme", "--label", "e2e")
        self.alice_key = _cli(env, "keys", "create", "--tenant", "acme", "--users", "alice")
        self.headers = {"Authorization": f"Bearer {self.key}"}

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, self.base + path, headers=self.headers, timeout=30, **kw)
        assert r.status_code < 400, r.text
        return r.json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve")
    store = f"sqlite:///{tmp / 'served.db'}"
    env = {
        **os.environ,
        "MEMLANE_STORE": store,
        "MEMLANE_EMBEDDER": "fake",
        "MEMLANE_REDIS_URL": redis_url,  # sessions and state through the Redis tier
        "MEMLANE_DATA_DIR": str(tmp / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MEMLANE_LLM_BASE_URL", None)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memlane.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"memlane serve did not start: {out}")
        time.sleep(0.2)
    try:
        yield Served(base, env, store)
    finally:
        proc.terminate()
        proc.wait(15)


def _seed(s: Served) -> dict[str, Any]:
    london = s.api("POST", "/v1/users/alice/memories", json={"text": "Alice lives in London"})
    paris = s.api(
        "POST",
        f"/v1/users/alice/memories/{london['id']}/supersede",
        json={"text": "Alice lives in Paris", "reason": "she moved"},
    )
    s.api("POST", "/v1/users/alice/memories", json={"text": "Alice is allergic to peanuts"})
    s.api(
        "POST",
        "/v1/users/alice/sessions/trip/messages",
        json={"messages": [{"role": "user", "content": "Book a table for Friday"}]},
    )
    version = s.api("GET", "/v1/users/alice/sessions/trip/state")["version"]
    s.api(
        "PUT",
        "/v1/users/alice/sessions/trip/state",
        json={"data": {"step": "booking"}, "expected_version": version},
    )
    return {"london": london, "paris": paris}


def test_rest_over_real_http(served: Served) -> None:
    ids = _seed(served)
    hits = served.api("POST", "/v1/users/alice/search", json={"query": "where does Alice live"})
    assert hits["hits"][0]["record"]["id"] == ids["paris"]["id"]
    assert httpx.get(served.base + "/metrics").text.startswith("# HELP")
    health = httpx.get(served.base + "/health").json()
    assert health["status"] == "ok" and health["tiers"]["redis"] == "ok"
    state = served.api("GET", "/v1/users/alice/sessions/trip/state")
    assert state["data"] == {"step": "booking"}  # written through, read back via Redis
    spec = httpx.get(served.base + "/openapi.json").json()
    assert len(spec["paths"]) >= 20
    denied = httpx.get(
        served.base + "/v1/users/bob/memories",
        headers={"Authorization": f"Bearer {served.alice_key}"},
    )
    assert denied.status_code == 403 and "Traceback" not in denied.text


def _mcp_result(result: Any) -> dict[str, Any]:
    if result.structured_content is not None:
        data: dict[str, Any] = result.structured_content
        return data.get("result", data) if isinstance(data, dict) else data
    text = result.content[0].text
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def test_mcp_over_streamable_http(served: Served) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def scenario() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {served.alice_key}"})
        async with Client(streamable_http_client(served.base + "/mcp/", http_client=http)) as c:
            names = sorted(t.name for t in (await c.list_tools()).tools)
            assert names == ["forget_memory", "get_context", "remember", "search_memories"]
            stored = _mcp_result(
                await c.call_tool("remember", {"user_id": "alice", "text": "Alice plays cello"})
            )
            found = _mcp_result(
                await c.call_tool("search_memories", {"user_id": "alice", "query": "cello"})
            )
            assert found["memories"][0]["memory_id"] == stored["memory_id"]
            ctx = _mcp_result(
                await c.call_tool(
                    "get_context", {"user_id": "alice", "query": "cello", "budget": 300}
                )
            )
            assert "Alice plays cello" in ctx["text"] and ctx["tokens"] <= 300
            other = await c.call_tool("search_memories", {"user_id": "bob", "query": "x"})
            assert other.is_error and "may not access user 'bob'" in other.content[0].text
            gone = _mcp_result(
                await c.call_tool(
                    "forget_memory", {"user_id": "alice", "memory_id": stored["memory_id"]}
                )
            )
            assert gone == {"forgotten": stored["memory_id"]}
        await http.aclose()
        anonymous = httpx.post(
            served.base + "/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
        )
        assert anonymous.status_code == 401

    asyncio.run(scenario())


def test_mcp_over_stdio(served: Served) -> None:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memlane.cli", "mcp", "--user", "stdio-user"],
        env={
            k: v
            for k, v in served.env.items()
            if k.startswith(("MEMLANE_", "HF_", "PATH", "PYTHONPATH"))
        },
    )

    async def scenario() -> None:
        async with Client(params) as c:
            stored = _mcp_result(await c.call_tool("remember", {"text": "Prefers tea over coffee"}))
            found = _mcp_result(await c.call_tool("search_memories", {"query": "tea"}))
            assert found["memories"][0]["memory_id"] == stored["memory_id"]
            denied = await c.call_tool(
                "search_memories", {"query": "tea", "user_id": "someone-else"}
            )
            assert denied.is_error and "bound to user" in denied.content[0].text

    asyncio.run(scenario())


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    assert Path(browser).exists() and Path(driver).exists(), (
        "the dashboard test needs Debian's chromium and chromium-driver "
        "(scripts/install.sh installs them)"
    )
    return browser, driver


def test_dashboard_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = _chromium()
    ids = _seed(served)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not look for drivers online
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    # The page re-renders lists; an element found a moment ago may be replaced.
    wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))

    def testid(name: str) -> Any:
        return wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, f'[data-testid="{name}"]'))
        )

    try:
        driver.get(served.base + "/dashboard")
        testid("key").send_keys(served.key)
        testid("connect").click()
        wait.until(lambda d: "alice" in testid("user").text)
        testid("user").find_element(By.CSS_SELECTOR, 'option[value="alice"]').click()
        # Timeline: the superseded memory is visible and linked to what replaced it.
        old = ids["london"]["id"]
        assert testid(f"status-{old}").text == "superseded"
        assert testid(f"replaced-by-{old}").text == ids["paris"]["id"]
        assert testid(f"status-{ids['paris']['id']}").text == "current"
        # Search with the score explanation.
        testid("query").send_keys("where does Alice live")
        testid("search").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="hit"]'))
        first = driver.find_elements(By.CSS_SELECTOR, '[data-testid="hit"]')[0]
        assert "Alice lives in Paris" in first.text
        assert "vector" in first.find_element(By.CSS_SELECTOR, '[data-testid="explanation"]').text
        # A memory's history.
        testid(f"history-{old}").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="event"]')) == 2)
        assert "she moved" in testid("history").text
        # Sessions: messages and state.
        testid("session-trip").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="message"]'))
        assert "Book a table for Friday" in testid("session").text
        assert '"step": "booking"' in testid("state").text
        # Edit, then forget.
        paris = ids["paris"]["id"]
        testid(f"edit-{paris}").click()
        alert = wait.until(ec.alert_is_present())
        alert.send_keys("Alice lives in Lyon")
        alert.accept()
        wait.until(lambda d: "Alice lives in Lyon" in testid("timeline").text)
        testid(f"forget-{paris}").click()
        wait.until(ec.alert_is_present()).accept()
        wait.until(lambda d: testid(f"status-{paris}").text == "deleted")
        driver.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        if os.environ.get("MEMLANE_SCREENSHOT"):
            shutil.copy(shot, os.environ["MEMLANE_SCREENSHOT"])
    finally:
        driver.quit()
    record = served.api("GET", f"/v1/users/alice/memories/{paris}")
    assert record["text"] == "Alice lives in Lyon" and record["deleted_at"] is not None
    events = served.api("GET", f"/v1/users/alice/memories/{paris}/history")["events"]
    assert [e["action"] for e in events] == ["add", "update", "delete"]


def test_mcp_agent_limited_key_sees_only_its_agent(served: Served) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    bot_key = _cli(served.env, "keys", "create", "--tenant", "acme", "--agents", "bot")
    theirs = served.api(
        "POST",
        "/v1/users/erin/memories",
        json={"text": "Erin's cello lessons", "agent_id": "other"},
    )
    shared = served.api("POST", "/v1/users/erin/memories", json={"text": "Erin's cello is old"})

    async def scenario() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bot_key}"})
        async with Client(streamable_http_client(served.base + "/mcp/", http_client=http)) as c:
            mine = _mcp_result(
                await c.call_tool(
                    "remember", {"user_id": "erin", "agent_id": "bot", "text": "Erin's cello"}
                )
            )
            found = _mcp_result(
                await c.call_tool(
                    "search_memories", {"user_id": "erin", "agent_id": "bot", "query": "cello"}
                )
            )
            # Its own memories and the shared ones, as REST and MemoryTools (memlane.access).
            assert {m["memory_id"] for m in found["memories"]} == {
                mine["memory_id"],
                shared["id"],
            }
            forget = await c.call_tool(
                "forget_memory",
                {"user_id": "erin", "agent_id": "bot", "memory_id": theirs["id"]},
            )
            assert forget.is_error and "NotFoundError" in forget.content[0].text
            ctx = await c.call_tool("get_context", {"user_id": "erin", "agent_id": "bot"})
            assert ctx.is_error and "agent-limited" in ctx.content[0].text
            unnamed = await c.call_tool("search_memories", {"user_id": "erin", "query": "x"})
            assert unnamed.is_error
        await http.aclose()

    asyncio.run(scenario())
    assert served.api("GET", f"/v1/users/erin/memories/{theirs['id']}")["deleted_at"] is None

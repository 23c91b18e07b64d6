"""The Redis tier on a real Redis: same behaviour as its durable store, served warm,
coherent across processes, and safe when Redis goes away and comes back."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path

import pytest
import redis
from tests.servers import free_port, start_redis

from memlane import Memory
from memlane.errors import ConfigurationError
from memlane.ports.store import Store
from memlane.settings import Settings
from memlane.stores.redis_tier import RedisTier
from memlane.stores.sqlite import SqliteStore
from memlane.testing import FakeEmbedder, FixedClock, StoreConformance


class TestRedisTierOverSqlite(StoreConformance):
    @pytest.fixture(autouse=True)
    def _setup(self, tmp_path: Path, redis_url: str) -> None:
        self.dir, self.redis_url, self.n = tmp_path, redis_url, 0

    def make_store(self) -> Store:
        self.n += 1
        prefix = f"memlane-test:{uuid.uuid4().hex}:"
        return RedisTier(SqliteStore(self.dir / f"s{self.n}.db"), self.redis_url, prefix=prefix)


def _tier(path: Path, url: str, **kwargs: object) -> RedisTier:
    return RedisTier(SqliteStore(path), url, prefix=f"memlane-test:{uuid.uuid4().hex}:", **kwargs)  # type: ignore[arg-type]


def test_session_reads_are_served_from_redis(tmp_path: Path, redis_url: str) -> None:
    tier = _tier(tmp_path / "a.db", redis_url)
    m = Memory(tier, embedder=FakeEmbedder(), clock=FixedClock())
    m.add_messages("s1", [("user", "hello"), ("assistant", "hi")], user_id="u")
    first = m.get_history("s1", user_id="u")
    misses = tier.counters["misses"]
    again = m.get_history("s1", user_id="u")
    assert again == first and tier.counters["misses"] == misses and tier.counters["hits"] >= 1
    keys = redis.Redis.from_url(redis_url).keys(tier.prefix + "v:*")
    assert keys, "the warm entry lives in Redis"
    ttl = redis.Redis.from_url(redis_url).ttl(keys[0])
    assert 0 < ttl <= tier.ttl_s
    m.add_messages("s1", [("user", "one more")], user_id="u")  # durable first, then retire
    assert [msg.content for r in m.get_history("s1", user_id="u") for msg in r.messages][-1] == (
        "one more"
    )
    assert tier.health()["redis"] == "ok"
    m.close()


def test_two_processes_share_one_coherent_tier(tmp_path: Path, redis_url: str) -> None:
    prefix = f"memlane-test:{uuid.uuid4().hex}:"
    path = tmp_path / "shared.db"
    a = Memory(RedisTier(SqliteStore(path), redis_url, prefix=prefix), embedder=FakeEmbedder())
    b = Memory(RedisTier(SqliteStore(path), redis_url, prefix=prefix), embedder=FakeEmbedder())
    a.set_state("s", {"step": 1}, user_id="u", expected_version=0)
    assert b.get_state("s", user_id="u").data == {"step": 1}  # b warms its entry
    a.set_state("s", {"step": 2}, user_id="u", expected_version=1)
    assert b.get_state("s", user_id="u").data == {"step": 2}  # a's write retired it
    a.forget_user("u")
    assert b.get_state("s", user_id="u").version == 0
    a.close()
    b.close()


def test_redis_down_then_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, redis_url: str
) -> None:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is needed (apt-get install redis-server)"
    port = free_port()
    proc = start_redis(binary, port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    tier = _tier(tmp_path / "d.db", url, retry_s=0.2)
    m = Memory(tier, embedder=FakeEmbedder(), clock=FixedClock())
    try:
        m.add_messages("s", [("user", "before the outage")], user_id="u")
        m.get_history("s", user_id="u")
        m.get_history("s", user_id="u")
        assert tier.counters["hits"] >= 1
        proc.kill()
        proc.wait(5)
        caplog.set_level(logging.WARNING, logger="memlane.stores.redis_tier")
        for i in range(5):  # keeps working on the durable store
            m.add_messages("s", [("user", f"during the outage {i}")], user_id="u")
            m.set_state("s", {"n": i}, user_id="u", expected_version=i)
            got = m.get_history("s", user_id="u")
            assert got[-1].messages[-1].content == f"during the outage {i}"
        assert tier.health()["redis"] == "degraded" and tier.counters["outages"] == 1
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1  # logged once per outage, not per call
        proc = start_redis(binary, port, tmp_path)
        time.sleep(0.3)
        texts = [msg.content for r in m.get_history("s", user_id="u") for msg in r.messages]
        assert texts == ["before the outage"] + [f"during the outage {i}" for i in range(5)]
        assert tier.health()["redis"] == "ok" and tier.counters["rewarmed"] >= 1
        hits = tier.counters["hits"]
        assert m.get_state("s", user_id="u").data == {"n": 4}
        m.get_history("s", user_id="u")
        assert tier.counters["hits"] > hits  # warm again
    finally:
        m.close()
        proc.kill()
        proc.wait(5)


def test_dead_redis_from_the_start_loses_nothing(tmp_path: Path) -> None:
    tier = _tier(tmp_path / "x.db", f"redis://127.0.0.1:{free_port()}/0", retry_s=60)
    m = Memory(tier, embedder=FakeEmbedder(), clock=FixedClock())
    m.add_messages("s", [("user", "kept anyway")], user_id="u")
    assert m.get_history("s", user_id="u")[0].messages[0].content == "kept anyway"
    assert tier.health()["redis"] == "degraded" and tier.counters["errors"] >= 1
    m.close()


def test_settings_build_the_tier(tmp_path: Path) -> None:
    env = {"MEMLANE_STORE": f"sqlite:///{tmp_path}/s.db", "MEMLANE_REDIS_URL": "redis://h:1/0"}
    store = Settings.from_env(env).build_store()
    assert isinstance(store, RedisTier) and store.redis_url == "redis://h:1/0"
    assert not isinstance(
        Settings.from_env({"MEMLANE_STORE": env["MEMLANE_STORE"]}).build_store(), RedisTier
    )
    with pytest.raises(ConfigurationError):
        RedisTier(SqliteStore(tmp_path / "y.db"), "http://not-redis")


def test_default_prefix_keeps_stores_apart_and_agrees_on_one_file(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two stores behind one Redis database with the default prefix: neither sees the
    # other's sessions; two spellings of one file share entries (and retire each other's).
    one = Memory(RedisTier(SqliteStore(tmp_path / "one.db"), redis_url), embedder=FakeEmbedder())
    two = Memory(RedisTier(SqliteStore(tmp_path / "two.db"), redis_url), embedder=FakeEmbedder())
    one.set_state("s", {"store": "one"}, user_id="u", expected_version=0)
    assert one.get_state("s", user_id="u").data == {"store": "one"}  # warm in Redis
    assert two.get_state("s", user_id="u").version == 0
    monkeypatch.chdir(tmp_path)
    same = Memory(RedisTier(SqliteStore("one.db"), redis_url), embedder=FakeEmbedder())
    assert isinstance(same.store, RedisTier) and isinstance(one.store, RedisTier)
    assert same.store.prefix == one.store.prefix
    same.set_state("s", {"store": "one, again"}, user_id="u", expected_version=1)
    assert one.get_state("s", user_id="u").data == {"store": "one, again"}
    memory_a = RedisTier(SqliteStore(":memory:"), redis_url)
    memory_b = RedisTier(SqliteStore(":memory:"), redis_url)
    assert memory_a.prefix != memory_b.prefix  # in-memory stores are private to a process
    assert "secret" not in RedisTier(SqliteStore(":memory:"), "redis://:secret@h:1/0").redis_url
    for m in (one, two, same):
        m.close()


def test_a_lost_compare_and_swap_retires_the_stale_entry(tmp_path: Path, redis_url: str) -> None:
    # Process A writes while it cannot reach Redis, so B's cached state is stale. B's
    # update against that stale version fails, and the failure itself retires the entry:
    # B's retry reads the committed state instead of looping on the stale one.
    from memlane.errors import ConflictError

    prefix = f"memlane-test:{uuid.uuid4().hex}:"
    path = tmp_path / "shared.db"
    dead = f"redis://127.0.0.1:{free_port()}/0"
    a = Memory(RedisTier(SqliteStore(path), dead, prefix=prefix), embedder=FakeEmbedder())
    b = Memory(RedisTier(SqliteStore(path), redis_url, prefix=prefix), embedder=FakeEmbedder())
    b.set_state("s", {"n": 1}, user_id="u", expected_version=0)
    assert b.get_state("s", user_id="u").version == 1  # cached in Redis
    a.set_state("s", {"n": 2}, user_id="u", expected_version=1)  # Redis not told
    assert b.get_state("s", user_id="u").data == {"n": 1}  # stale, bounded by the TTL
    with pytest.raises(ConflictError):
        b.set_state("s", {"n": 3}, user_id="u", expected_version=1)
    fresh = b.get_state("s", user_id="u")
    assert fresh.version == 2 and fresh.data == {"n": 2}
    b.set_state("s", {"n": 3}, user_id="u", expected_version=2)
    assert isinstance(a.store, RedisTier) and a.store.health()["redis"] == "degraded"
    a.close()
    b.close()


def test_default_prefix_names_the_database_not_the_spelling() -> None:
    from memlane.stores.redis_tier import default_prefix

    same = {
        default_prefix("postgresql://alice:pw1@db.example:5432/memlane"),
        default_prefix("postgres://bob:pw2@db.example/memlane"),
        default_prefix("postgresql+psycopg://db.example:5432/memlane"),
    }
    assert len(same) == 1
    assert default_prefix("postgresql://db.example/other") not in same
    assert default_prefix("postgresql://db2.example/memlane") not in same
    assert default_prefix("postgresql:///memlane?host=/run/pg") != default_prefix(
        "postgresql:///memlane?host=/run/other"
    )

"""Store plugins: a real (tiny) distribution, found by importlib.metadata on sys.path,
registers ``demo://`` in the ``memlane.stores`` entry point group; memlane opens it
through ``Memory`` and the shipped conformance suite runs against it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memlane import ConfigurationError, Memory, PluginError
from memlane.ports.store import Store
from memlane.stores import ENTRY_POINT_GROUP, open_store
from memlane.testing import FakeEmbedder, StoreConformance

PLUGIN = '''
"""A third-party memlane backend: the in-memory store under its own scheme."""
from memlane.stores.memory import MemoryStore

OPENED = []


class DemoStore(MemoryStore):
    def __init__(self, url):
        super().__init__()
        self.url = url


def make_store(url, *, create=True):
    OPENED.append((url, create))
    return DemoStore(url)


def not_a_store(url):
    return {"url": url}
'''


def _distribution(site: Path, name: str, version: str, entries: dict[str, str]) -> None:
    """A distribution as an installer leaves it: a .dist-info with METADATA and
    entry_points.txt (what importlib.metadata reads)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}\n")


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site-packages")
    (site / "memlane_demo_store").mkdir()
    (site / "memlane_demo_store" / "__init__.py").write_text(PLUGIN)
    _distribution(
        site,
        "memlane-demo-store",
        "0.1",
        {
            "demo": "memlane_demo_store:make_store",
            "notastore": "memlane_demo_store:not_a_store",
            "counted": "memlane_demo_store:make_store",
        },
    )
    (site / "memlane_broken_store.py").write_text(
        'raise ImportError("memlane_broken_store needs libbroken, which is not installed")\n'
    )
    _distribution(site, "memlane-broken-store", "0.2", {"broken": "memlane_broken_store:Store"})
    _distribution(site, "memlane-twin-a", "1.0", {"twin": "memlane_demo_store:make_store"})
    _distribution(site, "memlane-twin-b", "1.0", {"twin": "memlane_demo_store:DemoStore"})
    return site


@pytest.fixture(autouse=True)
def _installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
    yield


def test_plugin_opens_through_memory() -> None:
    import memlane_demo_store  # type: ignore[import-not-found]

    with Memory("demo://first", embedder=FakeEmbedder()) as memory:
        assert type(memory.store).__name__ == "DemoStore" and memory.store.url == "demo://first"
        stored = memory.add("Alice plays the cello", user_id="alice")
        assert memory.search("cello", user_id="alice")[0].record.id == stored.id
    reader = open_store("demo://second", create=False)  # the factory takes create=
    assert isinstance(reader, Store)
    assert memlane_demo_store.OPENED[-1] == ("demo://second", False)


def test_entry_points_are_read_only_for_unknown_schemes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[Any] = []
    real = importlib.metadata.entry_points

    def counting(**kw: Any) -> Any:
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    for url in ("memory://", f"sqlite:///{tmp_path / 'x.db'}", str(tmp_path / "y.db")):
        open_store(url).close()
    assert calls == []  # built-in schemes never look at installed distributions
    open_store("counted://a")  # read once (a scheme no other test opens), then remembered
    open_store("counted://b")
    assert calls == [{"group": ENTRY_POINT_GROUP}]


def test_import_memlane_does_not_import_plugins(site: Path) -> None:
    code = (
        "import sys, memlane; memlane.Memory('memory://').close(); "
        "print(sorted(m for m in sys.modules if m.startswith('memlane_')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_plugin_that_fails_to_import_is_named() -> None:
    with pytest.raises(PluginError) as caught:
        Memory("broken://anything", embedder=FakeEmbedder())
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert error.distribution == "memlane-broken-store 0.2"
    assert error.entry_point == "broken = memlane_broken_store:Store"
    message = str(error)
    assert (
        "memlane-broken-store 0.2" in message and "broken = memlane_broken_store:Store" in message
    )
    assert "needs libbroken" in message and isinstance(error.__cause__, ImportError)


def test_plugin_errors() -> None:
    with pytest.raises(PluginError, match="returned dict, not a memlane Store"):
        open_store("notastore://x")
    with pytest.raises(PluginError, match="more than one installed distribution") as twin:
        open_store("twin://x")
    assert "memlane-twin-a 1.0" in str(twin.value) and "memlane-twin-b 1.0" in str(twin.value)
    with pytest.raises(ConfigurationError, match="unknown store scheme 'nosuch'") as unknown:
        open_store("nosuch://x")
    assert not isinstance(unknown.value, PluginError)
    assert "demo://" in str(unknown.value) and "sqlite://" in str(unknown.value)


def test_builtin_schemes_win_over_plugins(site: Path, tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky"
    _distribution(sneaky, "memlane-sneaky", "1.0", {"memory": "memlane_demo_store:make_store"})
    sys.path.insert(0, str(sneaky))
    try:
        assert type(open_store("memory://")).__name__ == "MemoryStore"
    finally:
        sys.path.remove(str(sneaky))


class TestPluginConformance(StoreConformance):
    """memlane's shipped conformance suite, run against the plugin's store."""

    def make_store(self) -> Store:
        return open_store("demo://conformance")

"""Helpers shared by test modules.

Running the scripts in examples/ as real processes: the examples are documentation users
copy; the tests run them unchanged, in a subprocess with the environment a user would set,
so what the docs promise is what they do.

A real embedding model's promise, for each way of building one: a paraphrase finds the
memory it means.

The scoped-ids migration (SQLite 7, PostgreSQL 4) seen through memlane: each backend's test
writes with its migrations patched to stop before it, then checks the same promises."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chat_server import ChatServer
from memlane import CoreConfig, Filters, Memory, MemoryKind, MemoryRecord, SearchRecipe
from memlane.ports.store import Store
from memlane.testing import FakeEmbedder

REPO = Path(__file__).resolve().parents[1]


def store_files(folder: Path, name: str = "m.db") -> list[Path]:
    """Every file a SQLite store named ``name`` wrote in ``folder``: the database, its
    log, and everything in the search-index folder beside it."""
    found: list[Path] = []
    for p in folder.iterdir():
        if p.is_dir() and p.name.startswith(name):
            found.extend(q for q in p.rglob("*") if q.is_file())
        elif p.name.startswith(name):
            found.append(p)
    return found


def example_env(store: Path, chat: ChatServer | None = None) -> dict[str, str]:
    """This process's environment plus a SQLite store at ``store``, the fake embedder and,
    with ``chat``, the scripted chat server as the model."""
    env = {
        **os.environ,
        "MEMLANE_STORE": f"sqlite:///{store}",
        "MEMLANE_EMBEDDER": "fake",
        "HF_HUB_OFFLINE": "1",
    }
    if chat is not None:
        env |= {"MEMLANE_LLM_BASE_URL": chat.base_url, "MEMLANE_LLM_MODEL": "scripted"}
    return env


def run_example(
    name: str, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with ``args``; the caller checks its exit code and output."""
    command = [sys.executable, str(REPO / "examples" / name), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------- embedders


def add_three_and_find_the_dog_by_meaning(m: Memory) -> None:
    """Three unrelated memories for user u; a question sharing no word with the right one
    finds it by semantic search alone."""
    m.add("I adopted a golden retriever last spring", user_id="u")
    m.add("My tax return is due in April", user_id="u")
    m.add("The quarterly report needs two charts", user_id="u")
    hits = m.search("which dog do I own", user_id="u", recipe="semantic", limit=1)
    assert hits[0].record.text.startswith("I adopted a golden retriever")


# ---------------------------------------------------------------------------- scoped ids


LATER_RECORD_COLUMNS = {
    "periods": "'[]'",
    "period_words": "''",
    "trust": "'user'",
    "quarantine": "'[]'",
}
"""The record columns added by migrations after scoped ids (name: default), which this
code writes. To write rows into a database of the older schema, a test adds them for the
writes and drops them again, leaving a database of that schema holding the rows."""


SQLITE_VECTORS_APART = (
    "CREATE TABLE vectors (vid INTEGER PRIMARY KEY AUTOINCREMENT, vector BLOB NOT NULL)",
    "ALTER TABLE embeddings RENAME COLUMN vector TO vid",
    "CREATE TABLE sparse_terms (vid INTEGER NOT NULL, model INTEGER NOT NULL, "
    "terms BLOB NOT NULL, PRIMARY KEY (vid, model)) WITHOUT ROWID",
)
"""SQLite's vectors as today's code writes them (migration 15), and the table of their
sparse terms (migration 18), on an older schema."""

SQLITE_VECTORS_BACK = (
    "ALTER TABLE embeddings RENAME COLUMN vid TO vector",
    "UPDATE embeddings SET vector = "
    "(SELECT v.vector FROM vectors v WHERE v.vid = embeddings.vector)",
    "DROP TABLE vectors",
    "DROP TABLE sparse_terms",
)
"""... and back in their keys' rows, as older code wrote them."""


def write_before_scoped_ids(
    store: Store,
    execute: Callable[[str], None],
    json_type: str,
    *,
    later: tuple[str, ...] = (),
    undo: tuple[str, ...] = (),
    **kwargs: Any,
) -> tuple[MemoryRecord, list[Any]]:
    """Through ``store`` (at the schema before ids were scoped per user): an idempotent add
    and two agents' turns in one session, each turn's lexical context taken from the other
    (context window 1). ``execute`` runs SQL on the database, whose JSON columns are of
    ``json_type``; ``later`` more of it first (what later schemas changed, which today's
    code needs to write), ``undo`` after the writes. Returns the add and the export rows
    as they were."""
    config = CoreConfig(context_window=1, audit="off")  # a memlane with no audit trail yet
    # a memlane with no audit trail and no sparse terms yet
    old = Memory(store, embedder=FakeEmbedder(), config=config, sparse=None, **kwargs)
    old.setup()
    for sql in later:
        execute(sql)
    for name, default in LATER_RECORD_COLUMNS.items():
        kind = json_type if name in ("periods", "quarantine") else "TEXT"
        execute(f"ALTER TABLE records ADD COLUMN {name} {kind} NOT NULL DEFAULT {default}")
    paid = old.add("u paid the invoice", user_id="u", idempotency_key="order-17")
    for text, agent in (("the vault code is zebra4411", "other"), ("ok, planning", "planner")):
        old.add(text, user_id="u", kind=MemoryKind.EPISODE, session_id="s", agent_id=agent)
    before = old.export_rows()
    old.close()
    for name in LATER_RECORD_COLUMNS:
        execute(f"ALTER TABLE records DROP COLUMN {name}")
    for sql in undo:
        execute(sql)
    return paid, before


def check_scoped_ids_kept_every_row(m: Memory, paid: MemoryRecord, before: list[Any]) -> None:
    """After the migration: every row is kept; only the context vector that may hold
    another agent's turn is gone; the idempotent add finds its first write; the same id
    can be another user's; and the other agent's words no longer find the planner's turn."""
    changed = [(b, a) for b, a in zip(before[1:], m.export_rows()[1:], strict=True) if b != a]
    assert [(b["data"]["text"], a["data"]["context_hash"]) for b, a in changed] == [
        ("ok, planning", None)
    ]
    ((was, now),) = changed
    assert {k for k in was["data"] if was["data"][k] != now["data"][k]} == {"context_hash"}
    assert m.add("u paid the invoice", user_id="u", idempotency_key="order-17") == paid
    m.import_rows([{"type": "record", "data": paid.evolve(user_id="v").to_dict()}])
    assert m.get(paid.id, user_id="v").user_id == "v" and m.get(paid.id, user_id="u") == paid
    words = SearchRecipe("w", {"lexical": 1.0}, time_weight=0.0, neighbor_weight=0.0)
    planner = Filters(agent_id="planner")
    assert m.search("zebra4411", user_id="u", filters=planner, recipe=words) == []


class TermedScope:
    """A user ``u`` of ``n`` memories that share the words "heron" and "river", each
    with made-up sparse terms of ``model`` stored (``made``: content hash -> terms),
    and a query vector that finds some of them by meaning: what the stores' read-ahead
    of a search's sparse terms is tested on."""

    model = "terms-model"

    def __init__(self, store: Store, n: int) -> None:
        from memlane import MemoryInput
        from memlane.ports import store as ops

        self.store = store
        self.embedder = FakeEmbedder()
        self.memory = Memory(store, embedder=self.embedder)
        texts = [MemoryInput(f"heron note {i} river {i % 7}") for i in range(n)]
        self.records = self.memory.add_many(texts, user_id="u")
        self.made = {r.content_hash: f"T-{r.text}".encode() for r in self.records}
        vectors = self.memory.core.model_id
        sparse = tuple(self.made.items())
        store.batch([ops.PutEmbeddings(vectors, (), sparse_model=self.model, sparse=sparse)])
        self.hash_of = {r.id: r.content_hash for r in self.records}
        self.now = self.memory.core.now()
        self.vector = self.embedder.embed(["heron river 3"])[0]
        self.hint = (self.model, vectors)

"""Attacks across scopes over REST (ASGI client): ids one tenant could take or probe in
another, and words of a turn an agent-limited key cannot read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from memlane import AsyncMemory, Memory
from memlane.ids import stable_id
from memlane.models import Job, JobStatus
from memlane.ports import store as ops
from memlane.server import KeyStore, create_app
from memlane.server.keys import storage_user
from memlane.testing import FakeEmbedder


class Env:
    def __init__(self, client: TestClient, keys: KeyStore, memory: AsyncMemory) -> None:
        self.client = client
        self.memory = memory
        self.acme, _ = keys.create("acme")
        self.rival, _ = keys.create("rival")
        self.planner, _ = keys.create("acme", agents=["planner"])
        self.other, _ = keys.create("acme", agents=["other"])

    def call(self, key: str, method: str, path: str, **kw: Any) -> Any:
        return self.client.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kw)

    def import_rows(self, key: str, user: str, rows: list[dict[str, Any]]) -> Any:
        body = "\n".join(json.dumps(r) for r in rows)
        return self.call(key, "POST", f"/v1/users/{user}/import", content=body)


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[Env]:
    memory = AsyncMemory(f"sqlite:///{tmp_path / 'srv.db'}", embedder=FakeEmbedder())
    keys = KeyStore(memory.store)
    with TestClient(create_app(memory, keys, mcp=False)) as client:
        yield Env(client, keys, memory)
    memory.store.close()


def _record_row(env: Env, key: str, user: str, record_id: str) -> dict[str, Any]:
    """An export row of a memory of ``user`` (made for the purpose), renamed ``record_id``."""
    made = env.call(key, "POST", f"/v1/users/{user}/memories", json={"text": "rival's own note"})
    assert made.status_code == 201, made.text
    return {"type": "record", "data": {**made.json(), "id": record_id}}


def test_another_tenant_can_neither_block_nor_probe_an_id(env: Env) -> None:
    # The id of acme's next idempotent add is a public hash: rival takes it first.
    planned = stable_id("add", storage_user("acme", "alice"), "order-17")
    taken = env.import_rows(env.rival, "alice", [_record_row(env, env.rival, "alice", planned)])
    assert taken.status_code == 200, taken.text
    body = {"text": "acme paid invoice 17", "idempotency_key": "order-17"}
    first = env.call(env.acme, "POST", "/v1/users/alice/memories", json=body)
    assert first.status_code == 201, first.text
    assert first.json()["text"] == "acme paid invoice 17"
    retry = env.call(env.acme, "POST", "/v1/users/alice/memories", json=body)
    assert retry.status_code == 201 and retry.json() == first.json()

    # Importing under an id acme uses answers exactly as under a free one.
    secret = env.call(env.acme, "POST", "/v1/users/alice/memories", json={"text": "acme secret"})
    answers = [
        env.import_rows(env.rival, "alice", [_record_row(env, env.rival, "alice", rid)])
        for rid in (secret.json()["id"], "01FREEIDNOONEHASEVERUSED0")
    ]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"imported": {"record": 1}})] * 2
    got = env.call(env.acme, "GET", f"/v1/users/alice/memories/{secret.json()['id']}")
    assert got.json() == secret.json()


def test_another_tenant_can_neither_block_nor_probe_a_job_id(env: Env) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    acme_alice = storage_user("acme", "alice")
    job = Job("01JOBOFACME", acme_alice, "process", {}, JobStatus.DONE, t0, t0, t0)
    env.memory.store.batch([ops.PutJob(job, 0)])
    copy = {**job.to_dict(), "user_id": "alice", "payload": {"from": "rival"}}
    answer = env.import_rows(env.rival, "alice", [{"type": "job", "data": copy}])
    assert (answer.status_code, answer.json()) == (200, {"imported": {"job": 1}})
    mine = env.call(env.acme, "GET", "/v1/users/alice/jobs/01JOBOFACME").json()
    assert mine["payload"] == {} and mine["user_id"] == "alice"


def test_an_agent_key_learns_no_word_of_another_agents_turn(env: Env) -> None:
    said = {"agent_id": "other", "messages": [{"role": "user", "content": "code zebra4411"}]}
    r = env.call(env.other, "POST", "/v1/users/carol/sessions/s/messages", json=said)
    assert r.status_code == 201, r.text
    # REST refuses to file a turn under another agent's session; the library does not
    # (a process with the whole store), so the planner's turn is written there.
    local = Memory(env.memory.store, embedder=FakeEmbedder())
    local.add(
        "ok, planning",
        user_id=storage_user("acme", "carol"),
        kind="episode",
        session_id="s",
        agent_id="planner",
    )
    hidden = env.call(
        env.planner, "GET", "/v1/users/carol/sessions/s/messages", params={"agent_id": "planner"}
    )
    assert hidden.status_code == 404

    def lexical(word: str) -> list[Any]:
        query = {"query": word, "agent_id": "planner", "explain": True}
        hits = env.call(env.planner, "POST", "/v1/users/carol/search", json=query).json()["hits"]
        assert [h["record"]["text"] for h in hits] == ["ok, planning"]
        return [h["explanation"].get("lexical") for h in hits]

    assert lexical("zebra4411") == lexical("nowhere77") == [None]


ABSENT = "01NOSUCHMEMORYANYWHERE0000"


DANA = "/v1/users/dana"


def _other_agents_objects(env: Env) -> dict[str, str]:
    """Agent "other"'s objects of user dana: a memory, a memory the TTL sweep purged (its
    history keeps events, without their content), a session with a turn, state and a
    summary. Returns the two memories' ids."""
    u = DANA
    mine = {"agent_id": "other"}
    kept = env.call(env.other, "POST", f"{u}/memories", json={"text": "other's plan", **mine})
    purged = env.call(env.other, "POST", f"{u}/memories", json={"text": "other's old", **mine})
    turn = {"messages": [{"role": "user", "content": "pay invoice 4471"}], **mine}
    assert env.call(env.other, "POST", f"{u}/sessions/s-other/messages", json=turn).is_success
    state = {"data": {"step": 1}, "expected_version": 0}
    q = {"agent_id": "other"}
    put = env.call(env.other, "PUT", f"{u}/sessions/s-other/state", json=state, params=q)
    assert put.is_success
    assert env.call(env.other, "POST", f"{u}/sessions/s-other/summary", params=q).is_success
    dana = storage_user("acme", "dana")
    with Memory(env.memory.store, embedder=FakeEmbedder()) as local:
        expired = datetime(2000, 1, 1, tzinfo=UTC)
        local.update(purged.json()["id"], user_id=dana, expires_at=expired)
        assert local.sweep() == 1
    return {"kept": kept.json()["id"], "purged": purged.json()["id"]}


def _planner(env: Env, method: str, path: str, **kw: Any) -> tuple[int, str]:
    """What the planner agent's key gets back: status and body."""
    r = env.call(env.planner, method, path, params={"agent_id": "planner"}, **kw)
    return r.status_code, r.text


@pytest.mark.parametrize("which", ["kept", "purged"])
def test_an_agent_key_cannot_tell_another_agents_memory_from_an_absent_one(
    env: Env, which: str
) -> None:
    memory_id = _other_agents_objects(env)[which]
    u = DANA
    for method, path, body in [
        ("GET", "", None),
        ("PATCH", "", {"text": "x"}),
        ("POST", "/supersede", {"text": "x"}),
        ("DELETE", "", None),
        ("POST", "/restore", None),
        ("GET", "/history", None),
    ]:
        kw = {} if body is None else {"json": body}
        hidden = _planner(env, method, f"{u}/memories/{memory_id}{path}", **kw)
        absent = _planner(env, method, f"{u}/memories/{ABSENT}{path}", **kw)
        assert hidden[0] == 404, (method, path, hidden)
        assert hidden == (absent[0], absent[1].replace(ABSENT, memory_id)), (method, path)


def test_an_agent_key_cannot_tell_another_agents_session_from_an_absent_one(env: Env) -> None:
    _other_agents_objects(env)
    u = DANA
    for method, path in [
        ("GET", "/messages"),
        ("GET", "/state"),
        ("GET", "/state/history"),
        ("POST", "/summary"),
        ("GET", "/summary"),
    ]:
        hidden = _planner(env, method, f"{u}/sessions/s-other{path}")
        absent = _planner(env, method, f"{u}/sessions/s-absent{path}")
        assert hidden == (404, absent[1].replace("s-absent", "s-other")), (method, path)


def test_an_agent_keys_search_and_list_never_meet_another_agents_session(env: Env) -> None:
    # Nor do its searches or listings meet the other agent's session (its summary included).
    _other_agents_objects(env)
    u = DANA
    found = env.call(
        env.planner, "POST", f"{u}/search", json={"query": "invoice 4471", "agent_id": "planner"}
    )
    listed = env.call(env.planner, "GET", f"{u}/memories", params={"agent_id": "planner"})
    assert found.json()["hits"] == [] and listed.json()["items"] == []


def test_an_agent_key_cannot_tell_another_agents_memory_from_no_memory(env: Env) -> None:
    """An idempotent add's id is a hash of user, agent and key, so an agent-limited key can
    compute the id another agent's add would have; the 404 for that memory must read
    exactly as for an id nobody holds, or it tells which keys the other agent used."""
    body = {"text": "other's private order", "agent_id": "other", "idempotency_key": "order-1"}
    made = env.call(env.acme, "POST", "/v1/users/alice/memories", json=body)
    assert made.status_code == 201, made.text
    taken = stable_id("add", storage_user("acme", "alice"), "agent", "other", "order-1")
    free = stable_id("add", storage_user("acme", "alice"), "agent", "other", "order-2")
    assert made.json()["id"] == taken
    for method, tail in [
        ("GET", ""),
        ("GET", "/history"),
        ("DELETE", ""),
        ("POST", "/restore"),
    ]:
        answers = [
            env.call(env.planner, method, f"/v1/users/alice/memories/{rid}{tail}?agent_id=planner")
            for rid in (taken, free)
        ]
        shown = [(a.status_code, a.json()["error"].replace(rid, "ID")) for a, rid in
                 zip(answers, (taken, free), strict=True)]  # fmt: skip
        assert shown[0] == shown[1] and shown[0][0] == 404, (method, tail, shown)
    # Sessions: reading another agent's session reads as reading one that does not exist.
    turn = {"agent_id": "other", "messages": [{"role": "user", "content": "hi"}]}
    env.call(env.other, "POST", "/v1/users/alice/sessions/plans/messages", json=turn)
    for tail in ("/messages", "/state", "/state/history", "/summary"):
        answers = [
            env.call(env.planner, "GET", f"/v1/users/alice/sessions/{s}{tail}?agent_id=planner")
            for s in ("plans", "nosuch")
        ]
        shown = [(a.status_code, a.json()["error"].replace(s, "S")) for a, s in
                 zip(answers, ("plans", "nosuch"), strict=True)]  # fmt: skip
        assert shown[0] == shown[1] and shown[0][0] == 404, (tail, shown)


def test_an_agent_key_sees_no_history_of_another_agents_erased_memory(env: Env) -> None:
    """Erasure (a session delete, a TTL purge) takes the words out of a memory's history,
    and with them the snapshot that named its agent: the events must stay as hidden from
    other agents as the memory was."""
    turn = {"agent_id": "other", "messages": [{"role": "user", "content": "my card 4242"}]}
    made = env.call(env.other, "POST", "/v1/users/alice/sessions/plans/messages", json=turn)
    assert made.status_code == 201, made.text
    listed = env.call(env.acme, "GET", "/v1/users/alice/memories").json()["items"]
    (episode,) = [m["id"] for m in listed if m["agent_id"] == "other"]
    path = f"/v1/users/alice/memories/{episode}/history?agent_id=planner"
    assert env.call(env.planner, "GET", path).status_code == 404
    gone = env.call(env.acme, "DELETE", "/v1/users/alice/sessions/plans")
    assert gone.status_code == 200, gone.text
    assert env.call(env.acme, "GET", f"/v1/users/alice/memories/{episode}/history").json()["events"]
    hidden = env.call(env.planner, "GET", path)
    free = env.call(env.planner, "GET", path.replace(episode, "01FREEIDNOONEHASEVERUSED0"))
    assert hidden.status_code == free.status_code == 404, hidden.text
    assert hidden.json()["error"].replace(episode, "ID") == free.json()["error"].replace(
        "01FREEIDNOONEHASEVERUSED0", "ID"
    )


def test_the_graph_is_read_per_tenant_and_not_by_agent_keys(env: Env) -> None:
    made = env.call(
        env.acme, "POST", "/v1/users/alice/memories", json={"text": "I met Jon Ross in Paris."}
    )
    assert made.status_code == 201, made.text
    env.call(env.rival, "POST", "/v1/users/alice/memories", json={"text": "Carla Diaz is in Rome."})
    entities = env.call(env.acme, "GET", "/v1/users/alice/entities").json()["entities"]
    assert {e["name"] for e in entities} == {"Jon Ross", "Paris"}
    assert {e["user_id"] for e in entities} == {"alice"}  # the tenant's name for the user
    rival = env.call(env.rival, "GET", "/v1/users/alice/entities").json()["entities"]
    assert {e["name"] for e in rival} == {"Carla Diaz", "Rome"}
    jon = next(e for e in entities if e["name"] == "Jon Ross")
    # Another tenant's alice has no such entity, by name or by id.
    for entity in ("Jon Ross", jon["id"]):
        probe = env.call(env.rival, "GET", f"/v1/users/alice/entities/{entity}/neighbors")
        assert probe.status_code == 404, probe.text
        probe = env.call(env.rival, "GET", "/v1/users/alice/relations", params={"entity": entity})
        assert probe.status_code == 404, probe.text
    near = env.call(env.acme, "GET", f"/v1/users/alice/entities/{jon['id']}/neighbors").json()
    assert [n["name"] for n in near["neighbors"]] == ["Paris"]
    relations = env.call(env.acme, "GET", "/v1/users/alice/relations", params={"entity": "paris"})
    (edge,) = relations.json()["relations"]
    assert edge["sources"] == [made.json()["id"]]
    # As of a moment before the memory said it, the edge did not hold yet; now it does.
    path, entity = "/v1/users/alice/relations", {"entity": "paris"}
    then = env.call(env.acme, "GET", path, params={**entity, "as_of": "2000-01-01T00:00:00Z"})
    assert then.status_code == 200 and then.json()["relations"] == [], then.text
    now = env.call(env.acme, "GET", path, params={**entity, "as_of": "2999-01-01T00:00:00Z"})
    assert [r["id"] for r in now.json()["relations"]] == [edge["id"]]
    naive = env.call(env.acme, "GET", path, params={**entity, "as_of": "2024-01-01T00:00:00"})
    assert naive.status_code == 422, naive.text
    far = f"/v1/users/alice/entities/{jon['id']}/neighbors"
    before = env.call(env.acme, "GET", far, params={"as_of": "2000-01-01T00:00:00Z"}).json()
    assert before["neighbors"] == []
    mentions = env.call(
        env.acme, "GET", "/v1/users/alice/mentions", params={"memory_id": made.json()["id"]}
    ).json()["mentions"]
    assert {m["entity_id"] for m in mentions} == {e["id"] for e in entities}
    # The graph gathers every agent's memories: an agent-limited key may not read it.
    for path in ("/entities", "/relations", f"/entities/{jon['id']}/neighbors", "/mentions"):
        denied = env.call(env.planner, "GET", "/v1/users/alice" + path)
        assert denied.status_code == 403, (path, denied.text)

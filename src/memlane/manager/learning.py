"""One learning pass of the memory manager, in phases:

1. **extract** candidate memories from the conversation (one LLM call); **screen** them
   (pure): past ``max_candidates`` or not a storable text, a candidate is settled;
2. **gather** (flows; a fixed number of store batches for all candidates together): each
   candidate's vector, and the existing memories to show the decider with it — similar
   ones (cosine at least ``related_threshold``) and a few about the same subject
   (:func:`memlane.manager.subjects.choose_related`), since a contradiction often
   resembles what it replaces too little;
3. **triage** (pure): a candidate whose normalized text equals a related memory's, or
   whose vector is within ``duplicate_threshold`` of one, or of an earlier candidate, is a
   duplicate; one with no related memory is added; the others go to the decider;
4. **decide** ADD / UPDATE / DELETE / NOOP for those, in one LLM call for all of them;
5. **plan** (pure) and 6. **apply** (one store batch): :mod:`memlane.manager.planning`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from memlane.access import visible_filters
from memlane.core.base import Core
from memlane.core.flow import Flow, many, one
from memlane.errors import (
    InjectionRefusedError,
    LLMOutputError,
    PiiRefusedError,
    ValidationError,
)
from memlane.llm.structured import Answer, ask
from memlane.manager import prompts, subjects
from memlane.manager.results import WITHHELD, CandidateResult, ManagerConfig, Outcome
from memlane.models import (
    Filters,
    MemoryKind,
    MemoryRecord,
    Scope,
    content_hash,
    normalize_text,
)
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.llm import ChatMessage, Usage

LEARNABLE_KINDS = (MemoryKind.FACT, MemoryKind.PREFERENCE)
SUBJECT_POOL = 20
"""How many memories each search of :func:`related_searches` brings back to choose from."""

Related = tuple[tuple[MemoryRecord, float], ...]
"""Existing memories shown with a candidate, each with its cosine to it."""


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class PassScope:
    """Whose memories a pass learns into, and from which session, agent and team."""

    user_id: str
    session_id: str | None = None
    agent_id: str | None = None
    team: str | None = None

    def filters(self) -> Filters:
        """Only memories of the same team are compared with (and may be changed by) a
        pass, and an agent's pass only with its own and shared ones (memlane.access's
        rule, as for MemoryTools and API keys), asked of the store so none crowd out a
        limit."""
        scope = Scope(self.user_id, self.agent_id)
        return visible_filters(scope, Filters(kinds=LEARNABLE_KINDS, team=self.team))


@dataclass(frozen=True, slots=True, eq=False)
class Candidate:
    """One extracted memory on its way through a pass."""

    index: int
    """Its place in the extraction answer (and in the result)."""
    memory: prompts.ExtractedMemory
    vector: Vector | None = None
    """Set by :func:`gather`."""
    related: Related = ()
    """Set by :func:`gather`."""
    quarantine: tuple[str, ...] = ()
    """The instruction-like content the scope's policy quarantines in its text: such a
    candidate is added (quarantined) without being shown to the decider."""

    @property
    def text(self) -> str:
        return self.memory.text

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.strip() for t in self.memory.topics if t.strip()))


Settled = dict[int, CandidateResult]
"""Outcomes known so far, by candidate index."""


@dataclass(frozen=True, slots=True)
class Triage:
    """What :func:`triage` made of the gathered candidates."""

    settled: Settled
    to_add: tuple[Candidate, ...]
    to_decide: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class Decided:
    """The decider's answer: a decision by position in ``to_decide``, or why none came."""

    choices: Mapping[int, prompts.Decision] = field(default_factory=dict)
    failure: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class Gathered:
    """The candidates with their vectors and related memories, and the embedding cache
    writes and vectors (by content hash) computed on the way."""

    candidates: tuple[Candidate, ...]
    known: Mapping[str, Vector]
    cache_write: ops.PutEmbeddings


# ---------------------------------------------------------------------------- extract


def extract_prompt(conversation: str, config: ManagerConfig) -> list[ChatMessage]:
    """The extraction call's messages."""
    system = config.system_message or prompts.EXTRACT_SYSTEM
    if config.capture_instructions:
        system += "\nWhat to capture: " + config.capture_instructions
    if config.additional_instructions:
        system += "\n" + config.additional_instructions
    body = "<conversation>\n" + conversation + "\n</conversation>"
    return [ChatMessage("system", system), ChatMessage("user", body)]


def extract(conversation: str, config: ManagerConfig) -> Flow[Answer[prompts.Extraction]]:
    """Ask the model for candidate memories. Raises LLMOutputError when its answer stays
    invalid, LLMError when it cannot be reached."""
    messages = extract_prompt(conversation, config)
    return (
        yield from ask(prompts.Extraction, messages, operation="extract", repairs=config.repairs)
    )


def shown(user_id: str, core: Core) -> Callable[[str], str]:
    """What the extraction model reads of each message: the message, or
    :data:`~memlane.manager.results.WITHHELD` when the scope's injection policy
    quarantines what it holds (an instruction the model must not be steered by). Raises
    InjectionRefusedError when the policy refuses it."""

    def show(content: str) -> str:
        return WITHHELD if core.screen(user_id, content, "message") else content

    return show


def prepared(
    user_id: str, core: Core
) -> Callable[[prompts.ExtractedMemory], prompts.ExtractedMemory]:
    """What :func:`screen` does to each of the model's memories: its text checked, and
    its text and topics as the scope's PII policy stores them (the model may write what
    the conversation it read did not hold), and its text screened for instruction-like
    content. Raises ValidationError (PiiRefusedError or InjectionRefusedError for what
    the scope's policies refuse)."""

    def prepare(memory: prompts.ExtractedMemory) -> prompts.ExtractedMemory:
        text = core.private(user_id, core.check_text(memory.text))
        core.screen(user_id, text)
        topics = [core.private(user_id, t, "topic") for t in memory.topics]
        return memory.model_copy(update={"text": text, "topics": topics})

    return prepare


def screen(
    memories: Sequence[prompts.ExtractedMemory],
    config: ManagerConfig,
    prepare: Callable[[prompts.ExtractedMemory], prompts.ExtractedMemory],
) -> tuple[list[Candidate], Settled]:
    """The candidates to go on with, each as ``prepare`` returns it, and the outcome of
    the others: skipped past ``max_candidates``, failed when ``prepare`` refuses them (a
    memory refused for the personal data or the instructions it holds is not quoted in
    its outcome)."""
    candidates: list[Candidate] = []
    settled: Settled = {}
    for n, memory in enumerate(memories):
        if n >= config.max_candidates:
            reason = f"over max_candidates ({config.max_candidates})"
            settled[n] = CandidateResult(memory.text, Outcome.SKIPPED, reason)
            continue
        try:
            ready = prepare(memory)
        except (PiiRefusedError, InjectionRefusedError) as exc:
            settled[n] = CandidateResult("[refused]", Outcome.FAILED, str(exc))
            continue
        except ValidationError as exc:
            settled[n] = CandidateResult(memory.text, Outcome.FAILED, str(exc))
            continue
        candidates.append(Candidate(n, ready))
    return candidates, settled


# ---------------------------------------------------------------------------- gather


def gather(
    candidates: Sequence[Candidate],
    scope: PassScope,
    now: datetime,
    core: Core,
    config: ManagerConfig,
) -> Flow[Gathered]:
    """Embed the candidates (reusing cached vectors), then find each one's related
    memories: every candidate's searches in one batch, the records they found in one,
    the vectors of those no vector search scored in one (when there are any)."""
    vectors, cache_write = yield from core.vectors([c.text for c in candidates])
    known = {content_hash(c.text): v for c, v in zip(candidates, vectors, strict=True)}
    searches = [
        related_searches(c, v, scope, now, core.model_id, config)
        for c, v in zip(candidates, vectors, strict=True)
    ]
    found = (yield from many([op for s in searches for op in s])) if searches else []
    hits = [found_scores(part) for part in split(found, [len(s) for s in searches])]
    wanted = tuple(dict.fromkeys(i for _, ids in hits for i in ids))
    records = (yield from one(ops.GetRecords(scope.user_id, wanted))) if wanted else []
    by_id = {r.id: r for r in records}
    pools = [[(by_id[i], scores.get(i)) for i in ids if i in by_id] for scores, ids in hits]
    unscored = tuple(dict.fromkeys(r.content_hash for p in pools for r, s in p if s is None))
    stored = {}
    if unscored:
        stored = yield from one(ops.GetEmbeddings(core.model_id, unscored))
    gathered = tuple(
        replace(c, vector=v, related=related(c, v, pool, stored, config))
        for c, v, pool in zip(candidates, vectors, pools, strict=True)
    )
    return Gathered(gathered, known, cache_write)


def related_searches(
    c: Candidate, v: Vector, scope: PassScope, now: datetime, model: str, config: ManagerConfig
) -> list[ops.Op[Any]]:
    """The store reads that find the memories to show the decider with ``c`` (vector
    ``v``): a vector search, and unless ``subject_limit`` is 0, a lexical search on its
    subject (:func:`subjects.search_words`) and the newest memories sharing a topic."""
    f = scope.filters()
    depth = max(config.related_limit, SUBJECT_POOL)
    searches: list[ops.Op[Any]] = [ops.VectorSearch(scope.user_id, f, now, model, v, depth)]
    if not config.subject_limit:
        return searches
    subject = subjects.subject_of(c.text, c.topics)
    query = subjects.search_words(subject)
    if query:
        searches.append(ops.LexicalSearch(scope.user_id, f, now, query, depth))
    if subject.topics:
        by_topic = replace(f, topics=c.topics)
        searches.append(ops.ListRecords(scope.user_id, by_topic, now, None, depth, True))
    return searches


def split(results: Sequence[Any], sizes: Sequence[int]) -> list[list[Any]]:
    """``results`` cut into consecutive parts of ``sizes``."""
    parts, start = [], 0
    for size in sizes:
        parts.append(list(results[start : start + size]))
        start += size
    return parts


def found_scores(found: Sequence[Any]) -> tuple[dict[str, float], list[str]]:
    """From one candidate's search results (the vector search first): the cosine of each
    memory the vector search found, and the ids of all found, vector hits first."""
    scores: dict[str, float] = dict(found[0])
    more = (h.id if isinstance(h, MemoryRecord) else h[0] for hits in found[1:] for h in hits)
    return scores, list(dict.fromkeys([*scores, *more]))


def related(
    c: Candidate,
    v: Vector,
    pool: Sequence[tuple[MemoryRecord, float | None]],
    stored: Mapping[str, Vector],
    config: ManagerConfig,
) -> Related:
    """What the decider is shown with ``c``: :func:`subjects.choose_related` over the
    pool, a memory no vector search scored getting the cosine of its stored vector (0
    when its vector is gone)."""
    scored = [(r, _cosine(v, stored.get(r.content_hash)) if s is None else s) for r, s in pool]
    return tuple(subjects.choose_related(scored, subjects.subject_of(c.text, c.topics), config))


def _cosine(v: Vector, w: Vector | None) -> float:
    return 0.0 if w is None else float(v @ w)


# ---------------------------------------------------------------------------- triage


def triage(candidates: Sequence[Candidate], duplicate_threshold: float) -> Triage:
    """Duplicates settled without asking the model (of a related memory, or of an
    earlier candidate); candidates with no related memory, or quarantined, to add (a
    quarantined one is never shown to the decider); the rest to decide."""
    settled: Settled = {}
    to_add: list[Candidate] = []
    to_decide: list[Candidate] = []
    seen: list[tuple[str, Vector]] = []  # (normalized text, vector) of earlier candidates
    for c in candidates:
        norm, v = normalize_text(c.text), c.vector
        assert v is not None, "triage needs gathered candidates"
        dup = next(
            (r for r, s in c.related if normalize_text(r.text) == norm or s >= duplicate_threshold),
            None,
        )
        if dup is not None:
            reason = "matches an existing memory"
            settled[c.index] = CandidateResult(c.text, Outcome.DUPLICATE, reason, dup.id)
        elif any(t == norm or float(v @ w) >= duplicate_threshold for t, w in seen):
            reason = "repeats an earlier candidate"
            settled[c.index] = CandidateResult(c.text, Outcome.DUPLICATE, reason)
        else:
            seen.append((norm, v))
            (to_decide if c.related and not c.quarantine else to_add).append(c)
    return Triage(settled, tuple(to_add), tuple(to_decide))


# ---------------------------------------------------------------------------- decide


def decide_prompt(candidates: Sequence[Candidate], config: ManagerConfig) -> list[ChatMessage]:
    """The decision call's messages: each candidate with its related memories, numbered
    (the model never sees memory ids)."""
    system = prompts.DECIDE_SYSTEM
    if config.additional_instructions:
        system += "\n" + config.additional_instructions
    blocks = []
    for k, c in enumerate(candidates):
        shown = [
            {"number": j, "memory": r.text, "since": f"{r.effective_time:%Y-%m-%d}"}
            for j, (r, _) in enumerate(c.related)
        ]
        blocks.append({"candidate": k, "new_fact": c.text, "existing": shown})
    body = json.dumps(blocks, ensure_ascii=False, indent=1)
    return [ChatMessage("system", system), ChatMessage("user", body)]


def decide(candidates: Sequence[Candidate], config: ManagerConfig) -> Flow[Decided]:
    """Ask the model what to do with each candidate (one call for all). An answer that
    stays invalid is a :class:`Decided` with a ``failure``, not an error: the other
    candidates still land. Raises LLMError when the model cannot be reached."""
    messages = decide_prompt(candidates, config)
    try:
        answer = yield from ask(
            prompts.Decisions, messages, operation="decide", repairs=config.repairs
        )
    except LLMOutputError as exc:
        paid = exc.usage if isinstance(exc.usage, Usage) else Usage()  # failed calls count
        return Decided(failure=f"no valid decision: {exc.problems}", usage=paid)
    return Decided(choices(answer.value, len(candidates)), usage=answer.usage)


def choices(answer: prompts.Decisions, count: int) -> dict[int, prompts.Decision]:
    """The first decision for each of ``count`` candidates; others are ignored."""
    out: dict[int, prompts.Decision] = {}
    for d in answer.decisions:
        if 0 <= d.candidate < count and d.candidate not in out:
            out[d.candidate] = d
    return out

"""Structured answers: ask, validate against the response model, repair, or report.

:func:`ask` is a flow (see :mod:`memlane.core.flow`): it yields a :class:`Chat` effect,
validates the answer with the pydantic response model, and when the answer is empty, not
JSON, or breaks the schema, sends it back with what was wrong and asks for a corrected
one, up to ``repairs`` times. If it is still invalid it raises
:class:`~memlane.errors.LLMOutputError`: a bad answer is never read as "nothing".
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Generic, TypeVar

import pydantic

from memlane.core.flow import Flow, chat
from memlane.errors import LLMOutputError
from memlane.ports.llm import ChatMessage, ChatRequest, Usage

M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True, slots=True)
class Answer(Generic[M]):
    """A validated answer, how many repairs it took, and what it cost."""

    value: M
    repairs: int
    usage: Usage


@functools.lru_cache(maxsize=64)
def schema_of(model: type[pydantic.BaseModel]) -> dict[str, object]:
    return model.model_json_schema()


def _strip_fences(text: str) -> str:
    """Models often wrap JSON in a Markdown code fence; take what is inside."""
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def validate(model: type[M], text: str) -> tuple[M | None, str]:
    """(value, "") for a valid answer, else (None, what is wrong)."""
    body = _strip_fences(text)
    if not body:
        return None, "the answer was empty"
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"the answer is not valid JSON ({exc.msg} at position {exc.pos})"
    try:
        return model.model_validate(data), ""
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()[:10]
        )
        return None, f"the answer does not match the schema: {problems}"


def ask(
    model: type[M],
    messages: list[ChatMessage],
    *,
    operation: str,
    repairs: int = 2,
    temperature: float = 0.0,
    max_tokens: int | None = None,
) -> Flow[Answer[M]]:
    """Ask for an answer matching ``model``; repair up to ``repairs`` times."""
    schema = schema_of(model)
    conversation = list(messages)
    usage = Usage()
    for attempt in range(repairs + 1):
        request = ChatRequest(
            messages=tuple(conversation),
            schema=schema,
            schema_name=model.__name__,
            temperature=temperature,
            max_tokens=max_tokens,
            operation=operation if attempt == 0 else f"{operation}:repair",
        )
        response = yield from chat(request)
        usage = usage + response.usage
        value, problem = validate(model, response.content)
        if value is not None:
            return Answer(value, attempt, usage)
        if attempt == repairs:
            raise LLMOutputError(
                f"{operation}: the model's answer was invalid after {repairs} repair "
                f"attempt(s): {problem}",
                answer=response.content,
                problems=problem,
                usage=usage,
            )
        conversation += [
            ChatMessage("assistant", response.content),
            ChatMessage(
                "user",
                f"Your answer was rejected: {problem}. Reply again with only one JSON "
                f"object that matches the schema {json.dumps(schema)}.",
            ),
        ]
    raise AssertionError("unreachable")

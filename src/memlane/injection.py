"""Instruction-like content in a memory: text that, recalled into an agent's prompt, could
try to take the agent over.

:func:`find` returns typed :class:`Finding` s (a kind and a character span), never the
text. The kinds (:class:`InjectionKind`):

- ``instruction_override``: "ignore / disregard / forget (all) previous instructions",
  "your new instructions are", "from now on you will respond ...", in English and in
  German, French, Spanish, Italian and Portuguese;
- ``role_play``: jailbreak personas and rule removal — DAN ("do anything now"),
  "developer mode enabled", "you are now an AI without restrictions", "pretend you have
  no rules", "stay in character";
- ``prompt_leak``: asking for the agent's own instructions ("reveal your system prompt");
- ``fake_system_prompt``: chat-template tokens (``<|im_start|>system``, ``[INST]``,
  ``<<SYS>>``), ``### System:`` and ``SYSTEM:`` headers, ``<system>`` tags (a transcript's
  ``user:`` / ``assistant:`` lines are not: summaries and pasted chats are written so);
- ``fake_tool_call``: what a model's tool call looks like — ``{"name": ..., "arguments":
  ...}``, ``"tool_calls"`` / ``"function_call"`` keys, ``<tool_call>``, ``<invoke ...>``,
  ``<function=...>``, "call the send_email function";
- ``hidden_text``: characters a reader does not see — zero-width characters inside text,
  Unicode tag characters (U+E0000 to E007F, outside a flag emoji), bidirectional overrides
  and isolates (U+202A to 202E, U+2066 to 2069) — and HTML comments or hidden styles
  (``display:none``, ``visibility:hidden``, ``font-size:0``, ``opacity:0``).

What the core does with a finding is the scope's injection policy (``CoreConfig.
injection``): ``quarantine`` (the default: stored, shown to operators, never recalled
until released), ``refuse`` (:class:`~memlane.errors.InjectionRefusedError`, nothing
stored) or ``keep``.

Every pattern is bounded (no quantifier over text of unbounded length that another
quantifier could also match), so a text built to make regular expressions backtrack
costs time linear in its length: a test times 20,000-character adversarial texts.

Pure Python and no model: it catches the families above as written, not paraphrases,
other languages than the six, homoglyphs or instructions spelled out letter by letter.
Measured in ``bench/injection.py`` (bench/injection.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from memlane.errors import InjectionRefusedError, ValidationError


class InjectionKind(StrEnum):
    """A family of instruction-like content (see the module docstring)."""

    INSTRUCTION_OVERRIDE = "instruction_override"
    ROLE_PLAY = "role_play"
    PROMPT_LEAK = "prompt_leak"
    FAKE_SYSTEM_PROMPT = "fake_system_prompt"
    FAKE_TOOL_CALL = "fake_tool_call"
    HIDDEN_TEXT = "hidden_text"


@dataclass(frozen=True, slots=True)
class Finding:
    """Characters ``start:end`` of the text are instruction-like content of ``kind``."""

    kind: InjectionKind
    start: int
    end: int

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.end


Action = Literal["quarantine", "refuse", "keep"]
ACTIONS: tuple[Action, ...] = ("quarantine", "refuse", "keep")

PolicyFor = Callable[[str], Action]
"""The injection action of a user scope, for policies that differ by scope."""


def check_action(action: object) -> Action:
    """``action`` if it is one of :data:`ACTIONS`; raises ValidationError."""
    if action not in ACTIONS:
        raise ValidationError(f"injection policy must be one of {ACTIONS}, got {action!r}")
    return action


# ---------------------------------------------------------------------------- patterns

_GAP = r"[^\S\n]*"
"""Blanks within a line."""
_WORDS = r"(?:[^\S\n]+[\w'\u2019-]{1,20}){0,%d}"
"""Up to %d more words on the line (each word bounded)."""

_IGNORE = (
    r"(?:ignore|ignoring|disregard|disregarding|forget|forgetting|override|overriding|"
    r"bypass|neglect|discard|abandon|drop|skip|set[^\S\n]+aside|pay[^\S\n]+no[^\S\n]+attention"
    r"[^\S\n]+to|do[^\S\n]+not[^\S\n]+follow|don'?t[^\S\n]+follow|stop[^\S\n]+following|"
    r"throw[^\S\n]+out|erase|clear|delete|wipe|reset)"
)
_BEFORE = (
    r"(?:previous|previously|prior|above|preceding|earlier|former|foregoing|original|"
    r"initial|old|system|developer|safety|programmed|pre-?programmed|given|hidden|"
    r"existing|current|default|openai'?s?|all[^\S\n]+the|all[^\S\n]+of[^\S\n]+the|"
    r"all[^\S\n]+your|all[^\S\n]+prior|all[^\S\n]+previous)"
)
_ORDERS = (
    r"(?:instructions?|instructed|directions?|directives?|rules?|guidelines?|prompts?|"
    r"commands?|orders?|constraints?|restrictions?|context|tasks?|messages?|guidance|"
    r"programming|policies|policy|training|conversation|settings|limitations|filters?|"
    r"inputs?|text|prompting)"
)

_IGNORE_NEEDLES = (
    "ignor", "disregard", "forget", "overrid", "bypass", "neglect", "discard", "abandon",
    "drop", "skip", "aside", "attention", "follow", "throw", "erase", "clear", "delete",
    "wipe", "reset",
)  # fmt: skip
_AI_NEEDLES = (
    "ai", "a.i.", "assistant", "bot", "model", "llm", "gpt", "openai", "machine",
    "computer", "virtual",
)  # fmt: skip
_LIMIT_NEEDLES = (
    "restrict", "filter", "guideline", "censor", "limit", "rule", "boundar", "polic",
    "constraint", "ethic", "moral", "safeguard", "safety",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Rule:
    """One pattern and the lowercase substrings one of which every match holds: a text
    holding none is not searched (most texts hold none, and a search costs more)."""

    pattern: str
    needles: tuple[str, ...]


_OVERRIDE = [
    # ignore (all of) the previous instructions / forget all prior rules
    _Rule(
        rf"\b{_IGNORE}{_GAP}(?:(?:all|any|every|each|of|the|these|those)[^\S\n]+){{0,3}}"
        rf"{_BEFORE}\b{_WORDS % 2}[^\S\n]+{_ORDERS}\b",
        _IGNORE_NEEDLES,
    ),
    # ignore your instructions / forget your programming
    _Rule(
        rf"\b{_IGNORE}{_GAP}(?:all[^\S\n]+(?:of[^\S\n]+)?)?(?:your|ur)\b{_WORDS % 2}"
        rf"[^\S\n]+{_ORDERS}\b",
        _IGNORE_NEEDLES,
    ),
    # ignore everything above / disregard everything you were told
    _Rule(
        rf"\b{_IGNORE}{_GAP}(?:all|everything|anything|what(?:ever)?)?{_GAP}"
        r"(?:(?:that|which)[^\S\n]+)?(?:(?:was|is|were|i|you|you've|you[^\S\n]+have|"
        r"you[^\S\n]+were|i've|i[^\S\n]+have|has[^\S\n]+been|have[^\S\n]+been)[^\S\n]+){0,2}"
        r"(?:above|said[^\S\n]+(?:above|before)|told|instructed|written[^\S\n]+above|"
        r"mentioned[^\S\n]+above|programmed|trained)\b",
        _IGNORE_NEEDLES,
    ),
    # forget everything (you were told) before this
    _Rule(
        rf"\b{_IGNORE}{_GAP}(?:all|everything|anything)\b{_WORDS % 6}[^\S\n]+(?:before|prior"
        r"[^\S\n]+to)(?:[^\S\n]+(?:this|now|that|here)\b|[^\S\n]*(?:$|[\n,.;:!\])]))",
        _IGNORE_NEEDLES,
    ),
    _Rule(
        r"\b(?:ignore|disregard)[^\S\n]+(?:the[^\S\n]+above|the[^\S\n]+(?:previous|preceding)"
        r"(?=[^\S\n]*(?:$|[\n.;:!\])]|and[^\S\n]+(?:instead|just|only|now))))",
        ("ignor", "disregard"),
    ),
    # new orders
    _Rule(
        r"\b(?:your|ur)[^\S\n]+(?:new|real|true|actual|updated|only)[^\S\n]+"
        r"(?:instructions|directives?|prompt|programming|system[^\S\n]+prompt|orders)\b",
        ("instructions", "directive", "prompt", "programming", "orders"),
    ),
    _Rule(
        r"(?:^|\n|[.!?\]][^\S\n]*)[^\S\n]*(?:new|updated|revised|real|actual)[^\S\n]+"
        r"(?:instructions|directives?|system[^\S\n]+prompt|orders|task)[^\S\n]*:",
        ("instructions", "directive", "prompt", "orders", "task"),
    ),
    _Rule(
        r"\bfrom[^\S\n]+now[^\S\n]+on\b,?[^\S\n]+(?:you|ur)[^\S\n]+(?:will|must|shall|"
        r"are[^\S\n]+going[^\S\n]+to|should|can|are[^\S\n]+to)[^\S\n]+"
        r"(?:only[^\S\n]+|always[^\S\n]+|now[^\S\n]+)?"
        r"(?:act|respond|answer|reply|behave|pretend|ignore|obey|output|speak|talk|roleplay|"
        r"role-play|simulate|follow|write|say|generate|function|operate|refer)\b",
        ("now",),
    ),
    _Rule(
        r"\b(?:do[^\S\n]+not|don'?t|never)[^\S\n]+(?:follow|obey|listen[^\S\n]+to|apply|"
        r"adhere[^\S\n]+to|comply[^\S\n]+with)[^\S\n]+(?:any[^\S\n]+(?:of[^\S\n]+)?)?"
        rf"(?:your|ur|openai'?s?|the[^\S\n]+{_BEFORE}){_WORDS % 2}[^\S\n]+(?:instructions|"
        r"guidelines|rules|"
        r"policies|programming|content[^\S\n]+polic(?:y|ies)|restrictions)\b",
        ("instructions", "guidelines", "rules", "polic", "programming", "restrictions"),
    ),
    # other languages: the verbs and nouns of the same family
    _Rule(
        r"\b(?:ignorier\w{0,3}|vergiss|vergessen[^\S\n]+sie|missachte\w{0,3})\b[^\n]{0,40}?"
        r"\b(?:anweisungen|instruktionen|regeln|befehle|aufgaben|vorgaben|richtlinien)\b",
        ("ignorier", "vergiss", "vergessen", "missachte"),
    ),
    _Rule(
        r"\bvergiss[^\S\n]+(?:alles|alle)\b[^\S\n]*(?:davor|zuvor|vorher|bisher|bisherige|"
        r"vorherige|obige|oben|gesagte)",
        ("vergiss",),
    ),
    _Rule(
        r"\b(?:ignore[zrs]?|oublie[zrs]?|n[ée]glige[zr]?)\b[^\n]{0,40}?\b(?:instructions?|"
        r"consignes?|directives?|r[èe]gles?)\b[^\n]{0,20}?\b(?:pr[ée]c[ée]dentes?|"
        r"ant[ée]rieures?|ci-dessus)\b",
        ("ignore", "oublie", "neglige", "néglige"),
    ),
    _Rule(
        r"\b(?:ignora|ignore|olvida|olvide|omite|descarta|dimentica|esquece|esque[çc]a)\b"
        r"[^\n]{0,40}?\b(?:instrucciones|instruções|instrucoes|istruzioni|indicaciones|"
        r"reglas|regole|regras|órdenes|ordenes)\b[^\n]{0,20}?\b(?:anteriores|previas|"
        r"precedentes|precedenti|prévias|de[^\S\n]+arriba|sopra)\b",
        ("ignor", "olvid", "omite", "descarta", "dimentica", "esque"),
    ),
]

_AI = (
    r"(?:an?[^\S\n]+)?(?:ai|a\.i\.|assistant|chat[^\S\n]?bot|bot|language[^\S\n]+model|"
    r"llm|model|chat[^\S\n]?gpt|gpt(?:-?\d)?|openai|machine|computer[^\S\n]+program|"
    r"virtual[^\S\n]+assistant)"
)
_UNBOUND = (
    r"(?:no|without|free[^\S\n]+(?:of|from)|not[^\S\n]+bound[^\S\n]+by|unbound[^\S\n]+by|"
    r"not[^\S\n]+restricted[^\S\n]+by|not[^\S\n]+limited[^\S\n]+by|beyond|outside|"
    r"(?:does|do|did)[^\S\n]*(?:n'?t|[^\S\n]+not)[^\S\n]+(?:have|follow|care[^\S\n]+about|"
    r"abide[^\S\n]+by|adhere[^\S\n]+to)|ignores?|ignoring|bypass(?:es|ing)?|breaks?|"
    r"broken[^\S\n]+free[^\S\n]+of|break[^\S\n]+free[^\S\n]+of)"
)
_LIMITS = (
    r"(?:restrictions?|restricted|filters?|filtering|guidelines|censorship|censored|"
    r"limitations?|limits|rules|boundaries|policies|constraints|ethics|ethical|morals?|"
    r"morality|safeguards|safety[^\S\n]+measures|content[^\S\n]+polic(?:y|ies))"
)
_MODES = (
    r"(?:developer|dev|jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil|"
    r"opposite|god|sudo|anarchy|chaos|no[^\S\n]?restrictions?)"
)
_ROLE_PLAY = [
    _Rule(r"\bdo[^\S\n]+anything[^\S\n]+now\b", ("anything",)),
    _Rule(r"(?-i:\bDAN\b)(?:[^\S\n]*(?::|mode|\d|prompt|jailbreak))", ("dan",)),
    _Rule(r"\b(?:as|are|be|called|named|become|play)[^\S\n]+(?-i:DAN)\b", ("dan",)),
    _Rule(
        rf"\b{_MODES}[^\S\n]+mode[^\S\n]+(?:enabled|activated|output|response|engaged)\b",
        ("mode",),
    ),
    _Rule(
        r"\b(?:enable|activate|enter|simulate|switch[^\S\n]+to|stay[^\S\n]+in|"
        r"remain[^\S\n]+in|act[^\S\n]+in)[^\S\n]+(?:the[^\S\n]+)?(?:developer|jailbreak|"
        r"jailbroken|unrestricted|unfiltered|uncensored|evil|god|sudo)[^\S\n]+mode\b",
        ("mode",),
    ),
    _Rule(r"\bjailbr(?:oken|eak|eaking)\b", ("jailbr",)),
    _Rule(r"_mode[^\S\n]*[:=][^\S\n]*(?:enabled|on|true|1)\b", ("_mode",)),
    # an AI vendor's rules set aside: "OpenAI's content policy does not apply"
    _Rule(
        r"\b(?:open[^\S\n]?ai|chat[^\S\n]?gpt|anthropic)(?:'s|s'|s)?[^\S\n]+(?:[\w-]{1,20}"
        r"[^\S\n]+){0,2}(?:content[^\S\n]+)?(?:polic(?:y|ies)|rules|guidelines|restrictions|"
        r"filters?|tos|terms(?:[^\S\n]+of[^\S\n]+service)?|limitations|censorship)\b",
        ("ai", "gpt", "anthropic"),
    ),
    # a persona made to have none: "an unfiltered and amoral chatbot"
    _Rule(
        r"\b(?:amoral|unfiltered|uncensored|unrestricted|unethical|immoral|jailbroken|"
        r"unaligned|unbound|unlimited|unchained|unhinged|lawless)[^\S\n]+(?:and[^\S\n]+[\w-]{1,20}"
        r"[^\S\n]+)?(?:ai|a\.i\.|chat[^\S\n]?bot|bot|language[^\S\n]+model|model|assistant|"
        r"persona|version|mode|entity|character|gpt)\b",
        (*_AI_NEEDLES, "persona", "version", "mode", "entity", "character"),
    ),
    _Rule(
        r"\b(?:no|without(?:[^\S\n]+any)?|(?:does|do)(?:n't|[^\S\n]+not)[^\S\n]+have"
        r"[^\S\n]+(?:a|any))[^\S\n]+(?:ethical|moral)[^\S\n]+(?:or[^\S\n]+(?:ethical|moral|legal)"
        r"[^\S\n]+)?(?:guidelines|restrictions|boundaries|constraints|limits|compass|code|"
        r"principles|bounds|filters?)\b",
        ("ethical", "moral"),
    ),
    _Rule(
        r"\b(?:no|without(?:[^\S\n]+any)?|(?:does|do)(?:n't|[^\S\n]+not)[^\S\n]+have"
        r"[^\S\n]+(?:a|any))[^\S\n]+content[^\S\n]+(?:filters?|polic(?:y|ies)|moderation)\b",
        ("content",),
    ),
    _Rule(
        r"\b(?:disregard|ignore|bypass|violate)s?\b[^\S\n]+(?:all[^\S\n]+|any[^\S\n]+)?"
        r"(?:[\w-]{1,20},?[^\S\n]+){0,3}(?:morals|ethics|ethical[^\S\n]+(?:guidelines|"
        r"principles|standards|boundaries))\b",
        ("moral", "ethic"),
    ),
    _Rule(rf"\byou[^\S\n]+are[^\S\n]+(?:now|no[^\S\n]+longer|not)[^\S\n]+{_AI}\b", ("you",)),
    _Rule(
        rf"\byou[^\S\n]+are[^\S\n]+now{_WORDS % 4}[^\S\n]+(?:ai|assistant|chatbot|bot|"
        r"model|character|persona|entity|system)\b",
        ("you",),
    ),
    _Rule(
        r"\byou(?:'re|[^\S\n]+are)[^\S\n]+(?:now[^\S\n]+)?(?:going[^\S\n]+to|about[^\S\n]+to|"
        r"to)[^\S\n]+(?:act|pretend|role-?play|play[^\S\n]+the[^\S\n]+role|simulate|"
        r"impersonate)\b",
        ("you",),
    ),
    _Rule(
        r"\b(?:pretend|imagine|act[^\S\n]+as[^\S\n]+if|act[^\S\n]+like|suppose)[^\S\n]+"
        rf"(?:that[^\S\n]+)?(?:you|you're){_WORDS % 6}[^\S\n]+{_UNBOUND}\b{_WORDS % 3}"
        rf"[^\S\n]+{_LIMITS}\b",
        _LIMIT_NEEDLES,
    ),
    _Rule(
        rf"\b{_AI}\b{_WORDS % 6}[^\S\n]+{_UNBOUND}\b{_WORDS % 3}[^\S\n]+{_LIMITS}\b", _LIMIT_NEEDLES
    ),
    _Rule(
        r"\b(?:act|behave|respond|answer|reply|pose)[^\S\n]+as[^\S\n]+(?:if[^\S\n]+you"
        rf"[^\S\n]+(?:are|were)[^\S\n]+)?{_AI}{_WORDS % 4}[^\S\n]+{_UNBOUND}\b",
        _AI_NEEDLES,
    ),
    _Rule(r"\b(?:stay|remain|keep)[^\S\n]+in[^\S\n]+character\b", ("character",)),
    _Rule(r"\b(?:never|don'?t|do[^\S\n]+not)[^\S\n]+break[^\S\n]+character\b", ("character",)),
    _Rule(r"\bbreaking[^\S\n]+character\b", ("character",)),
    _Rule(r"\b(?:role-?play|roleplay)[^\S\n]+as\b", ("roleplay", "role-play")),
    _Rule(
        r"\bcharacter[^\S\n]+(?:never|doesn'?t|does[^\S\n]+not|won'?t|will[^\S\n]+not)"
        r"[^\S\n]+(?:refuse|censor|filter|say[^\S\n]+no)",
        ("character",),
    ),
    _Rule(
        r"\b(?:never|not|won'?t|will[^\S\n]+not|must[^\S\n]+not|cannot|can'?t)[^\S\n]+refuse"
        r"[^\S\n]+(?:a|any)[^\S\n]+(?:request|question|prompt|order)",
        ("refuse",),
    ),
    _Rule(
        r"\bdu[^\S\n]+bist[^\S\n]+(?:jetzt|nun|ab[^\S\n]+sofort)[^\S\n]+(?:ein|eine)?"
        r"[^\S\n]*(?:ki|assistent|bot|modell|chatbot)\b",
        ("bist",),
    ),
]

_PROMPT_LEAK = [
    _Rule(
        r"\b(?:reveal|show|print|repeat|output|display|tell|give|write[^\S\n]+out|dump|leak|"
        r"share|expose|recite|return|echo|spell[^\S\n]*check|translate|summari[sz]e|list|"
        r"what[^\S\n]+(?:are|were|is|was))[^\S\n]+(?:me[^\S\n]+|us[^\S\n]+)?"
        r"(?:all[^\S\n]+)?(?:of[^\S\n]+)?(?:your|the)[^\S\n]+(?:(?:full|entire|complete|exact|"
        r"whole|original|initial|hidden|secret|first|previous|starting)[^\S\n]+){0,3}"
        r"(?:system[^\S\n]+(?:prompt|message|instructions?)|pre-?prompt|initial[^\S\n]+prompt|"
        r"(?:instructions|rules|guidelines)[^\S\n]+you[^\S\n]+(?:were|have[^\S\n]+been)"
        r"[^\S\n]+(?:given|told|programmed))\b",
        ("system", "prompt", "instructions", "rules", "guidelines"),
    ),
    _Rule(
        r"\b(?:reveal|show|print|repeat|output|display|dump|leak|recite|echo)[^\S\n]+"
        r"(?:me[^\S\n]+)?(?:your|ur)[^\S\n]+(?:(?:initial|original|hidden|secret|full)"
        r"[^\S\n]+)?(?:prompt|instructions|programming|directives)\b",
        ("prompt", "instructions", "programming", "directives"),
    ),
    _Rule(
        r"\b(?:repeat|print|output|recite|echo)[^\S\n]+(?:all[^\S\n]+|everything[^\S\n]+)?"
        r"(?:the[^\S\n]+)?(?:(?:text|words|content|everything)[^\S\n]+)?above\b",
        ("above",),
    ),
    _Rule(
        r"\byour[^\S\n]+(?:system|initial|original|hidden|secret|pre-?programmed)[^\S\n]+"
        r"(?:prompt|instructions|message|configuration|directives)\b",
        ("prompt", "instructions", "message", "configuration", "directives"),
    ),
    _Rule(
        r"\bwhat[^\S\n]+(?:are|were)[^\S\n]+your[^\S\n]+(?:initial|original|first|hidden|"
        r"secret|system)[^\S\n]+(?:instructions|rules|prompt)\b",
        ("instructions", "rules", "prompt"),
    ),
]

_FAKE_SYSTEM = [
    _Rule(
        r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|begin_of_text|"
        r"end_of_text|start_header_id|end_header_id|eot_id|eom_id|start|end|message|channel|"
        r"python_tag|tool|fim_prefix)\|>",
        ("<|",),
    ),
    _Rule(r"\[/?INST\]|<</?SYS>>|</?s>(?=\s*\[INST)", ("inst]", "sys>>")),
    _Rule(r"<start_of_turn>|<end_of_turn>", ("_of_turn>",)),
    _Rule(r"<\|?(?:system|user|assistant)\|?>", ("system", "user", "assistant")),
    _Rule(
        r"(?:^|\n)[^\S\n]*#{1,6}[^\S\n]*(?:system|instructions?|developer|"
        r"new[^\S\n]+instructions?)(?:[^\S\n]+(?:prompt|message|note|override))?[^\S\n]*:",
        ("#",),
    ),
    _Rule(
        r"(?:^|\n)[^\S\n]*\[?(?-i:SYSTEM|System)(?:[^\S\n]+(?:prompt|message|note|override|"
        r"update|alert|instruction))?\]?[^\S\n]*:",
        ("system",),
    ),
    _Rule(
        r"(?:^|\n|[{(\[])[^\S\n]*system[^\S\n]+(?:prompt|message|override|instruction|"
        r"update|directive)[^\S\n]*:",
        ("system",),
    ),
    _Rule(
        r"</?(?:system|system_prompt|system-prompt|sys|instructions|admin|developer)\b"
        r"[^<>\n]{0,60}>",
        ("<",),
    ),
    _Rule(r"\[(?:system|assistant|developer)\]\(#", ("](#",)),
    _Rule(
        r"\b(?:begin|start|end)[^\S\n]+(?:of[^\S\n]+)?(?:the[^\S\n]+)?(?:system[^\S\n]+"
        r"prompt|system[^\S\n]+message|developer[^\S\n]+(?:prompt|message|instructions)|"
        r"(?:user|untrusted)[^\S\n]+input)\b",
        ("system", "developer", "input"),
    ),
]

_FAKE_TOOL = [
    _Rule(
        r"[{,][^\S\n]*\"(?:tool_calls?|function_call|tool_use|tool_name|tool_code|"
        r"function_name|recipient_name)\"[^\S\n]*:",
        ("tool_", "function_", "recipient_name"),
    ),
    _Rule(
        r"\{[^\S\n]*\"(?:name|tool|function|action)\"[^\S\n]*:[^\S\n]*\"[^\"\n]{1,80}\""
        r"[^\S\n]*,[^\S\n]*\"(?:arguments|parameters|args|input|action_input|params)\""
        r"[^\S\n]*:",
        ('"arguments"', '"parameters"', '"args"', '"input"', '"action_input"', '"params"'),
    ),
    _Rule(
        r"\{[^\S\n]*\"(?:arguments|parameters|args|input|action_input|params)\"[^\S\n]*:"
        r"[^{}\n]{0,200}\}[^\S\n]*,[^\S\n]*\"(?:name|tool|function)\"[^\S\n]*:",
        ('"arguments"', '"parameters"', '"args"', '"input"', '"action_input"', '"params"'),
    ),
    _Rule(
        r"</?(?:tool_call|tool_use|tool_result|function_calls?|function_results?|invoke|"
        r"tool_response|tool-call|functioncall)\b[^<>\n]{0,80}>",
        ("<",),
    ),
    _Rule(r"<function=[\w.-]{1,64}>", ("<function=",)),
    _Rule(r"<parameter[^\S\n]+name=", ("<parameter",)),
    _Rule(
        r"\b(?:call|invoke|execute|trigger|use)[^\S\n]+(?:the[^\S\n]+)?[`'\"]?"
        r"[a-z][a-z0-9]{0,30}_[a-z0-9_]{1,40}[`'\"]?[^\S\n]*(?:\(|[^\S\n]+(?:tool|function|"
        r"action|api)\b)",
        ("_",),
    ),
]

_HIDDEN_MARKUP = [
    _Rule(r"<!--", ("<!--",)),
    _Rule(
        r"\bstyle[^\S\n]*=[^\S\n]*[\"'][^\"'<>\n]{0,120}?(?:display[^\S\n]*:[^\S\n]*none|"
        r"visibility[^\S\n]*:[^\S\n]*hidden|font-size[^\S\n]*:[^\S\n]*0(?![.\d])|"
        r"opacity[^\S\n]*:[^\S\n]*0(?![.\d])|(?:height|width)[^\S\n]*:[^\S\n]*0(?:px)?"
        r"[^\S\n]*;)",
        ("style",),
    ),
    _Rule(
        r"<[a-z][a-z0-9]{0,10}\b[^<>\n]{0,80}[^\S\n]hidden(?:[^\S\n]*=|[^\S\n]*>|[^\S\n])",
        ("hidden",),
    ),
]

_RULES: tuple[tuple[InjectionKind, tuple[tuple[re.Pattern[str], tuple[str, ...]], ...]], ...] = (
    tuple(
        (kind, tuple((re.compile(r.pattern, re.IGNORECASE), r.needles) for r in rules))
        for kind, rules in (
            (InjectionKind.FAKE_SYSTEM_PROMPT, _FAKE_SYSTEM),
            (InjectionKind.FAKE_TOOL_CALL, _FAKE_TOOL),
            (InjectionKind.INSTRUCTION_OVERRIDE, _OVERRIDE),
            (InjectionKind.ROLE_PLAY, _ROLE_PLAY),
            (InjectionKind.PROMPT_LEAK, _PROMPT_LEAK),
            (InjectionKind.HIDDEN_TEXT, _HIDDEN_MARKUP),
        )
    )
)
"""Each kind's rules, compiled (case is ignored except where a rule says ``(?-i:``)."""


# ---------------------------------------------------------------------------- hidden text

_ZERO_WIDTH = "\u200b\u2060\u2061\u2062\u2063\u2064\u180e\ufeff"
"""Always invisible, with no use inside ordinary text (a byte-order mark is one only at
the very start)."""
_JOINERS = "\u200c\u200d"
"""Zero-width (non-)joiners: needed in emoji sequences and some scripts, not between two
ASCII letters or digits."""
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""Bidirectional embeddings, overrides and isolates (the "Trojan Source" characters)."""
_BLACK_FLAG = "\U0001f3f4"
_CANCEL_TAG = "\U000e007f"
_HIDDEN_CHARS = re.compile(f"[{_ZERO_WIDTH}{_JOINERS}{_BIDI}\U000e0000-\U000e007f]+")


def _hidden_chars(text: str) -> Iterable[Finding]:
    """Runs of invisible characters that have no business in the text."""
    for m in _HIDDEN_CHARS.finditer(text):
        run, start = m[0], m.start()
        if run == "\ufeff" and start == 0:
            continue  # a byte-order mark
        if set(run) <= set(_JOINERS):
            before = text[start - 1] if start else ""
            after = text[m.end()] if m.end() < len(text) else ""
            if not (before.isascii() and before.isalnum() and after.isascii() and after.isalnum()):
                continue  # emoji sequences, Persian, Indic scripts
        if _flag_tags(text, start, run):
            continue
        yield Finding(InjectionKind.HIDDEN_TEXT, start, m.end())


def _flag_tags(text: str, start: int, run: str) -> bool:
    """Whether ``run`` is the tag sequence of a subdivision flag emoji (🏴 + tag letters
    + cancel tag, e.g. the flag of Scotland)."""
    tags = all("\U000e0020" <= c <= "\U000e007e" for c in run[:-1])
    return start > 0 and text[start - 1] == _BLACK_FLAG and run[-1] == _CANCEL_TAG and tags


# ---------------------------------------------------------------------------- find

_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
"""Fullwidth forms to ASCII, one character for one: spans keep their offsets."""


def find(text: str) -> list[Finding]:
    """The instruction-like content in ``text``, in order of position (spans of different
    kinds may overlap; one kind's overlapping matches are merged). Never raises for a
    string; time is linear in its length."""
    folded = text.translate(_FULLWIDTH)
    lowered = folded.lower()
    found: list[Finding] = []
    for kind, rules in _RULES:
        spans = [
            (m.start(), m.end())
            for pattern, needles in rules
            if any(n in lowered for n in needles)
            for m in pattern.finditer(folded)
        ]
        found += _merged(kind, sorted(spans))
    found += _hidden_chars(text)
    return sorted(found, key=lambda f: (f.start, f.end, f.kind))


def _merged(kind: InjectionKind, spans: Iterable[tuple[int, int]]) -> list[Finding]:
    out: list[Finding] = []
    for start, end in spans:
        if end <= start:
            continue
        if out and start <= out[-1].end:
            out[-1] = Finding(kind, out[-1].start, max(end, out[-1].end))
        else:
            out.append(Finding(kind, start, end))
    return out


def kinds(text: str) -> tuple[str, ...]:
    """The kinds :func:`find` finds in ``text``, each once, in the order of
    :class:`InjectionKind` (what a quarantined record keeps)."""
    present = {f.kind for f in find(text)}
    return tuple(k.value for k in InjectionKind if k in present)


def refused(kinds_found: tuple[str, ...], what: str) -> InjectionRefusedError:
    """The error a refusing policy raises: it names the kinds, never the text."""
    return InjectionRefusedError(
        f"{what} holds instruction-like content ({', '.join(kinds_found)}), which this "
        "policy refuses",
        kinds=kinds_found,
    )

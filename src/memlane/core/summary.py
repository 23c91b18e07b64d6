"""Extractive summaries: the most representative sentences, kept in their order."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from memlane.errors import ValidationError
from memlane.text import STOPWORDS, tokenize

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def extractive_summary(
    lines: Sequence[tuple[str, str]], *, max_sentences: int = 5, max_chars: int = 1200
) -> str:
    """Summarize (speaker, text) lines by picking their highest-scoring sentences.

    A sentence scores the mean document frequency of its content words (Luhn's method),
    so sentences about what the conversation keeps returning to win. The picked
    sentences keep their original order and speaker, within ``max_chars``. When not even
    the best sentence fits, it is cut to fit (ending in "…"), so a session of one long
    sentence still has a summary.
    """
    if max_sentences < 1 or max_chars < 1:
        raise ValidationError("max_sentences and max_chars must be positive")
    sentences = [
        (i, speaker, sentence)
        for i, (speaker, text) in enumerate(lines)
        for sentence in split_sentences(text)
    ]
    if not sentences:
        return ""
    words = [[w for w in tokenize(s) if w not in STOPWORDS and len(w) > 2] for _, _, s in sentences]
    freq = Counter(w for ws in words for w in set(ws))

    def score(idx: int) -> float:
        ws = words[idx]
        return sum(freq[w] for w in ws) / (len(ws) ** 0.5) if ws else 0.0

    ranked = sorted(range(len(sentences)), key=lambda i: (-score(i), i))
    picked: list[int] = []
    used = 0
    for idx in ranked:
        if len(picked) >= max_sentences:
            break
        _, speaker, sentence = sentences[idx]
        cost = len(speaker) + len(sentence) + 3
        if used + cost > max_chars:
            continue
        picked.append(idx)
        used += cost
    if not picked:
        _, speaker, sentence = sentences[ranked[0]]
        line = f"{speaker}: {sentence}"
        return line if len(line) <= max_chars else line[: max_chars - 1].rstrip() + "…"
    return "\n".join(f"{sentences[i][1]}: {sentences[i][2]}" for i in sorted(picked))

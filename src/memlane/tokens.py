"""Offline token counting.

memlane never downloads a tokenizer. The default counter approximates the BPE tokenizers
of current chat models (about four characters of a word per token; each punctuation mark
one token): deterministic, additive over pieces, and close enough to size a prompt. Pass
any ``Callable[[str], int]`` (e.g. a tiktoken encoder's ``lambda t: len(enc.encode(t))``)
where exact counts for one model matter.
"""

from __future__ import annotations

import re
from collections.abc import Callable

TokenCounter = Callable[[str], int]

_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def count_tokens(text: str) -> int:
    """Approximate tokens of ``text``: a word is ceil(len/4) tokens, punctuation one."""
    total = 0
    for piece in _PIECES.findall(text):
        total += (len(piece) + 3) // 4 if piece[0].isalnum() or piece[0] == "_" else 1
    return total

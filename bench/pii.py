"""The built-in PII detectors (memlane.pii) on a labelled set, and on ordinary text.

    .venv/bin/python bench/pii.py [--n 80] [--seed 7] [--data ../shared/data/locomo-dev]

The labelled set is generated here (no public labelled PII set ships on PyPI or in the
package lists this machine can reach): for each kind, ``--n`` sentences from 12
templates, each holding one value made the way real ones are (card numbers with a valid
Luhn digit for Visa, Mastercard and Amex prefixes, in three spellings; IBANs of 8
countries with their mod-97 check digits; SSNs outside the reserved ranges; phone numbers
in international, US and UK spellings; addresses; API keys of five services, passwords
named as such, random tokens), plus as many look-alike sentences that hold none (numbers
failing their checksum, dates, times, prices, versions, order numbers, commit hashes,
UUIDs, plain sentences). Scoring is by span: a labelled value counts as found when a span
of its kind covers it; any other span is a false positive.

Then every turn of the LoCoMo dev conversations (real chat, with no personal data of
these kinds in it) is scanned: every span found there is a false positive, listed.

Because the same hands wrote the detectors and the generator, the labelled numbers are
an upper bound for text found in the wild; the LoCoMo count is the honest one for false
positives.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
from collections import Counter
from pathlib import Path

from memlane.pii import KINDS, find

TEMPLATES = [
    "My {kind} is {v}.",
    "You can use {v} for that.",
    "Please note {v} somewhere safe",
    "{v} is the one I gave the bank yesterday.",
    "Hey, it's {v} — don't share it!",
    "Saved {v} in my notes app lol",
    "Remind me: {v}",
    "I think it was {v}, but let me check with Jon.",
    "Write down {v} before the meeting on Friday.",
    "The form asked for my {kind}, so I typed {v}.",
    "ok so {v} right?",
    "Caroline said hers is different from {v}.",
]
WORDS = ["jane", "doe", "zora", "quill", "mel", "jon", "gina", "paris", "otter", "maple"]
DOMAINS = ["example.com", "mail.example.org", "uni.example.ac.uk", "example.io", "co.example"]


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        candidate = digits + check
        total = 0
        for i, c in enumerate(reversed(candidate)):
            n = int(c)
            if i % 2:
                n = n * 2 - 9 if n > 4 else n * 2
            total += n
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def card(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15)]
    )
    number = _luhn_complete(prefix, length, rng)
    style = rng.choice(["plain", "spaces", "dashes"])
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return {"plain": number, "spaces": " ".join(groups), "dashes": "-".join(groups)}[style]


IBAN_SHAPES = {"DE": "8n10n", "GB": "4a14n", "FR": "10n11c2n", "NL": "4a10n", "ES": "20n",
               "IT": "1a10n12c", "CH": "5n12c", "PL": "24n"}  # fmt: skip


def iban(rng: random.Random) -> str:
    country = rng.choice(list(IBAN_SHAPES))
    bban = ""
    shape = IBAN_SHAPES[country]
    for count, cls in _pairs(shape):
        pool = {
            "n": string.digits,
            "a": string.ascii_uppercase,
            "c": string.ascii_uppercase + string.digits,
        }
        bban += "".join(rng.choice(pool[cls]) for _ in range(count))
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def _pairs(shape: str) -> list[tuple[int, str]]:
    out, number = [], ""
    for c in shape:
        if c.isdigit():
            number += c
        else:
            out.append((int(number), c))
            number = ""
    return out


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return f"2001:db8::{groups[5]}:{groups[6]}:{groups[7]}"
    return ":".join(groups)


def phone(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    return rng.choice(
        [
            f"+1 {rng.randint(201, 989)} {d(3)} {d(4)}",
            f"({rng.randint(201, 989)}) {d(3)}-{d(4)}",
            f"{rng.randint(201, 989)}-{d(3)}-{d(4)}",
            f"+44 20 {d(4)} {d(4)}",
            f"(020) {d(4)} {d(4)}",
            f"+49 30 {d(8)}",
            f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+{rng.randint(30, 99)}{d(9)}",
        ]
    )


def email(rng: random.Random) -> str:
    user = rng.choice(WORDS) + rng.choice([".", "_", "", "+"]) + rng.choice(WORDS)
    if rng.random() < 0.3:
        user += str(rng.randint(1, 99))
    value = f"{user}@{rng.choice(DOMAINS)}"
    return value if rng.random() < 0.8 else value.capitalize()


def secret(rng: random.Random) -> str:
    pool = string.ascii_letters + string.digits
    r = lambda n: "".join(rng.choice(pool) for _ in range(n))  # noqa: E731
    return rng.choice(
        [
            f"sk-proj-{r(40)}",
            f"ghp_{r(36)}",
            "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
            f"xoxb-{rng.randint(10**9, 10**10)}-{r(24)}",
            f"AIza{r(35)}",
            f"sk_live_{r(24)}",
            r(40),
        ]
    )


def named_secret(rng: random.Random) -> tuple[str, str]:
    """A password or key named as such: (how it is said, the secret itself)."""
    pool = string.ascii_letters + string.digits + "!#%&*"
    value = "".join(rng.choice(pool) for _ in range(rng.randint(8, 16)))
    said = rng.choice(["password: {}", "my password is {}", "api_key={}", "the token is {}"])
    return said.format(value), value


MAKERS = {
    "email": email, "phone": phone, "card": card, "iban": iban, "ssn": ssn, "ip": ip,
    "secret": secret,
}  # fmt: skip


def negatives(rng: random.Random, n: int) -> list[str]:
    def bad_card() -> str:
        good = card(rng).replace(" ", "").replace("-", "")
        return good[:-1] + str((int(good[-1]) + rng.randint(1, 9)) % 10)

    def bad_iban() -> str:
        good = iban(rng).replace(" ", "")
        return good[:2] + f"{(int(good[2:4]) + rng.randint(1, 50)) % 100:02d}" + good[4:]

    def hexes(n: int) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(n))

    def uuid() -> str:
        return f"{hexes(8)}-{hexes(4)}-4{hexes(3)}-a{hexes(3)}-{hexes(12)}"

    def date() -> str:
        return f"{rng.randint(1, 28)}/{rng.randint(1, 12)}/2023"

    makers = [
        lambda: f"card {bad_card()} was declined",
        lambda: f"the IBAN {bad_iban()} is wrong",
        lambda: (
            f"we met on {rng.randint(2000, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        ),
        lambda: f"at {rng.randint(1, 12)}:{rng.randint(0, 59):02d} pm on {date()}",
        lambda: f"it cost ${rng.randint(1, 9)},{rng.randint(100, 999)}.{rng.randint(10, 99)}",
        lambda: f"version {rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 30)} fixed it",
        lambda: f"order #{rng.randint(10**5, 10**8)} shipped",
        lambda: f"commit {hexes(40)}",
        lambda: f"id {uuid()}",
        lambda: f"I ran {rng.randint(2, 30)} km in {rng.randint(40, 200)} minutes",
        lambda: f"population {rng.randint(1, 999)} {rng.randint(100, 999)} {rng.randint(100, 999)}",
        lambda: f"SSN 000-{rng.randint(10, 99)}-{rng.randint(1000, 9999)} was never issued",
        lambda: "I went to the support group yesterday and felt so accepted",
        lambda: "Also remind me to bring the gift on Saturday",
        lambda: f"room {rng.randint(100, 999)}, floor {rng.randint(1, 20)}",
        lambda: f"the score was {rng.randint(0, 9)}-{rng.randint(0, 9)} at half time",
    ]
    return [rng.choice(makers)() for _ in range(n)]


def labelled(n: int, seed: int) -> tuple[list[tuple[str, str, str]], list[str]]:
    rng = random.Random(seed)
    positives = []
    for kind, make in MAKERS.items():
        for i in range(n):
            value = make(rng)
            said = value
            if kind == "secret" and i % 3 == 0:
                said, value = named_secret(rng)
            text = rng.choice(TEMPLATES).format(kind=kind, v=said)
            positives.append((text, kind, value))
    return positives, negatives(rng, n * len(MAKERS) // 2)


def score(
    positives: list[tuple[str, str, str]], negatives: list[str]
) -> dict[str, dict[str, float]]:
    found: Counter[str] = Counter()
    spans: Counter[str] = Counter()
    false: Counter[str] = Counter()
    missed: dict[str, list[str]] = {}
    for text, kind, value in positives:
        at = text.index(value)
        hits = find(text)
        good = [s for s in hits if s.kind == kind and s.start <= at and s.end >= at + len(value)]
        found[kind] += bool(good)
        if not good:
            missed.setdefault(kind, []).append(text)
        for s in hits:
            spans[s.kind] += 1
            if s not in good[:1]:
                false[s.kind] += 1
    examples: dict[str, list[str]] = {}
    for text in negatives:
        for s in find(text):
            spans[s.kind] += 1
            false[s.kind] += 1
            examples.setdefault(s.kind, []).append(text)
    out = {}
    total = Counter(kind for _, kind, _ in positives)
    for kind in KINDS:
        out[kind] = {
            "recall": found[kind] / total[kind] if total[kind] else float("nan"),
            "precision": (spans[kind] - false[kind]) / spans[kind] if spans[kind] else 1.0,
            "missed": missed.get(kind, [])[:3],
            "false_examples": examples.get(kind, [])[:3],
        }
    return out


def locomo(data: Path) -> tuple[int, Counter[str], list[str]]:
    turns = 0
    kinds: Counter[str] = Counter()
    examples = []
    for path in sorted(data.glob("*.json")):
        data = json.loads(path.read_text())
        conversation = data.get("conversation", data)
        for key, value in conversation.items():
            if not key.startswith("session_") or not isinstance(value, list):
                continue
            for turn in value:
                text = turn.get("text", "")
                turns += 1
                for s in find(text):
                    kinds[s.kind] += 1
                    examples.append(f"{s.kind}: {text[s.start : s.end]!r} in {text[:80]!r}")
    return turns, kinds, examples


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=80, help="sentences per kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/locomo-dev"))
    args = parser.parse_args()
    positives, negatives = labelled(args.n, args.seed)
    began = time.perf_counter()
    results = score(positives, negatives)
    spent = time.perf_counter() - began
    sentences = len(positives) + len(negatives)
    print(f"{len(positives)} sentences with one value each, {len(negatives)} look-alikes; "
          f"{sentences / spent:,.0f} sentences/s\n")  # fmt: skip
    print("| kind | recall | precision | missed (examples) |\n| --- | --- | --- | --- |")
    for kind, r in results.items():
        print(f"| {kind} | {r['recall']:.3f} | {r['precision']:.3f} | {r['missed'][:1]} |")
    for kind, r in results.items():
        for example in r["false_examples"]:
            print(f"- false {kind}: {example!r}")
    if args.data.is_dir():
        turns, kinds, examples = locomo(args.data)
        flagged = len({e.split(" in ")[1] for e in examples})
        print(f"\nLoCoMo dev turns: {turns:,}; spans found {sum(kinds.values())} "
              f"({dict(kinds)}), in {flagged} turns ({flagged / turns:.2%})")  # fmt: skip
        for example in examples[:20]:
            print(f"- {example}")


if __name__ == "__main__":
    main()

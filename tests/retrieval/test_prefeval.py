from __future__ import annotations

import json
from pathlib import Path

from steer.evals.prefeval_data import run_prefeval, write_report


def test_lexicon_recall_beats_plain_minilm_on_two_prefeval_topics(
    prefeval_dir: Path, embedder, tmp_path
) -> None:
    result = run_prefeval(
        prefeval_dir,
        topics=["travel_restaurant", "lifestyle_health"],
        filler=2,
        memory="topic",
        embedder=embedder,
        budget_tokens=0,
    )
    dense, lexicon = result["designs"]["dense"], result["designs"]["lexicon"]
    assert dense["extraction_rate"] >= 0.95 and dense["false_memories_per_filler"] <= 0.05
    assert lexicon["recall@5"] > dense["recall@5"]
    write_report(result, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["topics"] == [
        "travel_restaurant",
        "lifestyle_health",
    ]


def test_an_unknown_recall_design_is_refused_not_run_as_plain_minilm(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown recall designs: bm25"):
        run_prefeval(tmp_path, designs=["dense", "bm25"])

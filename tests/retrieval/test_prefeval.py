from __future__ import annotations

import json
from pathlib import Path

from steer.evals.prefeval_data import run_prefeval, write_report


def test_the_eval_reports_what_a_user_gets_within_each_token_budget(prefeval_dir: Path, embedder, tmp_path) -> None:
    result = run_prefeval(
        prefeval_dir,
        topics=["travel_restaurant", "lifestyle_health"],
        filler=2,
        memory="all",
        embedder=embedder,
        budget_tokens=450,
        limit=12,
    )
    assert result["default_design"] == "packed" and set(result["designs"]) == {"dense", "packed"}
    assert result["extraction"] >= 0.95 and result["false_per_filler"] == 0 and result["supersede_errors"] == 0
    for d in result["designs"].values():
        within = d["hit_within_tokens"]
        assert list(within) == ["100", "200", "300", "450"]  # the budget key follows --budget-tokens
        assert within["100"] <= within["200"] <= within["300"] <= within["450"]  # a larger block holds more
        assert 0 < d["mean_tokens"] <= 450 and d["mean_memories"] > 0
        assert d["recall@1"] <= d["recall@5"] <= d["recall@10"]
    packed, dense = result["designs"]["packed"], result["designs"]["dense"]
    assert packed["recall@5"] == dense["recall@5"]  # one ranking; the designs differ in what fills the block
    assert packed["mean_memories"] >= dense["mean_memories"]  # compact lines: more memories per block
    write_report(result, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["topics"] == ["travel_restaurant", "lifestyle_health"]


def test_an_unknown_recall_design_is_refused_not_run_as_plain_minilm(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown recall designs: hybrid"):
        run_prefeval(tmp_path, designs=["dense", "hybrid"])

"""No lexical resource or rule list of steer contains phrases of PrefEval's questions.

A resource written after reading an evaluation set measures that set, not the product. Every
three-word phrase of content words in PrefEval's questions (explicit and implicit forms) is looked
for in the modules that hold steer's rules and word lists (memory extraction, packing,
reconciliation, recall, scorers). Skips when ``../shared`` (the PrefEval data) is absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import SHARED

from retrieval.packing import content_words

PREFEVAL = SHARED / "data" / "prefeval"
ROOT = Path(__file__).resolve().parents[2]
RESOURCES = [
    *sorted((ROOT / "retrieval").glob("*.py")),
    *sorted((ROOT / "steer" / "methods" / "memory").glob("*.py")),
    *sorted((ROOT / "steer" / "scorers").glob("*.py")),
]
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def questions() -> list[str]:
    out: list[str] = []
    for path in sorted(PREFEVAL.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, list):
            out += [str(x["question"]) for x in data if isinstance(x, dict) and "question" in x]
    return out


def phrases(texts: list[str]) -> set[str]:
    """Every run of three words that are all content words (no function word among them)."""
    out = set()
    for text in texts:
        words = _WORD.findall(text.lower())
        for i in range(len(words) - 2):
            run = words[i : i + 3]
            if all(content_words(w) for w in run):
                out.add(" ".join(run))
    return out


def found_in(text: str, wanted: set[str]) -> list[str]:
    flat = " " + " ".join(_WORD.findall(text.lower())) + " "
    return sorted(p for p in wanted if f" {p} " in flat)


def test_no_resource_file_contains_a_phrase_of_the_prefeval_questions() -> None:
    if not (PREFEVAL / "explicit_preference").is_dir():
        pytest.skip(f"PrefEval data not found at {PREFEVAL}")
    wanted = phrases(questions())
    assert len(wanted) > 500  # the questions were read
    assert found_in("we tried visually impressive movies", wanted)  # the check finds what it should
    hits = {str(p.relative_to(ROOT)): found_in(p.read_text(), wanted) for p in RESOURCES}
    assert {p: h for p, h in hits.items() if h} == {}

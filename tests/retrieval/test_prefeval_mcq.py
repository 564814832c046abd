"""The multiple-choice part of ``steer eval prefeval``: the fixed shuffle, reading a model's letter, and
the whole task through the router against a real HTTP upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer.evals.prefeval import parse_choice, run_mcq, shuffled

OPTIONS = ["Gemma, a gluten-free trattoria.", "Pizzeria da Michele.", "Roscioli bakery.", "Bonci Pizzarium."]


def test_the_shuffle_is_fixed_by_the_seed_and_tracks_the_right_option() -> None:
    a, right = shuffled(OPTIONS, 7)
    assert (a, right) == shuffled(OPTIONS, 7)
    assert sorted(a) == sorted(OPTIONS) and a[right] == OPTIONS[0]
    assert {shuffled(OPTIONS, s)[1] for s in range(40)} == {0, 1, 2, 3}  # the right answer moves


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("B", 1), ("(C) because", 2), ("Answer: D.", 3), ("**A**", 0), ("I'd pick Roscioli bakery.", 2), ("", None)],
)
def test_a_models_letter_or_option_text_is_read(answer: str, expected: int | None) -> None:
    assert parse_choice(answer, OPTIONS) == expected


async def test_mcq_runs_both_conditions_through_a_real_upstream(prefeval_dir: Path, stub) -> None:
    from steer.settings import load_settings

    # the stub echoes the question back: its first letter line is "A.", so it always answers A
    settings = load_settings(
        None, models=[{"name": "echo", "api_base": stub.url + "/v1", "extra_body": {"stub_echo": True}}]
    )
    lines: list[str] = []
    out = await run_mcq(
        settings,
        "echo",
        str(prefeval_dir),
        ["travel_restaurant"],
        limit=6,
        filler=1,
        seed=3,
        budget_tokens=600,
        progress=lines.append,
    )
    expected = sum(shuffled(["x", "y", "z", "w"], 3 * 100_003 + i)[1] == 0 for i in range(6)) / 6
    assert out["items"] == 6 and out["accuracy_off"] == out["accuracy_on"] == round(expected, 4)
    assert out["unparsed_off"] == out["unparsed_on"] == 0
    assert out["own_preference_recalled"] > 0.5  # the item's own preference reaches the prompt
    assert lines and lines[-1].startswith("mcq 1/1 travel_restaurant")

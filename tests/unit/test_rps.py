"""RPS math (the paper's 2-D grid, the n-D cap), conditioning texts, request plans, parallel draws."""

from __future__ import annotations

import asyncio
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steer.methods.rps import geometry as rps
from steer.server.metrics import Metrics
from steer.settings import load_settings
from steer.upstreams.router import Router

HV = ("helpfulness", "verbosity")


# --- the neighbourhood -----------------------------------------------------------------------


def test_paper_grid_is_minus_40_to_40_in_5_degree_steps():
    assert rps.grid_angles() == [float(a) for a in range(-40, 45, 5)]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (10, [10, 5, 15, 0, 20]),  # on the grid: the target itself, then +-5, +-10
        (45, [40, 35, 30, 25, 20]),  # the paper's hardest target: off the grid, never drawn itself
        (12.5, [10, 15, 5, 20, 0]),  # ties go to the angle nearer the grid's centre
        (65, [40, 35]),  # only two grid angles lie within t_max = 30
        (75, []),
    ],
)
def test_2d_neighbours_are_the_k_closest_grid_angles_within_t_max(target, expected):
    assert rps.grid_neighbours(target, k=5, t_max=30) == [float(a) for a in expected]


def test_2d_neighbours_respect_a_smaller_t_max_and_k():
    assert rps.grid_neighbours(45, k=5, t_max=12) == [40.0, 35.0]
    assert rps.grid_neighbours(20, k=3, t_max=30) == [20.0, 15.0, 25.0]


def test_2d_neighbour_vectors_are_unit_directions_on_the_grid_padded_with_the_target():
    target = rps.from_angle(65)
    dirs = rps.neighbours(target, k=5, t_max=30)
    assert len(dirs) == 5
    assert [round(rps.angle_of(d), 6) for d in dirs] == [40.0, 35.0, 65.0, 65.0, 65.0]
    assert all(math.isclose(math.hypot(*d), 1.0) for d in dirs)


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=8).filter(
        lambda w: math.sqrt(sum(x * x for x in w)) > 0.1
    ),
    k=st.integers(1, 9),
    t_max=st.floats(1, 60),
    seed=st.integers(0, 5),
)
def test_nd_cap_neighbours_are_deterministic_unit_and_within_t_max(weights, k, t_max, seed):
    target = rps.normalize(weights)
    first = rps.cap_neighbours(target, k, t_max, seed=seed)
    assert first == rps.cap_neighbours(target, k, t_max, seed=seed)
    assert len(first) == k and first[0] == pytest.approx(target)
    for d in first:
        assert math.isclose(math.sqrt(sum(x * x for x in d)), 1.0, rel_tol=1e-9)
        assert rps.angle_between(target, d) <= t_max + 1e-6


def test_nd_cap_spreads_pairs_on_distinct_axes_at_the_grid_step():
    target = rps.normalize([0.6, 0.3, 0.5, 0.2])
    dirs = rps.cap_neighbours(target, 5, t_max=30, step=5)
    assert [round(rps.angle_between(target, d), 6) for d in dirs] == [0, 5, 5, 10, 10]
    assert round(rps.angle_between(dirs[1], dirs[2]), 6) == 10  # a pair: opposite sides of the target
    # the second pair takes a new axis, orthogonal-ish to the first: not on the first pair's great circle
    assert rps.angle_between(dirs[1], dirs[3]) > 7 and rps.angle_between(dirs[2], dirs[3]) > 7
    other_seed = rps.cap_neighbours(target, 5, t_max=30, step=5, seed=1)
    assert other_seed != dirs


def test_nd_cap_in_two_dimensions_gives_the_grid_around_an_on_grid_target():
    cap = rps.cap_neighbours(rps.from_angle(10), 5, 30)
    assert sorted(round(rps.angle_of(d), 6) for d in cap) == [0, 5, 10, 15, 20]


def test_zero_or_nan_weights_are_rejected():
    with pytest.raises(ValueError):
        rps.normalize([0.0, 0.0])
    with pytest.raises(ValueError):
        rps.normalize([float("nan"), 1.0])


# --- conditioning ----------------------------------------------------------------------------


def test_dpa_text_uses_rounded_integer_weights_as_in_the_paper():
    v = rps.from_angle(30)  # (0.866, 0.5)
    assert rps.dpa_text(HV, v) == "Your response should maximize weighted rating = helpfulness*87 + verbosity*50"


def test_dpa_text_covers_every_attribute_in_more_dimensions():
    text = rps.dpa_text(("a", "b", "c"), rps.normalize([2, -1, 2]))
    assert text == "Your response should maximize weighted rating = a*67 + b*-33 + c*67"


def test_natural_text_renders_the_same_integer_weights_in_words():
    text = rps.natural_text(("helpfulness", "verbosity", "code_share"), rps.normalize([0.94, -0.34, 0.0]))
    assert "more helpfulness is better (weight 94)" in text
    assert "less verbosity is better (weight 34)" in text
    assert "code share does not matter (weight 0)" in text


def test_direction_text_goes_just_before_the_last_user_turn_leaving_the_prefix_intact():
    msgs = [
        {"role": "system", "content": "client rules"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    out = rps.condition(msgs, "DIR", "before_last_user")
    assert out[:3] == msgs[:3] and out[3] == {"role": "system", "content": "DIR"} and out[4] == msgs[3]
    assert len(msgs) == 4  # the input is left alone


def test_system_placement_appends_to_the_leading_system_message():
    msgs = [{"role": "system", "content": "client rules"}, {"role": "user", "content": "q"}]
    assert rps.condition(msgs, "DIR", "system")[0]["content"] == "client rules\n\nDIR"
    assert rps.condition(msgs[1:], "DIR", "system")[0] == {"role": "system", "content": "DIR"}


# --- plans and bodies ------------------------------------------------------------------------


def test_rps_plan_sends_one_request_per_distinct_direction_closest_first():
    planned = rps.plan(HV, rps.from_angle(45), "rps", conditioning="dpa")
    assert [p.n for p in planned] == [1] * 5
    assert [round(p.offset_deg, 6) for p in planned] == [5, 10, 15, 20, 25]
    assert planned[0].text.endswith("helpfulness*77 + verbosity*64")


def test_best_of_n_plan_is_one_request_with_n_when_the_upstream_takes_n():
    planned = rps.plan(HV, rps.from_angle(45), "best_of_n", k=5, conditioning="dpa")
    assert len(planned) == 1 and planned[0].n == 5 and planned[0].offset_deg == 0
    assert planned[0].text.endswith("helpfulness*71 + verbosity*71")
    separate = rps.plan(HV, rps.from_angle(45), "best_of_n", k=5, use_n=False)
    assert [p.n for p in separate] == [1] * 5


def test_directions_whose_text_coincides_share_a_request():
    planned = rps.plan(HV, rps.from_angle(70), "rps", k=5, t_max=30)  # 40 and then the target, padded
    assert [p.n for p in planned] == [1, 4]


def test_candidate_bodies_differ_only_by_the_direction_message():
    request = {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "alice",
        "temperature": 0.2,
    }
    planned = rps.plan(HV, rps.from_angle(20), "rps")
    bodies = rps.candidate_bodies(request, planned, max_tokens=64)
    assert len(bodies) == 5
    for body, p in zip(bodies, planned, strict=True):
        assert "stream" not in body and "stream_options" not in body and "n" not in body
        assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["max_tokens"] == 64
        assert body["messages"][-2] == {"role": "system", "content": p.text}
        rest = {**body, "messages": body["messages"][:-2] + body["messages"][-1:]}
        first = {**bodies[0], "messages": bodies[0]["messages"][:-2] + bodies[0]["messages"][-1:]}
        assert orjson.dumps(rest) == orjson.dumps(first)  # byte-identical but for the direction


def test_client_temperature_is_kept_when_the_policy_sets_none():
    request = {"messages": [{"role": "user", "content": "q"}], "temperature": 0.1}
    body = rps.candidate_bodies(request, rps.plan(HV, (1.0, 0.0)), temperature=None, top_p=None)[0]
    assert body["temperature"] == 0.1 and "top_p" not in body


def test_token_cap_is_the_smallest_of_client_per_candidate_and_budget_share():
    assert rps.per_candidate_cap(None, None, None, 5) is None
    assert rps.per_candidate_cap(None, 200, None, 5) == 200
    assert rps.per_candidate_cap(None, 200, 500, 5) == 100
    assert rps.per_candidate_cap(50, 200, 500, 5) == 50
    request = {"messages": [{"role": "user", "content": "q"}], "max_completion_tokens": 900}
    body = rps.candidate_bodies(request, rps.plan(HV, (1.0, 0.0)), max_tokens=100)[0]
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body


# --- selection -------------------------------------------------------------------------------


def test_select_projects_on_the_original_target_not_on_each_candidates_direction():
    target = rps.from_angle(45)
    # candidate 0 is great on helpfulness only; candidate 1 balanced: the 45-degree user wants 1
    scores = [[0.9, 0.0], [0.6, 0.6], [0.1, 0.7]]
    best, projected = rps.select(scores, target)
    assert best == 1
    assert projected == pytest.approx([0.9 * target[0], 1.2 * target[0], 0.8 * target[0]])
    assert rps.select(scores, rps.from_angle(0))[0] == 0


def test_select_breaks_ties_toward_the_first_candidate():
    assert rps.select([[1.0, 0.0], [1.0, 0.0]], (1.0, 0.0))[0] == 0


# --- parallel generation through the router, on the fake upstream (steer.testing.fake) -------------


def _router() -> Router:
    settings = load_settings(None, models=[{"name": "stub", "backend": "fake", "retries": 0}])
    return Router(settings, Metrics())


def test_parallel_draw_survives_one_failing_and_one_timing_out_candidate():
    request = {"model": "stub", "messages": [{"role": "user", "content": "q"}]}
    planned = rps.plan(HV, rps.from_angle(20), "rps")
    bodies = rps.candidate_bodies(request, planned)
    bodies[1]["stub_fault"] = "500"
    bodies[3]["stub_latency"] = 3.0  # answers, but long after its candidate timeout

    async def go() -> list[rps.Outcome]:
        router = _router()
        try:
            return await rps.generate(lambda b: router.complete("stub", b), bodies, timeout_s=0.5)
        finally:
            await router.aclose()

    outcomes = asyncio.run(go())
    assert [o.status for o in outcomes] == ["ok", "failed", "ok", "timeout", "ok"]
    assert "stub failure" in (outcomes[1].error or "")
    assert all(len(o.completions) == 1 for o in outcomes if o.status == "ok")
    assert not outcomes[3].completions
    total = rps.total_usage(outcomes)
    assert total["completion_tokens"] == 3 * 8  # the fake answers 8 tokens; failed ones count nothing


def test_a_straggler_is_cancelled_once_the_quorum_has_answered():
    request = {"model": "stub", "messages": [{"role": "user", "content": "q"}]}
    bodies = rps.candidate_bodies(request, rps.plan(HV, rps.from_angle(20), "rps"))
    bodies[2]["stub_fault"] = "timeout"  # the fake never answers this one (before its model timeout)

    async def go() -> list[rps.Outcome]:
        router = _router()
        try:
            return await rps.generate(lambda b: router.complete("stub", b), bodies, timeout_s=60.0, quorum=4)
        finally:
            await router.aclose()

    outcomes = asyncio.run(go())
    assert [o.status for o in outcomes] == ["ok", "ok", "straggler", "ok", "ok"]
    assert not outcomes[2].completions and "quorum" in (outcomes[2].error or "")


def test_one_request_with_n_is_split_into_n_single_choice_candidates():
    request = {"model": "stub", "messages": [{"role": "user", "content": "q"}]}
    bodies = rps.candidate_bodies(request, rps.plan(HV, rps.from_angle(20), "best_of_n", k=4))
    assert len(bodies) == 1 and bodies[0]["n"] == 4

    async def go() -> list[rps.Outcome]:
        router = _router()
        try:
            return await rps.generate(lambda b: router.complete("stub", b), bodies, timeout_s=5.0)
        finally:
            await router.aclose()

    [outcome] = asyncio.run(go())
    assert outcome.status == "ok" and len(outcome.completions) == 4
    assert all(c["choices"][0]["index"] == 0 and "usage" not in c for c in outcome.completions)


def test_sample_config_refuses_an_unknown_scorer_when_the_policy_loads():
    from pydantic import ValidationError

    from steer.methods.rps.stage import SampleConfig

    assert SampleConfig(scorer="features").scorer == "features" and SampleConfig().scorer is None
    with pytest.raises(ValidationError, match="unknown scorer 'featurs'"):
        SampleConfig(scorer="featurs")

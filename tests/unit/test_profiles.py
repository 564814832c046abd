"""The profile math (online MAP fit, posterior mean over a fitted population, population fit with
torch, K chosen on held-out users), the store's isolation, and the direction handed to the RPS stage."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from steer.methods.profiles.math import (
    Hyper,
    Prior,
    UserParams,
    few_shot_accuracy,
    fit_global,
    fit_population,
    fit_prior,
    fit_user,
    fresh_user,
    normalise,
    population_support,
    unit,
    weights,
)

ATTRS = ("concise", "formal", "relevant")
PROTOS = [[2.0, 0.0, 1.0], [-2.0, 0.0, 1.0]]  # concise lovers and verbose lovers


def pairs_for(w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n pairs (x_winner - x_loser) chosen deterministically by a hidden weight vector w."""
    a, b = rng.random((n, len(w))), rng.random((n, len(w)))
    sign = np.where((a - b) @ w >= 0, 1.0, -1.0)
    return (a - b) * sign[:, None]


def test_normalise_scales_by_the_declared_ranges_and_clips():
    x = normalise([[0.5, -1.0], [2.0, 1.0]], ("a", "b"), {"a": (0.0, 1.0), "b": (-1.0, 1.0)})
    assert x.tolist() == [[0.5, 0.0], [1.0, 1.0]]


def test_a_few_comparisons_pick_the_matching_prototype():
    prior = Prior(ATTRS, PROTOS, [0.0, 0.0])
    rng = np.random.default_rng(0)
    deltas = pairs_for(np.array(PROTOS[1]), 20, rng)
    few = fit_user(prior, fresh_user(prior), deltas[:5], np.ones(5), {}, {})
    more = fit_user(prior, fresh_user(prior), deltas, np.ones(20), {}, {})
    share = [float(np.exp(p.mixture[1]) / np.exp(p.mixture).sum()) for p in (few, more)]
    assert 0.6 < share[0] < share[1]
    assert weights(prior, more, {}, {})[0] < -0.5


def test_no_feedback_leaves_a_new_user_at_the_population_mean():
    prior = Prior(ATTRS, PROTOS, [0.0, np.log(3.0)])
    w = weights(prior, fresh_user(prior), {}, {})
    assert np.allclose(w, 0.25 * np.array(PROTOS[0]) + 0.75 * np.array(PROTOS[1]))


def test_pinned_attributes_never_move_and_seeded_ones_start_at_the_seed():
    prior = Prior(ATTRS, PROTOS, [0.0, 0.0])
    rng = np.random.default_rng(1)
    deltas = pairs_for(np.array([5.0, 5.0, 0.0]), 20, rng)
    params = fit_user(prior, fresh_user(prior), deltas, np.ones(20), {"relevant": 0.3}, {"formal": -2.0})
    w = weights(prior, params, {"relevant": 0.3}, {"formal": -2.0})
    assert w[1] == -2.0 and params.offset[1] == 0.0
    assert weights(prior, fresh_user(prior), {"relevant": 0.3}, {})[2] == pytest.approx(0.3)


def test_more_evidence_moves_the_offset_beyond_the_prototypes():
    prior = Prior(ATTRS, PROTOS, [0.0, 0.0])
    rng = np.random.default_rng(2)
    hidden = np.array([0.0, 4.0, 0.0])  # formality: no prototype has it
    deltas = pairs_for(hidden, 200, rng)
    params = fit_user(prior, fresh_user(prior), deltas, np.ones(200), {}, {})
    assert weights(prior, params, {}, {})[1] > 1.0


def test_population_fit_recovers_the_prototypes_from_users_feedback():
    rng = np.random.default_rng(3)
    users = []
    for i in range(40):
        hidden = np.array(PROTOS[i % 2]) * 2
        users.append((pairs_for(hidden, 40, rng), np.ones(40)))
    prior, params = fit_population(users, ATTRS, k=2, epochs=300)
    assert len(params) == 40 and prior.k == 2
    w = np.array([weights(prior, p, {}, {}) for p in params])
    sign = np.sign(w[:, 0])
    assert (sign[0::2] > 0).all() and (sign[1::2] < 0).all()  # each user lands on their own side


def test_global_model_fits_the_average_user():
    rng = np.random.default_rng(4)
    deltas = pairs_for(np.array([1.0, 0.0, 3.0]), 300, rng)
    w = fit_global(deltas, np.ones(300))
    assert w[2] > w[0] > abs(w[1])


def test_unit_direction_is_unit_norm_and_defined_for_zero():
    assert np.linalg.norm(unit(np.array([3.0, 4.0]))) == pytest.approx(1.0)
    assert np.linalg.norm(unit(np.zeros(4))) == pytest.approx(1.0)


def test_store_keeps_each_users_pairs_to_that_tenant_and_user(tmp_path):
    from steer.storage.database import SqliteDatabase
    from steer.storage.profiles import ProfileStore

    store = ProfileStore(SqliteDatabase(tmp_path / "p.db"))
    store.add_feedback("t1", "alice", "c1", "rating", {"rating": 1}, "features", ATTRS, [([1.0, 0.0, 0.0], 1.0)])
    store.add_feedback("t2", "alice", "c2", "rating", {"rating": 1}, "features", ATTRS, [([0.0, 1.0, 0.0], 1.0)])
    assert store.pairs("t1", "alice", "features", ATTRS, 0, 10) == [([1.0, 0.0, 0.0], 1.0)]
    assert store.pairs("t1", "bob", "features", ATTRS, 0, 10) == []
    store.save_user("t1", "alice", "features", ATTRS, UserParams([0.0], [0.1, 0.2, 0.3]))
    assert store.user("t2", "alice", "features") is None
    assert store.forget("t1", "alice") == 2
    assert store.pairs("t2", "alice", "features", ATTRS, 0, 10) == [([0.0, 1.0, 0.0], 1.0)]


def test_preference_direction_for_anonymous_users_is_the_policys_seeds_on_the_population_mean(tmp_path):
    from steer.identity import Identity
    from steer.pipeline.stage import Context
    from steer.server.services import Services
    from steer.settings import load_settings
    from steer.storage.database import SqliteDatabase

    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "default.yaml").write_text(
        "name: default\nextends: none\nstages:\n"
        "  rerank: {options: {embeddings: false}, weights: {concise: 3.0}, pinned: {formal: -4.0}}\n"
    )
    services = Services(load_settings(None, policies=str(pdir), database=str(tmp_path / "s.db")))
    services.db = SqliteDatabase(tmp_path / "s.db")
    identity = Identity("t1", None)
    ctx = Context(request={}, identity=identity, policy=services.policies.resolve(identity), model="m", trace_id="t")
    scorer, direction = asyncio.run(services.profiles.direction(ctx.identity, ctx.policy))
    d = dict(zip(direction.attributes, direction.weights, strict=True))
    assert direction.attributes == scorer.attributes
    assert np.linalg.norm(direction.weights) == pytest.approx(1.0)
    w = np.array([3.0, -4.0, 1.0, 1.0])  # concise, formal, relevant, adherent (default weights)
    assert d["concise"] == pytest.approx(3.0 / np.linalg.norm(w)) and d["formal"] == pytest.approx(
        -4.0 / np.linalg.norm(w)
    )
    assert d["code"] == 0.0


def test_profiles_fit_cli_stores_a_prior_and_keeps_each_users_pins(tmp_path, capsys):
    from steer.cli import main
    from steer.storage.database import SqliteDatabase
    from steer.storage.profiles import ProfileStore

    path = tmp_path / "fit.db"
    store = ProfileStore(SqliteDatabase(path))
    rng = np.random.default_rng(5)
    for i, user in enumerate(["u0", "u1", "u2", "u3"]):
        for d in pairs_for(np.array(PROTOS[i % 2]), 10, rng):
            store.add_feedback("t1", user, "c", "choice", {"choice": 0}, "features", ATTRS, [(d.tolist(), 1.0)])
    store.save_user("t1", "u0", "features", ATTRS, UserParams([0.0], [0.0, 0.0, 0.0], pinned={"formal": 1.0}))
    store.db.close()
    with pytest.raises(SystemExit) as done:
        main(["profiles", "fit", "--database", str(path), "--k", "2", "--epochs", "60"])
    assert done.value.code == 0 and "t1: fitted K=2 prototypes on 4 users, 40 pairs" in capsys.readouterr().out
    store = ProfileStore(SqliteDatabase(path))
    prior = store.prior("t1", "features")
    assert prior is not None and prior.k == 2 and prior.attributes == ATTRS
    assert len(prior.support) == 4 and all(len(row) == 2 + len(ATTRS) for row in prior.support)
    assert sorted(prior.support_users) == ["u0", "u1", "u2", "u3"]
    row = store.user("t1", "u0", "features")
    assert row is not None and len(row[1].mixture) == 2 and row[1].pinned == {"formal": 1.0}
    kept = dict(zip(prior.support_users, prior.support, strict=True))
    store.forget("t1", "u2")  # the user's row in the population sample goes with everything else
    after = store.prior("t1", "features")
    assert after is not None and sorted(after.support_users) == ["u0", "u1", "u3"]
    assert dict(zip(after.support_users, after.support, strict=True)) == {u: kept[u] for u in ("u0", "u1", "u3")}


# --- the fitted prior: a population sample, the posterior mean of a new user, K chosen on held-out users


def two_group_support(n: int = 40) -> list[list[float]]:
    """Half the population all on prototype 0, half on prototype 1 (mixture probabilities, zero offset)."""
    return [[1.0, 0.0, 0.0, 0.0, 0.0] if i % 2 == 0 else [0.0, 1.0, 0.0, 0.0, 0.0] for i in range(n)]


def test_with_a_population_sample_no_feedback_gives_the_population_mean():
    prior = Prior(ATTRS, PROTOS, [0.0, 0.0], support=two_group_support())
    params = fit_user(prior, fresh_user(prior), np.zeros((0, 3)), np.ones(0), {}, {})
    assert np.allclose(weights(prior, params, {}, {}), 0.5 * np.array(PROTOS[0]) + 0.5 * np.array(PROTOS[1]))


def test_with_a_population_sample_a_few_comparisons_move_the_user_to_their_group():
    prior = Prior(ATTRS, PROTOS, [0.0, 0.0], support=two_group_support())
    rng = np.random.default_rng(6)
    deltas = pairs_for(np.array(PROTOS[1]), 10, rng)
    one = fit_user(prior, fresh_user(prior), deltas[:1], np.ones(1), {}, {})
    ten = fit_user(prior, fresh_user(prior), deltas, np.ones(10), {}, {})
    share = [float(np.exp(p.mixture[1]) / np.exp(p.mixture).sum()) for p in (one, ten)]
    assert 0.5 < share[0] < share[1] and share[1] > 0.95
    assert weights(prior, ten, {}, {})[0] < -1.5  # the verbose lovers' concise weight


def test_with_a_population_sample_pins_hold_and_down_weighted_pairs_count_less():
    prior = Prior(ATTRS, PROTOS, [0.0, 0.0], support=two_group_support())
    rng = np.random.default_rng(7)
    deltas = pairs_for(np.array(PROTOS[1]), 6, rng)
    pinned = fit_user(prior, fresh_user(prior), deltas, np.ones(6), {}, {"formal": -2.0})
    assert weights(prior, pinned, {}, {"formal": -2.0})[1] == -2.0 and pinned.offset[1] == 0.0
    full = fit_user(prior, fresh_user(prior), deltas, np.ones(6), {}, {})
    light = fit_user(prior, fresh_user(prior), deltas, np.full(6, 0.1), {}, {})
    assert weights(prior, light, {}, {})[0] > weights(prior, full, {}, {})[0]  # less evidence: nearer the mean


def test_with_a_population_sample_much_evidence_leaves_the_populations_hull():
    prior = Prior(ATTRS, PROTOS, [0.0, 0.0], support=two_group_support())
    rng = np.random.default_rng(8)
    deltas = pairs_for(np.array([0.0, 4.0, 0.0]), 200, rng)  # formality: nobody in the population has it
    params = fit_user(prior, fresh_user(prior), deltas, np.ones(200), {}, {})
    assert weights(prior, params, {}, {})[1] > 1.0


def test_population_support_keeps_the_users_with_most_pairs_as_mixture_probabilities_and_offsets():
    prior = Prior(ATTRS, PROTOS, [0.0, 0.0])
    params = [UserParams([0.0, 0.0], [0.1, 0.0, 0.0], events=3), UserParams([2.0, 0.0], [0.0, 0.2, 0.0], events=9)]
    rows = population_support(prior, params, 1)
    assert len(rows) == 1 and len(rows[0]) == 2 + 3
    assert rows[0][:2] == pytest.approx([np.exp(2) / (1 + np.exp(2)), 1 / (1 + np.exp(2))])
    assert rows[0][2:] == [0.0, 0.2, 0.0]


def two_group_users(n: int, per_user: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(pairs_for(np.array(PROTOS[i % 2]) * 2, per_user, rng), np.ones(per_user)) for i in range(n)]


def test_few_shot_accuracy_prefers_a_prior_that_matches_the_users():
    users = two_group_users(10, 20, 9)
    right = Prior(ATTRS, PROTOS, [0.0, 0.0], support=two_group_support())
    wrong = Prior(ATTRS, [[0.0, 2.0, -1.0], [0.0, -2.0, -1.0]], [0.0, 0.0], support=two_group_support())
    assert few_shot_accuracy(right, users) > 0.8 > few_shot_accuracy(wrong, users)


def test_fit_prior_chooses_k_on_held_out_users_and_keeps_a_population_sample():
    users = two_group_users(30, 16, 10)
    hyper = Hyper(ks=(1, 2), support=8)
    prior, params, scores = fit_prior(users, ATTRS, hyper=hyper, epochs=150)
    assert set(scores) == {1, 2} and scores[2] > scores[1]  # one prototype cannot serve both groups
    assert prior.k == 2 and len(params) == 30 and len(prior.support) == 8
    forced, _, none = fit_prior(users, ATTRS, k=1, hyper=hyper, epochs=50)
    assert forced.k == 1 and none == {}


def test_store_round_trips_the_population_sample_of_a_prior(tmp_path):
    from steer.storage.database import SqliteDatabase
    from steer.storage.profiles import ProfileStore

    store = ProfileStore(SqliteDatabase(tmp_path / "p.db"))
    store.save_prior("t1", "features", Prior(ATTRS, PROTOS, [0.0, 0.0], users=2, support=two_group_support(2)))
    store.save_prior("t2", "features", Prior(ATTRS, PROTOS, [0.0, 0.0]))
    got = store.prior("t1", "features")
    assert got is not None and got.support == two_group_support(2) and got.prototypes == PROTOS
    bare = store.prior("t2", "features")
    assert bare is not None and bare.support == []


def test_a_users_lock_is_shared_while_held_and_forgotten_once_released(tmp_path):
    from steer.server.services import Services
    from steer.settings import load_settings

    profiles = Services(load_settings(None, database=str(tmp_path / "s.db"))).profiles

    async def scenario() -> None:
        first = profiles.user_lock("t1", "ann")
        async with first:
            assert profiles.user_lock("t1", "ann") is first  # a second writer waits on the same lock
            assert profiles.user_lock("t1", "bob") is not first
        del first
        assert ("t1", "ann") not in profiles._user_locks

    asyncio.run(scenario())


def test_eval_profiles_reports_the_mean_of_its_populations_and_each_one(tmp_path):
    from steer.cli import build_parser
    from steer.evals.profiles import run_eval

    args = build_parser().parse_args(
        ["eval", "profiles", "--data", str(tmp_path), "--items", "30", "--populations", "2", "--seed", "3",
         "--train-users", "24", "--test-users", "6", "--heldout", "40", "--k", "2", "--epochs", "30"]
    )
    result = run_eval(args)
    assert result["source"].startswith("generated")  # no PrefEval data in tmp_path
    assert [r["seed"] for r in result["populations"]] == [3, 4]
    for m in ("steer", "global", "per_user", "oracle"):
        for e in ("0", "10", "50"):
            values = [r["accuracy"][m][e] for r in result["populations"]]
            assert result["accuracy"][m][e] == pytest.approx(np.mean(values), abs=1e-4)
    at10 = result["at_10_events"]
    assert at10["worst_minus_global"] == min(r["at_10_events"]["steer_minus_global"] for r in result["populations"])
    assert at10["met_over_global"] == (at10["steer"] - at10["global"] >= at10["target_over_global"])


def test_eval_profiles_reports_four_regimes_side_by_side_and_the_share_above_chance(tmp_path):
    from steer.cli import build_parser
    from steer.evals.profiles import REGIMES, above_chance, run_regimes, table

    args = build_parser().parse_args(
        ["eval", "profiles", "--data", str(tmp_path), "--items", "20", "--populations", "1",
         "--train-users", "16", "--test-users", "4", "--heldout", "20", "--k", "2", "--epochs", "20"]
    )  # fmt: skip
    result = run_regimes(args)
    assert list(result["regimes"]) == list(REGIMES)
    for name, r in result["regimes"].items():
        assert (r["centred"], r["alpha"]) == REGIMES[name]
        assert r["steer_share_above_chance"] == above_chance(r["steer"], r["oracle"])
    assert above_chance(0.7, 0.9) == pytest.approx(0.5) and above_chance(0.6, 0.5) == 0.0
    assert "uncentred-2.0" in table(result) and "above chance" in table(result)

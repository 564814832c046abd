"""The multi-replica benchmarks run end to end, small: ``steer bench replicas`` and
``steer bench load --policy default`` (real steer processes on one SQLite file, the stub upstream).
They check what the benchmarks report, never a figure."""

from __future__ import annotations

import argparse
import json

from steer.bench import load_policy, replicas


def test_bench_replicas_measures_each_write_until_the_other_replica_recalls_it() -> None:
    args = argparse.Namespace(writes=12, users=3, database=None, workers=1, json=None, png=None)
    out = replicas.run_benchmark(args, lambda _: None)
    json.dumps(out)
    assert len(out["samples_ms"]) == 12 and all(v >= 0 for v in out["samples_ms"])
    seen = out["answers_of_b_until_seen"]
    assert seen["first"] + seen["later"] == 12 and seen["max"] >= 1
    assert out["visible_ms"]["p50"] <= out["visible_ms"]["p99"] <= out["visible_ms"]["max"]
    assert [v["result"] in ("PASS", "MISS") for v in out["verdicts"]] == [True]
    assert "p99" in replicas.format_table(out)


def test_bench_load_with_the_default_policy_spreads_users_over_two_replicas_and_checks_recall() -> None:
    args = argparse.Namespace(
        clients=4, users=12, replicas=2, duration=6.0, warmup=2.0, preference_share=0.5, stub_latency_ms=5.0,
        tokens=4, timeout=60.0, settle=5.0, json=None,
    )  # fmt: skip
    out = load_policy.run_policy_load(args, lambda _: None)
    json.dumps(out)
    assert out["requests"] > 0 and out["errors"] == 0, out["error_samples"]
    assert out["preferences_stated"] > 0 and out["not_recalled"] == 0, out["preferences_not_recalled"]
    assert set(out["rss"]) == {"A", "B"} and all(r["mib_end"] for r in out["rss"].values())
    targets = {v["target"] for v in out["verdicts"]}
    assert targets >= {"zero errors", "every stated preference recalled on another replica"}
    assert "replica B RSS" in load_policy.format_table(out)

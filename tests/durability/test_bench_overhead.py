"""``steer bench overhead`` end to end, tiny: real stub and steer processes, short windows, no timing asserts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steer.bench import load, overhead, processes
from steer.cli import build_parser

pytestmark = pytest.mark.timeout(120)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_overhead_core_direct_and_fast(tmp_path: Path) -> None:
    started: list[int] = []
    real_start = overhead.Processes.start

    def spy(self: overhead.Processes, *args: object, **kwargs: object) -> processes.Server:
        server = real_start(self, *args, **kwargs)  # type: ignore[arg-type]
        started.append(server.proc.pid)
        return server

    lines: list[str] = []
    overhead.Processes.start = spy  # type: ignore[method-assign]
    try:
        out = overhead.run_benchmark(
            clients=4,
            duration=0.5,
            warmup=0.2,
            latency_ms=5,
            tokens=4,
            rounds=2,
            targets=("direct", "fast", "fast-workers2", "min-proxy"),
            progress=lines.append,
        )
    finally:
        overhead.Processes.start = real_start  # type: ignore[method-assign]

    json.dumps(out)  # JSON-able as is
    assert set(out) >= {"config", "targets", "verdicts", "errors"}
    assert out["config"]["clients"] == 4
    assert list(out["targets"]) == ["direct", "fast", "fast-workers2", "min-proxy"]
    assert out["errors"] == 0, out
    for name in ("direct", "fast", "fast-workers2", "min-proxy"):
        res = out["targets"][name]
        assert res["status"] == "ok"
        for mode in ("non_stream", "stream"):
            m = res[mode]
            assert m["errors"] == 0 and m["error_samples"] == []
            assert m["requests"] > 0
            for key in (
                "requests_per_s",
                "p50_ms",
                "p99_ms",
                "added_p50_ms",
                "added_p99_ms",
                "rps_vs_direct",
                "cpu_cores",
            ):
                assert key in m, (name, mode, key)
        assert res["stream"]["ttfc_p50_ms"] is not None
        assert "added_ttfc_p50_ms" in res["stream"]
    assert out["targets"]["direct"]["non_stream"]["added_p50_ms"] == 0
    fast = out["targets"]["fast"]["non_stream"]
    assert len(fast["rounds"]) == 2  # each round measured, its added figure taken within the round
    assert fast["requests"] == sum(r["requests"] for r in fast["rounds"])
    assert fast["added_p99_ms"] == round(sum(r["added_p99_ms"] for r in fast["rounds"]) / 2, 3)
    assert sum("round 2/2" in line for line in lines) == 16  # start and result, four targets, two modes
    results = {v["name"]: v["result"] for v in out["verdicts"]}
    assert len(results) == 9 and set(results.values()) <= {"PASS", "MISS", "SKIP"}
    assert results["fast path req/s, --workers 2 vs 1 worker (non-streaming)"] in ("PASS", "MISS")  # measured
    assert results["steer fast path req/s vs LiteLLM proxy (non-streaming)"] == "SKIP"  # not run
    assert any("fast" in line and "req/s" in line for line in lines)  # a progress line per phase

    table = overhead.format_table(out)
    assert "direct" in table and "fast" in table and ("PASS" in table or "MISS" in table)
    assert "median of 2 rounds" in table and "fast non_stream, each round" in table and "min-proxy" in table

    # every process it started is gone
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started and not any(_alive(pid) for pid in started)


def test_cli_options_parse() -> None:
    args = build_parser().parse_args(
        [
            "bench",
            "overhead",
            "--clients",
            "8",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--latency-ms",
            "5",
            "--tokens",
            "3",
            "--targets",
            "direct,fast",
            "--rounds",
            "5",
            "--stub",
            "full",
            "--json",
            "x.json",
            "--png",
            "x.png",
        ]
    )
    assert (args.clients, args.duration, args.warmup, args.latency_ms, args.tokens) == (8, 1.0, 0.0, 5.0, 3)
    assert args.targets == "direct,fast" and args.json == "x.json" and args.png == "x.png" and args.rounds == 5
    assert args.stub == "full" and build_parser().parse_args(["bench", "overhead"]).stub == "lean"


def test_unknown_target_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown targets"):
        overhead.run_benchmark(targets=("direct", "nope"), progress=lambda _: None)
    with pytest.raises(ValueError, match="rounds"):
        overhead.run_benchmark(rounds=0, progress=lambda _: None)
    with pytest.raises(ValueError, match="unknown stub"):
        overhead.run_benchmark(stub="nope", progress=lambda _: None)


def test_rounds_combine_to_their_medians() -> None:
    rows = [
        {
            "requests": 10,
            "errors": 0,
            "error_samples": [],
            "p99_ms": 30.0,
            "added_p99_ms": 9.0,
            "ttfc_p50_ms": None,
            "cpu_cores": {"steer": 0.3, "driver": 0.1},
            "mode": "x",
        },
        {
            "requests": 12,
            "errors": 1,
            "error_samples": ["e"],
            "p99_ms": 20.0,
            "added_p99_ms": 1.0,
            "ttfc_p50_ms": None,
            "cpu_cores": {"steer": 0.5, "driver": 0.1},
            "mode": "x",
        },
        {
            "requests": 11,
            "errors": 0,
            "error_samples": [],
            "p99_ms": 25.0,
            "added_p99_ms": 4.0,
            "ttfc_p50_ms": None,
            "cpu_cores": {"steer": 0.4, "driver": None},
            "mode": "x",
        },
    ]
    out = overhead.combine_rounds(rows)
    assert (out["requests"], out["errors"], out["error_samples"]) == (33, 1, ["e"])
    assert (out["p99_ms"], out["added_p99_ms"], out["ttfc_p50_ms"]) == (25.0, 4.0, None)
    assert out["cpu_cores"] == {"steer": 0.4, "driver": 0.1}
    assert out["mode"] == "x" and out["rounds"] == rows
    assert overhead.combine_rounds(rows[:1]) is rows[0]


def test_percentile_and_table_without_results(tmp_path: Path) -> None:
    assert load.percentile([], 50) is None
    assert load.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert load.percentile([float(i) for i in range(1, 101)], 99) == 99.0
    out = {
        "config": {
            "clients": 1,
            "duration_s": 1,
            "warmup_s": 0,
            "stub_latency_ms": 5,
            "stub_tokens": 1,
            "cpu_count": 2,
            "modes": ["non_stream", "stream"],
        },
        "targets": {"direct": {"status": "ok"}, "litellm-proxy": {"status": "not installed"}},
        "verdicts": overhead.verdicts({}),
        "errors": 0,
    }
    assert "not installed" in overhead.format_table(out)
    overhead.write_png(out, str(tmp_path / "x.png"))
    assert (tmp_path / "x.png").stat().st_size > 0


def test_every_p90_reported_by_benches_and_evals_is_the_nearest_rank_percentile() -> None:
    from steer.bench import rps
    from steer.evals import align

    for n in (10, 20, 30):
        values = [float(i) for i in range(1, n + 1)]  # nearest-rank p90 of 1..n is 0.9 n
        assert rps._stats(values)["p90_ms"] == 0.9 * n
        assert align._summary(values)["p90"] == 0.9 * n
        assert load.percentile(values, 90) == 0.9 * n


def test_ctrl_c_stops_the_servers(tmp_path: Path) -> None:
    """SIGINT in the middle of the load: exit code 130 and no server left behind."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "steer",
            "bench",
            "overhead",
            "--targets",
            "direct,fast",
            "--duration",
            "30",
            "--warmup",
            "0",
            "--clients",
            "2",
            "--latency-ms",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for raw in proc.stdout:
            seen.append(raw.decode())
            if "warm-up" in seen[-1]:  # the first load phase has begun: servers are up
                break
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, seen
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, "".join(seen) + rest.decode()
        deadline = time.monotonic() + 5
        while any(_alive(int(pid)) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(int(pid)) for pid in children)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

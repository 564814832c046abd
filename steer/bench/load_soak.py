"""``steer bench load``: a soak test. Many concurrent clients, half of them streaming, against a
``steer serve`` process in front of the stub upstream, for a fixed time.

Targets: zero errors; p50 and p99 reported per mode; the steer process's resident memory grows no
more than 10% from the end of the warm-up to the end of the run. The load drivers are
``steer.bench.load`` processes (one for streaming clients, one for the rest); steer and the stub
run as processes of their own, so the figures include real HTTP on loopback.

    steer bench load [--clients 200] [--duration 60] [--warmup 10] [--json out.json] [--png out.png]

``--policy default`` measures the product instead: recall and remember on, many users, several
replicas on one database (``steer.bench.load_policy``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from steer.bench.load_harness import RSS_LIMIT, in_workdir, main, rss, rss_growth, verdict_lines
from steer.bench.processes import Processes, free_port
from steer.bench.replicas import start_stub
from steer.bench.report import Progress

POLICY = (
    "name: default\nextends: none\n"
    "stages:\n  system_prompt: {text: 'Answer briefly.'}\n"  # a request stage: the pipeline runs
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=200, help="concurrent clients in all (default 200)")
    p.add_argument("--stream-fraction", type=float, default=0.5, help="share of clients that stream (0.5)")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (default 10)")
    p.add_argument("--stub-latency-ms", type=float, default=20.0, help="the stub's time to answer (20)")
    p.add_argument("--tokens", type=int, default=16, help="tokens per stub answer (16)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout of the drivers (30)")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--png", help="write a chart of latency and resident memory here")
    p.add_argument(
        "--policy",
        choices=("passthrough", "default"),
        default="passthrough",
        help="passthrough: one steer, a request stage only (the proxy); default: recall and remember on, "
        "--users users over --replicas replicas sharing one database (the product)",
    )
    p.add_argument("--users", type=int, default=1000, help="--policy default: distinct users (1000)")
    p.add_argument("--replicas", type=int, default=2, help="--policy default: steer processes on one database (2)")
    p.add_argument(
        "--preference-share", type=float, default=0.2, help="--policy default: share of requests stating one (0.2)"
    )
    p.add_argument(
        "--settle", type=float, default=10.0, help="--policy default: seconds for background writes after the load (10)"
    )


def _driver(url: str, body: bytes, clients: int, stream: bool, a: argparse.Namespace) -> list[str]:
    cmd = [
        sys.executable, "-m", "steer.bench.load", "--url", url, "--body", body.decode(),
        "--clients", str(clients), "--duration", str(a.duration), "--warmup", str(a.warmup),
        "--timeout", str(a.timeout), "--mark",
    ]  # fmt: skip
    return [*cmd, "--stream"] if stream else cmd


def run_soak(a: argparse.Namespace, progress: Progress = print) -> dict[str, Any]:
    return in_workdir("steer-soak-", a, _run, progress)


def _run(a: argparse.Namespace, work: Path, procs: Processes, progress: Progress) -> dict[str, Any]:
    progress(f"starting the stub upstream ({a.stub_latency_ms:.0f} ms, {a.tokens} tokens)")
    stub_base = start_stub(procs, a.stub_latency_ms, a.tokens)
    steer_port = free_port()
    (work / "policies").mkdir()
    (work / "policies" / "default.yaml").write_text(POLICY)
    config = work / "steer.yaml"
    config.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": steer_port,
                "database": str(work / "steer.db"),
                "policies": str(work / "policies"),
                "policy_reload": False,
                "log_level": "warning",
                "models": [{"name": "stub", "api_base": stub_base}],
            }
        )
    )
    progress(f"starting steer on :{steer_port}")
    steer = procs.start("steer", [sys.executable, "-m", "steer", "serve", "--config", str(config)], steer_port)
    procs.wait_ready(steer, "/readyz", 120)

    url = f"http://127.0.0.1:{steer_port}/v1/chat/completions"
    streaming = round(a.clients * a.stream_fraction)
    plain = a.clients - streaming
    msgs = [{"role": "user", "content": "Say hello to the load test."}]
    drivers: dict[str, subprocess.Popen[bytes]] = {}
    for mode, n, stream in (("stream", streaming, True), ("non-stream", plain, False)):
        if n > 0:
            body = json.dumps({"model": "stub", "messages": msgs, "stream": stream}).encode()
            drivers[mode] = subprocess.Popen(
                _driver(url, body, n, stream, a),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            procs.others.append(drivers[mode])
    progress(
        f"load: {streaming} streaming + {plain} non-streaming clients, {a.warmup:.0f}s warm-up, "
        f"{a.duration:.0f}s measured"
    )

    window: dict[str, float] = {}
    marks = threading.Event()

    def watch_marks(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            if raw.strip() == b"window-start" and "start" not in window:
                window["start"] = time.monotonic()
                marks.set()

    first = next(iter(drivers.values()))
    threading.Thread(target=watch_marks, args=(first,), daemon=True).start()
    t0 = time.monotonic()
    samples: list[tuple[float, int]] = []  # (seconds since load began, RSS bytes)
    last_report = t0
    while any(p.poll() is None for p in drivers.values()):
        resident = rss(steer.proc.pid)
        now = time.monotonic()
        if resident is not None:
            samples.append((now - t0, resident))
        if now - last_report >= 10:
            phase = "measuring" if marks.is_set() else "warming up"
            progress(f"  {now - t0:5.0f}s  {phase}  steer RSS {resident / 2**20 if resident else 0:.1f} MiB")
            last_report = now
        if steer.proc.poll() is not None:
            raise RuntimeError(f"steer exited during the load:\n{steer.log_tail()}")
        time.sleep(0.5)

    results: dict[str, Any] = {}
    for mode, proc in drivers.items():
        stdout, stderr = proc.communicate(timeout=60)
        procs.others.remove(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} driver failed: {stderr.decode(errors='replace')[-2000:]}")
        results[mode] = json.loads(stdout)

    start = window.get("start", t0 + a.warmup) - t0
    memory = rss_growth([r for t, r in samples if t >= start])
    growth = memory["growth"]
    errors = sum(int(r["errors"]) for r in results.values())
    out: dict[str, Any] = {
        "benchmark": "load",
        "config": {
            "clients": a.clients,
            "streaming_clients": streaming,
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "stub_latency_ms": a.stub_latency_ms,
            "tokens": a.tokens,
        },
        "modes": results,
        "errors": errors,
        "requests": sum(int(r["requests"]) for r in results.values()),
        **{f"rss_{k}": v for k, v in memory.items()},  # rss_mib_after_warmup, rss_mib_end, rss_mib_peak, rss_growth
        "rss_samples": [(round(t, 1), r) for t, r in samples],
    }
    out["verdicts"] = [
        {"target": "zero errors", "measured": errors, "met": errors == 0},
        {
            "target": f"RSS growth after warm-up <= {RSS_LIMIT:.0%}",
            "measured": out["rss_growth"],
            "met": growth is not None and growth <= RSS_LIMIT,
        },
    ]
    return out


def format_table(out: dict[str, Any]) -> str:
    c = out["config"]
    lines = [
        f"steer bench load: {c['clients']} clients ({c['streaming_clients']} streaming), "
        f"{c['duration_s']:.0f}s measured after {c['warmup_s']:.0f}s warm-up, stub {c['stub_latency_ms']:.0f} ms",
        "",
        f"{'mode':<12}{'requests':>10}{'req/s':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'TTFC p50':>10}{'TTFC p99':>10}",
    ]
    for mode, r in out["modes"].items():

        def f(v: Any) -> str:
            return "-" if v is None else f"{v:.1f}"

        lines.append(
            f"{mode:<12}{r['requests']:>10}{r['requests_per_s']:>9.1f}{r['errors']:>8}{f(r['p50_ms']):>9}"
            f"{f(r['p99_ms']):>9}{f(r.get('ttfc_p50_ms')):>10}{f(r.get('ttfc_p99_ms')):>10}"
        )
        for sample in r.get("error_samples", []):
            lines.append(f"    error: {sample}")
    lines += [
        "",
        f"steer RSS: {out['rss_mib_after_warmup']} MiB after warm-up, {out['rss_mib_end']} MiB at the end "
        f"(peak {out['rss_mib_peak']} MiB), growth "
        + ("-" if out["rss_growth"] is None else f"{out['rss_growth']:+.1%}"),
        "",
    ]
    lines += verdict_lines(out)
    return "\n".join(lines)


def write_png(out: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    modes = list(out["modes"])
    p50 = [out["modes"][m]["p50_ms"] or 0 for m in modes]
    p99 = [out["modes"][m]["p99_ms"] or 0 for m in modes]
    xs = range(len(modes))
    ax1.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax1.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
    ax1.set_xticks(list(xs), modes)
    ax1.set_ylabel("latency (ms)")
    ax1.set_title(f"{out['config']['clients']} clients, 0 errors" if not out["errors"] else f"{out['errors']} errors")
    ax1.legend()
    ts = [t for t, _ in out["rss_samples"]]
    ax2.plot(ts, [r / 2**20 for _, r in out["rss_samples"]])
    ax2.axvline(out["config"]["warmup_s"], linestyle="--", color="grey", label="end of warm-up")
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("steer RSS (MiB)")
    ax2.set_title("resident memory")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.policy == "default":
        from steer.bench.load_policy import run as run_policy

        return run_policy(args)
    return main("load", args, lambda progress: run_soak(args, progress), format_table, write_png)

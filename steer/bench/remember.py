"""``steer bench remember``: is a response with remembering on as fast as with it off?

One stub upstream (fixed latency) and one ``steer serve`` process with two policies: users
``on-*`` get ``remember`` (the offline rule extractor, embedding and storing in the background),
every other user gets no stage. A closed-loop driver (``--clients`` concurrent clients, one
keep-alive connection each) sends preference-bearing messages ("I can't stand jazz records on
weekends."), drawn from the same mix in both conditions, so that ``remember`` really extracts,
embeds and writes. The windows alternate off, on, off, on... (``--rounds`` each) so drift on a shared
machine falls on both; each condition's latencies are pooled over its windows. Reported: median,
p90, p99, req/s per condition, the on/off ratio of the medians (target <= 1.05), and the memories
written during the on windows (proof that remembering ran).

Every process this starts runs in a session of its own and is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steer.bench.processes import Processes, free_port
from steer.bench.report import percentile, run_cli

MAX_MEDIAN_RATIO = 1.05
CONDITIONS = ("off", "on")
VERBS = ("love", "can't stand", "always choose", "never buy", "prefer", "avoid", "really enjoy", "hate")
THINGS = (
    "jazz records",
    "spicy food",
    "window seats",
    "horror films",
    "wool sweaters",
    "early flights",
    "board games",
    "red wine",
    "crowded beaches",
    "audiobooks",
    "electric cars",
    "sushi",
)
PLACES = ("on weekends", "in winter", "when I travel", "at home", "with friends", "for work", "in the evening")

Progress = Callable[[str], None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "response latency with the remember stage on vs off (same server, same run)"
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per window (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each window (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="windows per condition, alternating (default 2)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="the stub upstream's latency (default 20)")
    p.add_argument("--users", type=int, default=50, help="distinct users per condition (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--png", metavar="PATH", help="write a chart (matplotlib)")


def messages(seed: int) -> list[str]:
    """Every preference statement of the mix, shuffled with ``seed``."""
    out = [f"I {v} {t} {p}." for v in VERBS for t in THINGS for p in PLACES]
    random.Random(seed).shuffle(out)
    return out


def write_config(workdir: Path, port: int, stub_base: str) -> Path:
    policies = workdir / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text("name: default\nextends: none\nstages: {}\n")
    (policies / "remember.yaml").write_text(
        'name: remember\nextends: none\nmatch:\n  users: ["on-*"]\nstages:\n  remember: {}\n'
    )
    cfg = workdir / "steer.yaml"
    cfg.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "database": str(workdir / "steer.db"),
                "policies": str(policies),
                "log_level": "warning",
                "policy_reload": False,
                "models": [{"name": "stub", "model": "stub", "backend": "openai", "api_base": stub_base}],
            }
        )
    )
    return cfg


async def window(
    url: str, condition: str, texts: list[str], users: int, clients: int, duration: float, warmup: float, seed: int
) -> dict[str, Any]:
    """One closed-loop window; latencies (s) of the requests completed inside it."""
    import aiohttp

    rng = random.Random(seed)
    lat: list[float] = []
    errors: list[str] = []
    t_start = time.perf_counter() + warmup
    t_end = t_start + duration

    async def client(c: int, session: aiohttp.ClientSession) -> None:
        while (t0 := time.perf_counter()) < t_end:
            body = {
                "model": "stub",
                "user": f"{condition}-{rng.randrange(users)}",
                "messages": [{"role": "user", "content": texts[rng.randrange(len(texts))]}],
            }
            try:
                async with session.post(url, json=body) as r:
                    data = await r.read()
                    ok = r.status == 200 and b'"choices"' in data
            except aiohttp.ClientError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)
                continue
            done = time.perf_counter()
            if not ok:
                errors.append(data[:200].decode("utf-8", "replace"))
            elif t_start <= done <= t_end:
                lat.append(done - t0)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(c, session) for c in range(clients)))
    return {"latencies": lat, "errors": len(errors), "error_samples": errors[:3]}


def summary(lat: list[float], seconds: float) -> dict[str, Any]:
    s = sorted(lat)

    def ms(q: float) -> float | None:
        v = percentile(s, q)
        return None if v is None else round(v * 1000, 3)

    return {
        "requests": len(s),
        "requests_per_s": round(len(s) / seconds, 1) if seconds else None,
        "p50_ms": ms(50),
        "p90_ms": ms(90),
        "p99_ms": ms(99),
        "p999_ms": ms(99.9),
        "max_ms": round(s[-1] * 1000, 3) if s else None,
        "mean_ms": round(sum(s) / len(s) * 1000, 3) if s else None,
    }


def _count_memories(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0])
    except sqlite3.Error:
        return 0


def run_benchmark(
    *,
    clients: int = 8,
    duration: float = 10.0,
    warmup: float = 2.0,
    rounds: int = 2,
    latency_ms: float = 20.0,
    users: int = 50,
    seed: int = 0,
    ready_timeout: float = 180.0,
    progress: Progress = print,
) -> dict[str, Any]:
    if clients < 1 or rounds < 1 or duration <= 0:
        raise ValueError("--clients and --rounds must be at least 1, --duration above 0")
    texts = messages(seed)
    out: dict[str, Any] = {
        "config": {
            "clients": clients,
            "duration_s": duration,
            "warmup_s": warmup,
            "rounds": rounds,
            "stub_latency_ms": latency_ms,
            "users": users,
            "messages": len(texts),
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "windows": [],
    }
    pooled: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    with tempfile.TemporaryDirectory(prefix="steer-bench-remember-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        env = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "HF_HUB_OFFLINE": "1"}
        try:
            stub_port = free_port()
            stub = procs.start(
                "stub",
                [sys.executable, "-m", "steer.testing.stub", "--port", str(stub_port), "--latency-ms", str(latency_ms)],
                stub_port,
                env,
            )
            procs.wait_ready(stub, "/v1/models", ready_timeout)
            port = free_port()
            cfg = write_config(workdir, port, f"http://127.0.0.1:{stub_port}/v1")
            progress(f"starting steer on :{port} (remember for users on-*)")
            steer = procs.start("steer", [sys.executable, "-m", "steer", "serve", "--config", str(cfg)], port, env)
            procs.wait_ready(steer, "/readyz", ready_timeout)
            # the memory (embedding model) loads at start-up for the remember policy; wait for it
            procs.wait_ready(steer, "/v1/users/probe/memories", ready_timeout)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            order = [c for _ in range(rounds) for c in CONDITIONS]
            before = 0
            for i, condition in enumerate(order):
                progress(f"window {i + 1}/{len(order)}: remember {condition}, {clients} clients, {duration:g}s")
                w = asyncio.run(window(url, condition, texts, users, clients, duration, warmup, seed + i))
                lat = w.pop("latencies")
                pooled[condition] += lat
                written = _count_memories(workdir / "steer.db")
                res = {"condition": condition, **summary(lat, duration), **w, "memories_in_store": written}
                out["windows"].append(res)
                progress(
                    f"  {condition}: p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, {w['errors']} errors; "
                    f"memories in the store: {written} (+{written - before})"
                )
                before = written
            time.sleep(2)  # let the last background writes land before counting
            out["memories_written"] = _count_memories(workdir / "steer.db")
        finally:
            progress("stopping the servers")
            procs.close()
    seconds = duration * rounds
    out["conditions"] = {c: summary(pooled[c], seconds) for c in CONDITIONS}
    off, on = out["conditions"]["off"]["p50_ms"], out["conditions"]["on"]["p50_ms"]
    ratio = round(on / off, 4) if on is not None and off else None
    out["median_ratio_on_off"] = ratio
    out["verdict"] = {
        "name": "median latency with remember on / off",
        "measured": ratio,
        "op": "<=",
        "limit": MAX_MEDIAN_RATIO,
        "result": "SKIP" if ratio is None else "PASS" if ratio <= MAX_MEDIAN_RATIO else "MISS",
    }
    out["errors"] = sum(w["errors"] for w in out["windows"])
    return out


def format_table(out: dict[str, Any]) -> str:
    c = out["config"]
    lines = [
        f"steer bench remember: stub {c['stub_latency_ms']:g} ms, {c['clients']} clients, {c['rounds']} x "
        f"{c['duration_s']:g}s windows per condition (alternating), {c['cpu_count']} CPUs, "
        f"load average at start {c['loadavg_at_start'][0]}",
        "",
        f"{'remember':<9} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
        f"{'max ms':>8} {'mean ms':>8}",
        "-" * 83,
    ]
    for name, m in out["conditions"].items():
        lines.append(
            f"{name:<9} {m['requests']:>8} {m['requests_per_s'] or 0:>8.1f} {m['p50_ms'] or 0:>8.2f} "
            f"{m['p90_ms'] or 0:>8.2f} {m['p99_ms'] or 0:>8.2f} {m['p999_ms'] or 0:>9.2f} {m['max_ms'] or 0:>8.2f} "
            f"{m['mean_ms'] or 0:>8.2f}"
        )
    v = out["verdict"]
    lines += [
        "",
        f"memories written by remember during the run: {out['memories_written']}; errors: {out['errors']}",
        f"{v['result']:<4}  {v['name']}: {v['measured']} (target {v['op']} {v['limit']})",
    ]
    return "\n".join(lines)


def write_png(out: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["p50_ms", "p90_ms", "p99_ms"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, cond in enumerate(CONDITIONS):
        m = out["conditions"][cond]
        bars = ax.bar([k + (i - 0.5) * 0.4 for k in range(len(keys))], [m[k] or 0 for k in keys], 0.4, label=cond)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(keys)), [k.removesuffix("_ms") for k in keys])
    ax.set_ylabel("response latency, ms")
    ax.set_title(f"remember on vs off: median ratio {out['median_ratio_on_off']}")
    ax.legend(title="remember")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    return run_cli(
        "remember",
        args,
        lambda progress: run_benchmark(
            clients=args.clients,
            duration=args.duration,
            warmup=args.warmup,
            rounds=args.rounds,
            latency_ms=args.latency_ms,
            users=args.users,
            seed=args.seed,
            ready_timeout=args.ready_timeout,
            progress=progress,
        ),
        format_table,
        write_png,
    )

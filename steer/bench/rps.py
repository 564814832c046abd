"""``steer bench rps``: the wall time of RPS (k candidates in parallel, reranked) next to one completion.

One stub upstream with a fixed latency and token rate serves one steer; every row sends the same
question, one request at a time, as a different user whose policy says what runs:

* ``single``          no stage: one completion, steer's fast path (the baseline);
* ``rps``             ``sample`` (RPS, k candidates) + ``rerank``;
* ``rps-1-failing``   the same, one of the k candidate requests answered with a 500;
* ``rps-1-timeout``   the same, one candidate stalled past ``candidate_timeout_s``;

non-streaming (wall time) and streaming (time to first chunk and wall time). Medians side by
side, from the same run. The stub streams tokens at its token interval; a non-streamed answer
is held for the same generation time (latency + tokens x interval) by a thin wrapper around the
stub (``python -m steer.bench.rps --serve-stub``), which also injects the per-candidate faults
(``bench_fault_once``: the first request of a key fails or stalls, the others of that key pass),
so one of the k parallel candidates, whichever arrives first, is the faulty one. The steer model
has ``retries: 0`` so that a failed candidate stays failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from steer.bench.processes import Processes, free_port
from steer.bench.report import percentile, run_cli

MAX_RATIO = 1.25  # the target: RPS with k = 5 at most 1.25x one completion (median wall time)
ROWS = ("single", "rps", "rps-1-failing", "rps-1-timeout")
QUESTION = "Suggest a weekend itinerary for a first visit to Lisbon."

Progress = Callable[[str], None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "RPS wall time (k parallel candidates, reranked) next to one completion, on a stub upstream"
    p.add_argument("--k", type=int, default=5, help="candidates per request (default 5)")
    p.add_argument("--requests", type=int, default=20, help="measured requests per row and mode (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured requests per row first (default 2)")
    p.add_argument("--latency-ms", type=float, default=200.0, help="stub time to first token (default 200)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per stub answer (default 64)")
    p.add_argument("--token-interval-ms", type=float, default=20.0, help="stub time per token (default 20)")
    p.add_argument(
        "--candidate-timeout-ms",
        type=float,
        default=None,
        help="the sample stage's per-candidate timeout (default: 2x one generation)",
    )
    p.add_argument("--scorer", default="features", help="the rerank scorer (default features)")
    p.add_argument("--modes", default="non_stream,stream", help="non_stream, stream or both (default both)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--png", metavar="PATH", help="write a bar chart (matplotlib)")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for each server")


# ---------------------------------------------------------------------------------------------
# the stub wrapper (its own process)

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def wrap_stub(app: ASGIApp, latency_s: float, tokens: int, interval_s: float, stall_s: float = 3600.0) -> ASGIApp:
    """The stub, with non-streamed answers held for the whole generation time and one-shot faults."""
    import orjson

    seen: set[str] = set()

    async def wrapped(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            n_tokens = int(body.get("stub_tokens", tokens))
            if not body.get("stream"):
                body.setdefault("stub_latency", latency_s + n_tokens * interval_s)
            once = body.pop("bench_fault_once", None)
            if isinstance(once, dict) and str(once.get("key")) not in seen:
                seen.add(str(once.get("key")))
                if once.get("fault") == "slow":
                    body["stub_latency"] = stall_s
                else:
                    body["stub_fault"] = str(once.get("fault"))
            raw = orjson.dumps(body)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                message: dict[str, Any] = await receive()  # later messages (a disconnect) as they come
                return message
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await app(scope, replay, send)

    return wrapped


def serve_stub(argv: list[str] | None = None) -> None:
    import uvicorn

    from steer.testing.stub import create_stub

    p = argparse.ArgumentParser(description="the stub upstream of steer bench rps")
    p.add_argument("--serve-stub", action="store_true")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--token-interval-ms", type=float, default=20.0)
    a = p.parse_args(argv)
    latency, interval = a.latency_ms / 1000, a.token_interval_ms / 1000
    app = wrap_stub(create_stub(latency, a.tokens, interval), latency, a.tokens, interval)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


# ---------------------------------------------------------------------------------------------
# configuration


def write_config(workdir: Path, port: int, stub_base: str, k: int, candidate_timeout_s: float, scorer: str) -> Path:
    policies = workdir / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text("name: default\nextends: none\nstages: {}\n")
    stage_timeout = candidate_timeout_s + 30
    (policies / "rps.yaml").write_text(
        json.dumps(
            {
                "name": "rps",
                "extends": "none",
                "match": {"users": ["rps-*"]},
                "stages": {
                    "sample": {"k": k, "candidate_timeout_s": candidate_timeout_s, "timeout_s": stage_timeout},
                    "rerank": {"scorer": scorer, "record": False},
                },
            }
        )
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
                "models": [{"name": "stub", "api_base": stub_base, "retries": 0, "timeout": 3600}],
            }
        )
    )
    return cfg


# ---------------------------------------------------------------------------------------------
# the driver (sequential: one request at a time, so each is timed on an idle server)


def _body(row: str, stream: bool, key: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "stub",
        "user": "single" if row == "single" else f"rps-{row}",
        "messages": [{"role": "user", "content": QUESTION}],
    }
    if stream:
        body["stream"] = True
    if row == "rps-1-failing":
        body["bench_fault_once"] = {"key": key, "fault": "500"}
    elif row == "rps-1-timeout":
        body["bench_fault_once"] = {"key": key, "fault": "slow"}
    return body


def one_request(client: Any, url: str, body: dict[str, Any]) -> tuple[float, float | None, str | None]:
    """(wall ms, first-chunk ms or None, error or None) of one request."""
    t0 = time.perf_counter()
    first: float | None = None
    try:
        if body.get("stream"):
            with client.stream("POST", url, json=body) as r:
                if r.status_code != 200:
                    return (time.perf_counter() - t0) * 1000, None, f"HTTP {r.status_code}: {r.read()[:200]!r}"
                done = False
                for line in r.iter_lines():
                    if line.startswith("data: ") and first is None:
                        first = (time.perf_counter() - t0) * 1000
                    if line.startswith('data: {"error"'):
                        return (time.perf_counter() - t0) * 1000, first, line[:200]
                    done = done or line == "data: [DONE]"
                if not done:
                    return (time.perf_counter() - t0) * 1000, first, "the stream ended without [DONE]"
        else:
            r = client.post(url, json=body)
            if r.status_code != 200 or "choices" not in r.json():
                return (time.perf_counter() - t0) * 1000, None, f"HTTP {r.status_code}: {r.text[:200]}"
    except Exception as exc:  # the row reports it; the run goes on
        return (time.perf_counter() - t0) * 1000, first, f"{type(exc).__name__}: {exc}"
    return (time.perf_counter() - t0) * 1000, first, None


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median_ms": None, "p90_ms": None, "min_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(percentile(ordered, 90) or 0.0, 2),
        "min_ms": round(ordered[0], 2),
        "max_ms": round(ordered[-1], 2),
    }


def measure(url: str, row: str, stream: bool, requests: int, warmup: int) -> dict[str, Any]:
    import httpx

    walls: list[float] = []
    firsts: list[float] = []
    errors: list[str] = []
    with httpx.Client(timeout=3600) as client:
        for i in range(warmup + requests):
            wall, first, err = one_request(client, url, _body(row, stream, f"{row}-{stream}-{i}"))
            if i < warmup:
                continue
            if err:
                errors.append(err)
                continue
            walls.append(wall)
            if first is not None:
                firsts.append(first)
    out: dict[str, Any] = {"requests": len(walls), "errors": len(errors), "error_samples": errors[:3]}
    out["wall"] = _stats(walls)
    if stream:
        out["first_chunk"] = _stats(firsts)
    return out


# ---------------------------------------------------------------------------------------------
# the run


def run_benchmark(
    *,
    k: int = 5,
    requests: int = 20,
    warmup: int = 2,
    latency_ms: float = 200.0,
    tokens: int = 64,
    token_interval_ms: float = 20.0,
    candidate_timeout_ms: float | None = None,
    scorer: str = "features",
    modes: tuple[str, ...] = ("non_stream", "stream"),
    ready_timeout: float = 180.0,
    progress: Progress = print,
) -> dict[str, Any]:
    if set(modes) - {"non_stream", "stream"} or not modes:
        raise ValueError("modes must be among non_stream, stream")
    generation_ms = latency_ms + tokens * token_interval_ms
    cand_timeout_ms = candidate_timeout_ms or 2 * generation_ms
    out: dict[str, Any] = {
        "config": {
            "k": k,
            "requests": requests,
            "warmup": warmup,
            "stub_latency_ms": latency_ms,
            "stub_tokens": tokens,
            "stub_token_interval_ms": token_interval_ms,
            "generation_ms": generation_ms,
            "candidate_timeout_ms": cand_timeout_ms,
            "scorer": scorer,
            "modes": list(modes),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": {},
    }
    env = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="steer-bench-rps-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        try:
            stub_port = free_port()
            progress(
                f"starting the stub on :{stub_port} ({latency_ms:g} ms + {tokens} tokens x {token_interval_ms:g} ms)"
            )
            cmd = [sys.executable, "-m", "steer.bench.rps", "--serve-stub", "--port", str(stub_port)]
            cmd += ["--latency-ms", str(latency_ms), "--tokens", str(tokens)]
            cmd += ["--token-interval-ms", str(token_interval_ms)]
            stub = procs.start("stub", cmd, stub_port, env)
            procs.wait_ready(stub, "/v1/models", ready_timeout)
            port = free_port()
            cfg = write_config(workdir, port, f"http://127.0.0.1:{stub_port}/v1", k, cand_timeout_ms / 1000, scorer)
            progress(f"starting steer on :{port}")
            steer = procs.start("steer", [sys.executable, "-m", "steer", "serve", "--config", str(cfg)], port, env)
            took = procs.wait_ready(steer, "/readyz", ready_timeout)
            progress(f"steer ready after {took:.1f}s")
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            for row in ROWS:
                res = out["rows"][row] = {}
                for mode in modes:
                    progress(f"{row:<14} {mode:<10} {warmup} warm-up + {requests} requests ...")
                    m = res[mode] = measure(url, row, mode == "stream", requests, warmup)
                    line = f"{row:<14} {mode:<10} wall median {_f(m['wall']['median_ms'])} ms"
                    if mode == "stream":
                        line += f"  first chunk median {_f(m['first_chunk']['median_ms'])} ms"
                    progress(line + f"  errors {m['errors']}")
        finally:
            progress("stopping the servers")
            procs.close()
    add_ratios(out)
    out["verdicts"] = verdicts(out)
    return out


def add_ratios(out: dict[str, Any]) -> None:
    """``x_single``: this row's median over the single completion's, same mode, same run."""
    rows = out["rows"]
    for mode in out["config"]["modes"]:
        base = rows.get("single", {}).get(mode, {}).get("wall", {}).get("median_ms")
        base_first = rows.get("single", {}).get(mode, {}).get("first_chunk", {}).get("median_ms")
        for res in rows.values():
            m = res.get(mode)
            if not isinstance(m, dict):
                continue
            med = m["wall"]["median_ms"]
            m["x_single"] = round(med / base, 3) if med is not None and base else None
            if "first_chunk" in m:
                f = m["first_chunk"]["median_ms"]
                m["first_chunk_x_single"] = round(f / base_first, 3) if f is not None and base_first else None


def verdicts(out: dict[str, Any]) -> list[dict[str, Any]]:
    res = []
    rows = {"rps": "", "rps-1-failing": ", one candidate failing", "rps-1-timeout": ", one candidate timing out"}
    for (row, case), mode in itertools.product(rows.items(), out["config"]["modes"]):
        measured = out["rows"].get(row, {}).get(mode, {}).get("x_single")
        label = ("non-streaming" if mode == "non_stream" else "streaming, whole answer") + case
        result = "SKIP" if measured is None else "PASS" if measured <= MAX_RATIO else "MISS"
        res.append(
            {
                "name": f"RPS k={out['config']['k']} median wall time vs one completion ({label})",
                "measured": measured,
                "op": "<=",
                "limit": MAX_RATIO,
                "unit": "x",
                "result": result,
            }
        )
    return res


# ---------------------------------------------------------------------------------------------
# output


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_table(out: dict[str, Any]) -> str:
    c = out["config"]
    lines = [
        f"steer bench rps: k={c['k']}, stub {c['stub_latency_ms']:g} ms + {c['stub_tokens']} tokens x "
        f"{c['stub_token_interval_ms']:g} ms (one generation {c['generation_ms']:g} ms), candidate timeout "
        f"{c['candidate_timeout_ms']:g} ms, scorer {c['scorer']}, {c['requests']} sequential requests per row, "
        f"{c['cpu_count']} CPUs",
        "",
    ]
    head = (
        f"{'row':<14} {'mode':<10} {'wall p50':>9} {'p90':>9} {'x single':>8} "
        f"{'1st chunk p50':>13} {'x single':>8} {'errors':>6}"
    )
    lines += [head, "-" * len(head)]
    for row, res in out["rows"].items():
        for mode in c["modes"]:
            m = res.get(mode)
            if not isinstance(m, dict):
                continue
            fc = m.get("first_chunk", {})
            lines.append(
                f"{row:<14} {mode:<10} {_f(m['wall']['median_ms']):>9} {_f(m['wall']['p90_ms']):>9} "
                f"{_f(m.get('x_single'), 3):>8} {_f(fc.get('median_ms')):>13} "
                f"{_f(m.get('first_chunk_x_single'), 3):>8} {m['errors']:>6}"
            )
    lines.append("")
    for v in out.get("verdicts", []):
        measured = "-" if v["measured"] is None else f"{v['measured']:g}{v['unit']}"
        lines.append(f"{v['result']:<4}  {v['name']}: {measured} (target {v['op']} {v['limit']:g}{v['unit']})")
    return "\n".join(lines)


def write_png(out: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = out["config"]["modes"]
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.5), squeeze=False)
    rows = list(out["rows"])
    colors = ["#888888", "#2a9d8f", "#e9c46a", "#e76f51"]
    for col, mode in enumerate(modes):
        ax = axes[0][col]
        walls = [out["rows"][r].get(mode, {}).get("wall", {}).get("median_ms") or 0 for r in rows]
        xs = list(range(len(rows)))
        width = 0.4 if mode == "stream" else 0.7
        bars = ax.bar(
            [x - (width / 2 if mode == "stream" else 0) for x in xs], walls, width, color=colors, label="wall"
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        if mode == "stream":
            firsts = [out["rows"][r].get(mode, {}).get("first_chunk", {}).get("median_ms") or 0 for r in rows]
            fb = ax.bar([x + width / 2 for x in xs], firsts, width, color=colors, alpha=0.45, hatch="//")
            ax.bar_label(fb, fmt="%.0f", fontsize=8)
            fb.set_label("first chunk")
        base = walls[0] if walls else 0
        if base:
            ax.axhline(base * MAX_RATIO, color="black", linestyle="--", linewidth=0.8, label=f"{MAX_RATIO}x single")
        ax.set_xticks(xs, rows, fontsize=8)
        ax.set_ylabel("median ms")
        ax.set_title(mode.replace("_", "-"))
        ax.legend(fontsize=7)
    c = out["config"]
    fig.suptitle(
        f"steer bench rps: k={c['k']}, one generation {c['generation_ms']:g} ms, candidate timeout "
        f"{c['candidate_timeout_ms']:g} ms"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    modes = tuple(m.strip().replace("-", "_") for m in args.modes.split(",") if m.strip())
    return run_cli(
        "rps",
        args,
        lambda progress: run_benchmark(
            k=args.k,
            requests=args.requests,
            warmup=args.warmup,
            latency_ms=args.latency_ms,
            tokens=args.tokens,
            token_interval_ms=args.token_interval_ms,
            candidate_timeout_ms=args.candidate_timeout_ms,
            scorer=args.scorer,
            modes=modes,
            ready_timeout=args.ready_timeout,
            progress=progress,
        ),
        format_table,
        write_png,
    )


if __name__ == "__main__":
    serve_stub()

"""``steer bench overhead``: what steer adds on top of an upstream, next to LiteLLM's proxy, in one run.

One stub upstream (fixed latency) serves every target: by default the lean one
(:mod:`steer.bench.lean_stub`, a few microseconds of CPU per answer, so that on a small machine the
cores go to the proxies measured), with ``--stub full`` the tests' Starlette stub
(:mod:`steer.testing.stub`). Each target gets the same closed-loop load
(N clients, a warm-up, then a measured window) from a driver process of its own
(:mod:`steer.bench.load`), non-streaming and streaming. With ``--rounds`` R every target and mode
is measured R times, in turn (direct, fast, ..., direct, fast, ...), so a drift of the shared
machine falls on all of them; each ``added`` figure is taken within its round, and the table shows
the median of the rounds (every round is in the JSON, its added figures printed under the table):

* ``direct``        the stub itself: the baseline every ``added`` figure is measured against;
* ``fast``          steer's fast path (``backend: openai``, passthrough policy), a steer of its own;
* ``fast-workers2`` the same steer with ``--workers 2`` (two processes on one port): its req/s is
                    compared with ``fast``'s in the same run;
* ``min-proxy``     a reference, not a product: the smallest Starlette + aiohttp forwarder
                    (:mod:`steer.bench.min_proxy`), what any Python proxy of this shape pays here;
* ``via-litellm``   another steer, with ``backend: litellm`` (litellm's ``acompletion`` inside it);
* ``litellm-proxy`` LiteLLM's own proxy (``litellm --config ... --num_workers 1``), when
                    ``litellm[proxy]`` is installed.

Every process this starts (stub, steer, LiteLLM's proxy, drivers) runs in a session of its own
and is stopped on the way out, on error and on Ctrl-C too. The figures depend on the machine:
the servers and the driver share its cores, so CPU spent in a proxy shows up as latency and lost
throughput, which is what this measures. Nothing here hard-codes a result; the targets below are
checked against the figures of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steer.bench.processes import Processes, StartupError, free_port
from steer.bench.report import run_cli

TARGETS = ("direct", "fast", "fast-workers2", "min-proxy", "via-litellm", "litellm-proxy")
MODES = ("non_stream", "stream")
PROMPT = "Say hello in one sentence."

# The targets and the brief's bar; checked, never assumed.
MAX_ADDED_P50_MS = 1.5
MAX_ADDED_P99_MS = 5.0
MAX_ADDED_TTFC_MS = 2.0
MIN_RPS_VS_LITELLM_PROXY = 2.0
MIN_RPS_VS_DIRECT = 0.8
MIN_RPS_WORKERS2_VS_FAST = 1.0  # issue 17: two workers serve more fast-path requests per second than one

Progress = Callable[[str], None]
STUBS = {"lean": "steer.bench.lean_stub", "full": "steer.testing.stub"}  # --stub: the module run as the upstream


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "steer's added latency and throughput next to a direct upstream and LiteLLM's proxy"
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per target and mode (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each window (default 2)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="the stub upstream's latency (default 20)")
    p.add_argument("--tokens", type=int, default=16, help="tokens per stub answer (default 16)")
    p.add_argument(
        "--stub",
        choices=tuple(STUBS),
        default="lean",
        help="the upstream every target shares: lean (steer.bench.lean_stub, default) or full (steer.testing.stub)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measured rounds, each running every target and mode in turn; figures are their medians (default 3)",
    )
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {', '.join(TARGETS)} (direct is always run)",
    )
    p.add_argument("--modes", default=",".join(MODES), help="non_stream, stream or both (default both)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--png", metavar="PATH", help="write a bar chart (matplotlib)")
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for each server to come up (default 180)",
    )


def litellm_proxy_available() -> bool:
    """True when ``litellm.proxy`` and its server's dependencies import (checked in a child process:
    importing it here would take seconds and pull litellm into the benchmark's own process)."""
    if importlib.util.find_spec("litellm") is None:
        return False
    code = "import litellm.proxy.proxy_server"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def _litellm_cli() -> list[str]:
    exe = Path(sys.executable).with_name("litellm")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("litellm")
    if found:
        return [found]
    return [sys.executable, "-c", "from litellm import run_server; run_server()"]


# ---------------------------------------------------------------------------------------------
# configuration files


STEER_WORKERS = {"fast-workers2": 2}  # `steer serve --workers N` targets (others: one process)
STEER_MODELS: dict[str, dict[str, Any]] = {  # each steer target runs as a process of its own, as deployed
    "fast": {"model": "stub", "backend": "openai"},
    "fast-workers2": {"model": "stub", "backend": "openai"},
    "via-litellm": {"model": "openai/stub", "backend": "litellm", "api_key": "dummy"},
}


def write_steer_config(workdir: Path, port: int, stub_base: str, target: str) -> Path:
    """A steer serving one model, ``target``, on the stub, under the passthrough policy."""
    policies = workdir / "policies"
    policies.mkdir(parents=True)
    (policies / "default.yaml").write_text("name: default\nextends: none\nstages: {}\n")
    cfg = workdir / "steer.yaml"
    cfg.write_text(
        json.dumps(
            {  # JSON is YAML
                "host": "127.0.0.1",
                "port": port,
                "database": str(workdir / "steer.db"),
                "policies": str(policies),
                "log_level": "warning",
                "models": [{"name": target, **STEER_MODELS[target], "api_base": stub_base}],
            },
            indent=2,
        )
    )
    return cfg


def write_litellm_config(workdir: Path, stub_base: str) -> tuple[Path, Path]:
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "stub",
                        "litellm_params": {"model": "openai/stub", "api_base": stub_base, "api_key": "dummy"},
                    }
                ],
                # steer runs with no API keys on loopback; LiteLLM is compared the same way (no master key,
                # no database) rather than paying for key checks steer does not do here.
                "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
                "litellm_settings": {"set_verbose": False},
            },
            indent=2,
        )
    )
    log_cfg = workdir / "litellm-logging.json"
    log_cfg.write_text(
        json.dumps(
            {  # no access log: steer runs without one too
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
                "handlers": {
                    "err": {
                        "class": "logging.StreamHandler",
                        "formatter": "plain",
                        "stream": "ext://sys.stderr",
                    }
                },
                "loggers": {
                    "uvicorn": {"handlers": ["err"], "level": "WARNING", "propagate": False},
                    "uvicorn.error": {"handlers": ["err"], "level": "WARNING", "propagate": False},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                },
            }
        )
    )
    return cfg, log_cfg


# ---------------------------------------------------------------------------------------------
# the run


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    model: str
    server: str  # the process whose CPU time is charged to this target


def _body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def prime(target: Target, stream: bool, timeout: float = 120.0) -> str | None:
    """One request before the load (e.g. steer imports litellm on first use); an error or None."""
    req = urllib.request.Request(
        target.url,
        data=_body(target.model, stream),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:300].decode('utf-8', 'replace')}"
    except (OSError, urllib.error.URLError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if stream and b"data:" not in data:
        return f"no data: event in the stream: {data[:200]!r}"
    if not stream and b'"choices"' not in data:
        return f"no choices in the answer: {data[:200]!r}"
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU of a process and its descendants (psutil when installed)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total
    except psutil.Error:
        return None


def drive(
    procs: Processes,
    target: Target,
    stream: bool,
    clients: int,
    duration: float,
    warmup: float,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Run the load driver in a process of its own against one target; its summary."""
    cmd = [
        sys.executable,
        "-m",
        "steer.bench.load",
        "--url",
        target.url,
        "--body",
        _body(target.model, stream).decode(),
        "--clients",
        str(clients),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--timeout",
        str(timeout),
    ]
    if stream:
        cmd.append("--stream")
    cmd.append("--mark")
    watched = {name: s.proc.pid for name, s in procs.servers.items()}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    procs.others.append(proc)
    watched["driver"] = proc.pid
    cpu0: dict[str, float | None] = {}
    cpu1: dict[str, float | None] = {}
    t0 = t1 = 0.0
    deadline = time.monotonic() + warmup + duration + timeout + 60
    try:
        assert proc.stderr is not None
        for raw in proc.stderr:  # the driver marks its measured window on stderr
            line = raw.strip()
            if line == b"window-start":
                cpu0, t0 = {n: _cpu_seconds(pid) for n, pid in watched.items()}, time.monotonic()
            elif line == b"window-end":
                cpu1, t1 = {n: _cpu_seconds(pid) for n, pid in watched.items()}, time.monotonic()
                break
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        procs.stop(proc)
        procs.others.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"load driver failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    wall = t1 - t0
    cpu: dict[str, float | None] = {}
    for name in watched:
        a, b = cpu0.get(name), cpu1.get(name)
        cpu[name] = round((b - a) / wall, 3) if a is not None and b is not None and wall > 0 else None
    result["cpu_cores"] = cpu  # average cores busy per process over the measured window
    own = cpu.get(target.server)
    if own is not None and result["requests"]:
        result["server_cpu_us_per_request"] = round(own * wall / result["requests"] * 1e6, 1)
    return result


def _added(value: float | None, base: float | None) -> float | None:
    if value is None or base is None:
        return None
    return round(value - base, 3)


def add_deltas(results: dict[str, Any]) -> None:
    """``added_*`` = this target's figure minus direct's, same run, same mode."""
    direct = results.get("direct", {})
    for res in results.values():
        for mode in MODES:
            m = res.get(mode)
            base = direct.get(mode)
            if not isinstance(m, dict) or not isinstance(base, dict):
                continue
            m["added_p50_ms"] = _added(m.get("p50_ms"), base.get("p50_ms"))
            m["added_p99_ms"] = _added(m.get("p99_ms"), base.get("p99_ms"))
            if mode == "stream":
                m["added_ttfc_p50_ms"] = _added(m.get("ttfc_p50_ms"), base.get("ttfc_p50_ms"))
                m["added_ttfc_p99_ms"] = _added(m.get("ttfc_p99_ms"), base.get("ttfc_p99_ms"))
            rps, base_rps = m.get("requests_per_s"), base.get("requests_per_s")
            m["rps_vs_direct"] = round(rps / base_rps, 3) if rps is not None and base_rps else None


_SUMMED = ("requests", "sent", "errors")


def combine_rounds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One target and mode over its rounds: counts summed, every other figure the median of the
    rounds (``added_*`` included: each was taken against direct in its own round); ``rounds`` keeps
    every round as measured."""
    if len(rows) == 1:
        return rows[0]
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r.get(key) for r in rows]
        if key in _SUMMED:
            out[key] = sum(int(v or 0) for v in values)
        elif key == "error_samples":
            out[key] = [e for v in values for e in (v or [])][:5]
        elif key == "cpu_cores":
            names = rows[0][key]
            out[key] = {n: _median([r[key].get(n) for r in rows]) for n in names}
        elif all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
            out[key] = _median(values)
        else:
            out[key] = values[0]
    out["rounds"] = rows
    return out


def _median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    def get(target: str, mode: str, key: str) -> float | None:
        m = results.get(target, {}).get(mode)
        return m.get(key) if isinstance(m, dict) else None

    def check(name: str, measured: float | None, op: str, limit: float, unit: str, why: str = "") -> dict[str, Any]:
        if measured is None:
            result = "SKIP"
        elif op == "<=":
            result = "PASS" if measured <= limit else "MISS"
        elif op == ">":
            result = "PASS" if measured > limit else "MISS"
        else:
            result = "PASS" if measured >= limit else "MISS"
        return {
            "name": name,
            "measured": measured,
            "op": op,
            "limit": limit,
            "unit": unit,
            "result": result,
            "note": why,
        }

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    out = [
        check(
            "fast path added median latency (non-streaming)",
            get("fast", "non_stream", "added_p50_ms"),
            "<=",
            MAX_ADDED_P50_MS,
            "ms",
        ),
        check(
            "fast path added p99 latency (non-streaming)",
            get("fast", "non_stream", "added_p99_ms"),
            "<=",
            MAX_ADDED_P99_MS,
            "ms",
        ),
        check(
            "fast path added median time to first chunk (streaming)",
            get("fast", "stream", "added_ttfc_p50_ms"),
            "<=",
            MAX_ADDED_TTFC_MS,
            "ms",
        ),
    ]
    for mode, label in (("non_stream", "non-streaming"), ("stream", "streaming")):
        lp = results.get("litellm-proxy", {})
        note = lp.get("status", "") if lp.get("status") not in (None, "ok") else ""
        out.append(
            check(
                f"steer fast path req/s vs LiteLLM proxy ({label})",
                ratio(get("fast", mode, "requests_per_s"), get("litellm-proxy", mode, "requests_per_s")),
                ">=",
                MIN_RPS_VS_LITELLM_PROXY,
                "x",
                note,
            )
        )
    for mode, label in (("non_stream", "non-streaming"), ("stream", "streaming")):
        out.append(
            check(
                f"fast path req/s, --workers 2 vs 1 worker ({label})",
                ratio(get("fast-workers2", mode, "requests_per_s"), get("fast", mode, "requests_per_s")),
                ">",
                MIN_RPS_WORKERS2_VS_FAST,
                "x",
            )
        )
    for mode, label in (("non_stream", "non-streaming"), ("stream", "streaming")):
        out.append(
            check(
                f"fast path req/s vs direct ({label})",
                get("fast", mode, "rps_vs_direct"),
                ">=",
                MIN_RPS_VS_DIRECT,
                "x",
            )
        )
    return out


def run_benchmark(
    *,
    clients: int = 32,
    duration: float = 10.0,
    warmup: float = 2.0,
    latency_ms: float = 20.0,
    tokens: int = 16,
    stub: str = "lean",
    rounds: int = 1,
    targets: tuple[str, ...] = TARGETS,
    modes: tuple[str, ...] = MODES,
    ready_timeout: float = 180.0,
    progress: Progress = print,
) -> dict[str, Any]:
    """The whole benchmark; the JSON-able results. Every process started here is stopped here."""
    if rounds < 1:
        raise ValueError("--rounds must be at least 1")
    if stub not in STUBS:
        raise ValueError(f"unknown stub {stub!r} (known: {', '.join(STUBS)})")
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown targets: {', '.join(sorted(unknown))} (known: {', '.join(TARGETS)})")
    bad_modes = set(modes) - set(MODES)
    if bad_modes or not modes:
        raise ValueError(f"modes must be among {', '.join(MODES)}")
    targets = tuple(t for t in TARGETS if t in targets or t == "direct")
    results: dict[str, Any] = {name: {"status": "pending"} for name in targets}
    out: dict[str, Any] = {
        "config": {
            "clients": clients,
            "duration_s": duration,
            "warmup_s": warmup,
            "stub_latency_ms": latency_ms,
            "stub_tokens": tokens,
            "stub": STUBS[stub],
            "rounds": rounds,
            "targets": list(targets),
            "modes": list(modes),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "driver": "steer.bench.load (asyncio + httptools, one keep-alive connection per client)",
        },
        "targets": results,
    }
    with tempfile.TemporaryDirectory(prefix="steer-bench-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        try:
            _run(
                procs,
                workdir,
                out,
                results,
                clients,
                duration,
                warmup,
                latency_ms,
                tokens,
                stub,
                rounds,
                targets,
                modes,
                ready_timeout,
                progress,
            )
        finally:
            progress("stopping the servers")
            procs.close()
    out["verdicts"] = verdicts(results)
    out["errors"] = sum(
        int(r.get(m, {}).get("errors") or 0) for r in results.values() for m in MODES if isinstance(r.get(m), dict)
    )
    return out


def _run(
    procs: Processes,
    workdir: Path,
    out: dict[str, Any],
    results: dict[str, Any],
    clients: int,
    duration: float,
    warmup: float,
    latency_ms: float,
    tokens: int,
    stub_kind: str,
    rounds: int,
    targets: tuple[str, ...],
    modes: tuple[str, ...],
    ready_timeout: float,
    progress: Progress,
) -> None:
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    }
    stub_port = free_port()
    stub_base = f"http://127.0.0.1:{stub_port}/v1"
    progress(f"starting the stub upstream ({STUBS[stub_kind]}) on :{stub_port} ({latency_ms:g} ms, {tokens} tokens)")
    stub = procs.start(
        "stub",
        [
            sys.executable,
            "-m",
            STUBS[stub_kind],
            "--port",
            str(stub_port),
            "--latency-ms",
            str(latency_ms),
            "--tokens",
            str(tokens),
        ],
        stub_port,
        env,
    )
    procs.wait_ready(stub, "/v1/models", ready_timeout)
    plan: list[Target] = [Target("direct", f"{stub_base}/chat/completions", "stub", "stub")]

    for name in TARGETS:
        if name not in targets:
            continue
        if name in STEER_MODELS:
            port = free_port()
            cfg = write_steer_config(workdir / name, port, stub_base, name)
            progress(f"starting steer for {name} on :{port}")
            cmd = [sys.executable, "-m", "steer", "serve", "--config", str(cfg)]
            if name in STEER_WORKERS:
                cmd += ["--workers", str(STEER_WORKERS[name])]
            steer = procs.start(name, cmd, port, env)
            took = procs.wait_ready(steer, "/readyz", ready_timeout)
            progress(f"steer for {name} ready after {took:.1f}s")
            plan.append(Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", name, name))
        elif name == "min-proxy":
            port = free_port()
            progress(f"starting the minimal reference proxy on :{port}")
            cmd = [sys.executable, "-m", "steer.bench.min_proxy", "--upstream", stub_base, "--port", str(port)]
            procs.wait_ready(procs.start(name, cmd, port, env), "/healthz", ready_timeout)
            plan.append(Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", "stub", name))

    if "litellm-proxy" in targets:
        progress("checking for LiteLLM's proxy (litellm[proxy])")
        if not litellm_proxy_available():
            results["litellm-proxy"] = {"status": "not installed"}
            progress("LiteLLM proxy: not installed (pip install 'litellm[proxy]')")
        else:
            port = free_port()
            cfg, log_cfg = write_litellm_config(workdir, stub_base)
            progress(f"starting LiteLLM's proxy on :{port} (1 worker)")
            lenv = {**env, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_ADMIN_UI": "True"}
            lp = procs.start(
                "litellm-proxy",
                [
                    *_litellm_cli(),
                    "--config",
                    str(cfg),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--num_workers",
                    "1",
                    "--log_config",
                    str(log_cfg),
                ],
                port,
                lenv,
            )
            try:
                took = procs.wait_ready(lp, "/health/readiness", ready_timeout)
            except StartupError as exc:
                results["litellm-proxy"] = {"status": f"failed to start: {str(exc)[:2000]}"}
                progress(f"LiteLLM proxy failed to start; skipped:\n{exc}")
                Processes.stop(lp.proc)
            else:
                progress(f"LiteLLM proxy ready after {took:.1f}s")
                plan.append(
                    Target(
                        "litellm-proxy",
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        "stub",
                        "litellm-proxy",
                    )
                )

    for target in plan:
        results[target.name] = {"status": "ok", "url": target.url, "model": target.model}
    measured: list[dict[str, Any]] = []  # per round: {target: {mode: figures}}
    for r in range(rounds):
        this: dict[str, Any] = {}
        for target in plan:
            res = results[target.name]
            for mode in modes:
                stream = mode == "stream"
                if isinstance(res.get(mode), dict):  # its first request failed in an earlier round
                    continue
                err = prime(target, stream)
                if err:
                    res[mode] = {"errors": 1, "error_samples": [f"first request failed: {err}"]}
                    res["status"] = "error"
                    progress(f"{target.name:<14} {mode:<10} first request failed: {err}")
                    continue
                label = f"{target.name:<14} {mode:<10}" + (f" round {r + 1}/{rounds}" if rounds > 1 else "")
                progress(f"{label} {clients} clients, {warmup:g}s warm-up + {duration:g}s ...")
                m = this.setdefault(target.name, {})[mode] = drive(procs, target, stream, clients, duration, warmup)
                line = f"{label} {m['requests_per_s']:>8.1f} req/s  p50 {_f(m['p50_ms'])} ms  p99 {_f(m['p99_ms'])} ms"
                if stream:
                    line += f"  ttfc p50 {_f(m.get('ttfc_p50_ms'))} ms"
                line += f"  errors {m['errors']}"
                progress(line)
                if m["errors"]:
                    progress(f"  errors: {m['error_samples']}")
        add_deltas(this)
        measured.append(this)
    for name, res in results.items():
        for mode in modes:
            rows = [this[name][mode] for this in measured if mode in this.get(name, {})]
            if rows:
                res[mode] = combine_rounds(rows)


# ---------------------------------------------------------------------------------------------
# output


def _f(v: float | None, digits: int = 2, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def format_table(out: dict[str, Any]) -> str:
    c = out["config"]
    lines = [
        f"steer bench overhead: stub {c.get('stub', STUBS['full'])}, latency {c['stub_latency_ms']:g} ms, "
        f"{c['stub_tokens']} tokens, {c['clients']} clients, "
        f"{c['warmup_s']:g}s warm-up + {c['duration_s']:g}s per row, "
        f"{c['cpu_count']} CPUs",
        "added = this row minus direct, same mode, same round; cpu = server cores busy during the row "
        "(us/req: server CPU per request), drv cpu = the load driver's cores"
        + (f"; every figure the median of {c['rounds']} rounds" if c.get("rounds", 1) > 1 else ""),
        "",
    ]
    head = (
        f"{'target':<14} {'mode':<10} {'req/s':>8} {'x direct':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50':>7} {'+p99':>7} {'ttfc p50':>8} {'ttfc p99':>8} {'+ttfc50':>7} {'+ttfc99':>7} "
        f"{'cpu':>5} {'us/req':>7} {'drv cpu':>7} {'errors':>6}"
    )
    lines += [head, "-" * len(head)]
    for name, res in out["targets"].items():
        status = res.get("status")
        if status not in ("ok", "error"):
            lines.append(f"{name:<14} {status}")
            continue
        for mode in out["config"]["modes"]:
            m = res.get(mode)
            if not isinstance(m, dict):
                continue
            if "requests_per_s" not in m:
                lines.append(f"{name:<14} {mode:<10} {'; '.join(m.get('error_samples', []))}")
                continue
            srv = m.get("cpu_cores", {}).get("stub" if name == "direct" else name)
            lines.append(
                f"{name:<14} {mode:<10} {m['requests_per_s']:>8.1f} {_f(m.get('rps_vs_direct'), 3):>8} "
                f"{_f(m['p50_ms']):>8} {_f(m['p99_ms']):>8} {_f(m.get('added_p50_ms'), signed=True):>7} "
                f"{_f(m.get('added_p99_ms'), signed=True):>7} {_f(m.get('ttfc_p50_ms')):>8} "
                f"{_f(m.get('ttfc_p99_ms')):>8} {_f(m.get('added_ttfc_p50_ms'), signed=True):>7} "
                f"{_f(m.get('added_ttfc_p99_ms'), signed=True):>7} {_f(srv):>5} "
                f"{_f(m.get('server_cpu_us_per_request'), 0):>7} "
                f"{_f(m.get('cpu_cores', {}).get('driver')):>7} "
                f"{m.get('errors', 0):>6}"
            )
    lines.append("")
    for name, res in out["targets"].items():
        for mode in out["config"]["modes"]:
            m = res.get(mode)
            rounds = m.get("rounds") if isinstance(m, dict) and name != "direct" else None
            if rounds:
                each = ", ".join(
                    f"{_f(x.get('added_p50_ms'), signed=True)} / {_f(x.get('added_p99_ms'), signed=True)}"
                    for x in rounds
                )
                lines.append(f"{name} {mode}, each round (+p50 / +p99 ms): {each}")
    if any("each round" in line for line in lines):
        lines.append("")
    for v in out.get("verdicts", []):
        measured = "-" if v["measured"] is None else f"{v['measured']:g} {v['unit']}"
        why = f" ({v['note']})" if v.get("note") else ""
        lines.append(f"{v['result']:<4}  {v['name']}: {measured} (target {v['op']} {v['limit']:g} {v['unit']}){why}")
    errors = out.get("errors", 0)
    lines.append(f"errors: {errors}" + ("" if not errors else "  <- see error_samples in the JSON"))
    return "\n".join(lines)


COLORS = {
    "direct": "#888888",
    "fast": "#2a9d8f",
    "min-proxy": "#8ab17d",
    "via-litellm": "#e9c46a",
    "litellm-proxy": "#e76f51",
}


def write_png(out: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in out["targets"].items() if r.get("status") in ("ok", "error")]
    modes = out["config"]["modes"]
    fig, axes = plt.subplots(len(modes), 2, figsize=(13, 4.2 * len(modes)), squeeze=False)
    for row, mode in enumerate(modes):
        ms = [out["targets"][n].get(mode) or {} for n in names]
        ax = axes[row][0]
        rps = [m.get("requests_per_s") or 0 for m in ms]
        bars = ax.bar(names, rps, color=[COLORS[n] for n in names])
        ax.bar_label(bars, fmt="%.0f")
        ax.set_title(f"requests/s ({mode.replace('_', '-')}, {out['config']['clients']} clients)")
        ax.set_ylabel("req/s")
        ax = axes[row][1]
        keys = [("added_p50_ms", "added median"), ("added_p99_ms", "added p99")]
        if mode == "stream":
            keys += [("added_ttfc_p50_ms", "added ttfc median"), ("added_ttfc_p99_ms", "added ttfc p99")]
        width = 0.8 / len(keys)
        others = [(n, m) for n, m in zip(names, ms, strict=True) if n != "direct"]
        for k, (key, label) in enumerate(keys):
            xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(others))]
            vals = [m.get(key) or 0 for _, m in others]
            b = ax.bar(xs, vals, width, label=label)
            ax.bar_label(b, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(others)), [n for n, _ in others])
        ax.axhline(0, color="black", linewidth=0.6)
        limit = MAX_ADDED_TTFC_MS if mode == "stream" else MAX_ADDED_P50_MS
        ax.axhline(
            limit,
            color="#2a9d8f",
            linestyle="--",
            linewidth=0.8,
            label=f"fast target: +{limit:g} ms {'ttfc' if mode == 'stream' else 'median'}",
        )
        if mode == "non_stream":
            ax.axhline(
                MAX_ADDED_P99_MS,
                color="#264653",
                linestyle=":",
                linewidth=0.8,
                label=f"fast target: +{MAX_ADDED_P99_MS:g} ms p99",
            )
        ax.set_yscale("symlog", linthresh=2)
        ax.set_title(f"latency added over direct ({mode.replace('_', '-')})")
        ax.set_ylabel("ms (symlog)")
        ax.legend(fontsize=7)
    c = out["config"]
    fig.suptitle(
        f"steer bench overhead: stub {c['stub_latency_ms']:g} ms, {c['stub_tokens']} tokens, "
        f"{c['duration_s']:g}s per row, {c['cpu_count']} CPUs"
        + (f", medians of {c['rounds']} rounds" if c.get("rounds", 1) > 1 else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    modes = tuple(m.strip().replace("-", "_") for m in args.modes.split(",") if m.strip())
    return run_cli(
        "overhead",
        args,
        lambda progress: run_benchmark(
            clients=args.clients,
            duration=args.duration,
            warmup=args.warmup,
            latency_ms=args.latency_ms,
            tokens=args.tokens,
            stub=args.stub,
            rounds=args.rounds,
            targets=targets,
            modes=modes,
            ready_timeout=args.ready_timeout,
            progress=progress,
        ),
        format_table,
        write_png,
    )

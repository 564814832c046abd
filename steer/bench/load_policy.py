"""``steer bench load --policy default``: the product under load, not the proxy.

``--replicas`` (default 2) ``steer serve`` processes share one database under steer's default policy
(``recall`` and ``remember`` on, the rule extractor) in front of the stub upstream. ``--clients``
closed-loop clients, spread over the replicas (client i talks to replica i mod R), send chat
completions for ``--users`` distinct users; about ``--preference-share`` of the requests state a
preference ("I'm allergic to <item>."), each user's item their own, the rest ask a question
(recall runs on every one). Every replica's resident memory is sampled through the run.

Afterwards, once the replicas' background writes have settled, each preference whose request was
answered 200 is looked for in the recall of a question about it, on a replica other than the one it
was stated to (a memory stated on A must come back on B): every one must be recalled.

Targets: zero errors; each replica's RSS grows no more than ``RSS_LIMIT`` from the end of the warm-up
to the end; every stated preference recalled.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

from steer.bench.load_harness import RSS_LIMIT, in_workdir, main, rss, rss_growth, verdict_lines
from steer.bench.processes import Processes
from steer.bench.replicas import start_replicas, start_stub
from steer.bench.report import Progress, percentile

POLICY = (
    "name: default\nextends: none\nstages:\n  recall: {budget_tokens: 600}\n  remember: {extractor: rules}\n"
)
# common allergens and ingredients (general knowledge): each user states one of them as their allergy
ITEMS = ("peanuts", "shellfish", "sesame", "soy", "gluten", "eggs", "mustard", "celery", "lupin", "kiwi",
         "strawberries", "walnuts", "almonds", "cashews", "mango", "avocado", "tomatoes", "garlic", "oats",
         "corn")  # fmt: skip
QUESTIONS = ("What could I cook for dinner tonight?", "Suggest a snack for a long hike.",
             "What should I order at a Thai restaurant?", "Plan a picnic menu for me.")  # fmt: skip


async def _load(
    urls: list[str], a: argparse.Namespace, stated: dict[tuple[str, str], int], stop_at: float, lat: list[float]
) -> tuple[int, int, list[str]]:
    """The clients; (requests, errors, error samples). ``stated``: (user, item) -> replica index, for
    each preference whose request was answered 200."""
    import aiohttp

    rng = random.Random(17)
    users = [f"load-user-{i}" for i in range(a.users)]
    # each user's allergy: one of their own, stated (and restated) by them alone
    items = {u: rng.choice(ITEMS) for u in users}
    counters = {"requests": 0, "errors": 0}
    samples: list[str] = []
    warm_until = time.monotonic() + a.warmup

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        replica = i % len(urls)
        local = random.Random(i)
        mine = users[i :: a.clients] or [users[i % len(users)]]
        while time.monotonic() < stop_at:
            user = local.choice(mine)
            if local.random() < a.preference_share:
                item = items[user]
                content = f"I'm allergic to {item}."
            else:
                item, content = None, local.choice(QUESTIONS)
            body = {"model": "stub", "user": user, "messages": [{"role": "user", "content": content}]}
            t0 = time.perf_counter()
            try:
                async with session.post(urls[replica] + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    ok = r.status == 200
                    why = f"HTTP {r.status}"
            except Exception as exc:  # the error counts; the client goes on
                ok, why = False, f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= warm_until:
                counters["requests"] += 1
                lat.append((time.perf_counter() - t0) * 1000)
            if ok and item is not None:
                stated.setdefault((user, item), replica)
            if not ok:
                counters["errors"] += 1
                if len(samples) < 5:
                    samples.append(why)

    timeout = aiohttp.ClientTimeout(total=a.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(i, session) for i in range(a.clients)))
    return counters["requests"], counters["errors"], samples


async def _check(urls: list[str], stated: dict[tuple[str, str], int]) -> list[str]:
    """The stated preferences a replica other than the one told does not recall (empty: all recalled)."""
    import aiohttp

    missing: list[str] = []
    sem = asyncio.Semaphore(8)
    by_user: dict[str, list[tuple[str, int]]] = {}
    for (user, item), replica in stated.items():
        by_user.setdefault(user, []).append((item, replica))

    async def one(session: aiohttp.ClientSession, user: str, told: list[tuple[str, int]]) -> None:
        other = (told[0][1] + 1) % len(urls)
        body = {"model": "stub", "user": user,
                "messages": [{"role": "user", "content": "Which foods am I allergic to?"}]}  # fmt: skip
        async with sem, session.post(
            urls[other] + "/v1/chat/completions", json=body, headers={"X-Steer-Debug": "1"}
        ) as r:
            out = await r.json()
        recall: dict[str, Any] = next((s for s in out.get("steer", {}).get("stages", []) if s["name"] == "recall"), {})
        text = " ".join(m["text"] for m in recall.get("injected", [])).lower()
        missing.extend(f"{user}: {item}" for item, _ in told if item not in text)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(one(session, u, t) for u, t in by_user.items()))
    return missing


def run_policy_load(a: argparse.Namespace, progress: Progress = print) -> dict[str, Any]:
    return in_workdir("steer-load-policy-", a, _run, progress)


def _run(a: argparse.Namespace, work: Path, procs: Processes, progress: Progress) -> dict[str, Any]:
    stub = start_stub(procs, a.stub_latency_ms, a.tokens)
    names = tuple(chr(ord("A") + i) for i in range(a.replicas))
    ports = start_replicas(procs, work, stub, POLICY, str(work / "steer.db"), names=names, progress=progress)
    urls = [f"http://127.0.0.1:{ports[n]}" for n in names]
    pids = {n: procs.servers[f"steer-{n}"].proc.pid for n in names}
    stated: dict[tuple[str, str], int] = {}
    lat: list[float] = []
    samples: list[tuple[float, dict[str, int | None]]] = []
    t0 = time.monotonic()
    stop_at = t0 + a.warmup + a.duration
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic() - t0, {n: rss(p) for n, p in pids.items()}))
            done.wait(1.0)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    progress(f"load: {a.clients} clients over {a.replicas} replicas, {a.users} users, policy default, "
             f"{a.warmup:.0f}s warm-up, {a.duration:.0f}s measured")  # fmt: skip
    try:
        requests, errors, error_samples = asyncio.run(_load(urls, a, stated, stop_at, lat))
    finally:
        done.set()
        watcher.join()
    progress(f"{requests} requests, {errors} errors; {len(stated)} preferences stated; background writes settle")
    time.sleep(a.settle)
    missing = asyncio.run(_check(urls, stated))
    after = [s for t, s in samples if t >= a.warmup]
    memory = {n: rss_growth([v for s in after if (v := s.get(n))]) for n in names}
    ordered = sorted(lat)
    worst = max((r["growth"] for r in memory.values() if r["growth"] is not None), default=None)
    out: dict[str, Any] = {
        "benchmark": "load --policy default",
        "config": {"clients": a.clients, "replicas": a.replicas, "users": a.users, "duration_s": a.duration,
                   "warmup_s": a.warmup, "preference_share": a.preference_share, "stub_latency_ms": a.stub_latency_ms},
        "requests": requests,
        "requests_per_s": round(requests / a.duration, 1) if a.duration else None,
        "p50_ms": percentile(ordered, 50),
        "p99_ms": percentile(ordered, 99),
        "errors": errors,
        "error_samples": error_samples,
        "preferences_stated": len(stated),
        "users_stating": len({u for u, _ in stated}),
        "preferences_not_recalled": missing[:20],
        "not_recalled": len(missing),
        "rss": memory,
    }  # fmt: skip
    out["verdicts"] = [
        {"target": "zero errors", "measured": errors, "met": errors == 0},
        {"target": f"each replica's RSS growth after warm-up <= {RSS_LIMIT:.0%}", "measured": worst,
         "met": worst is not None and worst <= RSS_LIMIT},
        {"target": "every stated preference recalled on another replica", "measured": f"{len(missing)} missing",
         "met": not missing and bool(stated)},
    ]  # fmt: skip
    return out


def format_table(out: dict[str, Any]) -> str:
    c = out["config"]
    lines = [
        f"steer bench load --policy default: {c['clients']} clients over {c['replicas']} replicas, {c['users']} users, "
        f"{c['duration_s']:.0f}s measured after {c['warmup_s']:.0f}s warm-up",
        f"requests {out['requests']}  req/s {out['requests_per_s']}  p50 {out['p50_ms'] and round(out['p50_ms'], 1)} ms"
        f"  p99 {out['p99_ms'] and round(out['p99_ms'], 1)} ms  errors {out['errors']}",
        f"preferences stated {out['preferences_stated']} (by {out['users_stating']} users), "
        f"not recalled on another replica: {out['not_recalled']}",
    ]
    lines += [f"  error: {s}" for s in out["error_samples"]]
    for name, r in out["rss"].items():
        growth = "-" if r["growth"] is None else f"{r['growth']:+.1%}"
        lines.append(f"replica {name} RSS: {r['mib_after_warmup']} MiB after warm-up, {r['mib_end']} MiB at the end "
                     f"(peak {r['mib_peak']}), growth {growth}")  # fmt: skip
    lines.append("")
    lines += verdict_lines(out)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    return main("load --policy default", args, lambda progress: run_policy_load(args, progress), format_table)

"""Driver of ``scripts/recall_assist_gpu.sh``: model-assisted recall's quality with a capable model.

The PrefEval memory of a heavy user (``all`` memory: every explicit preference of the given
topics, then filler conversations) is written through steer's own write path
(:func:`steer.evals.prefeval_data.run_prefeval`'s ``_write``); then each question is answered
three ways with the ``packed`` recall: offline (MiniLM only), ``expand`` and ``rerank``
(:mod:`steer.methods.memory.assist`), the model served by vLLM and reached through steer's router.
Reported per way: the share of questions whose preference is inside the block within 100, 200,
300 tokens and the budget, how often the model's answer was used, and its latency.

UNTESTED: written on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.extract import RuleExtractor
from retrieval.recall import Recaller
from retrieval.sqlite_store import SqliteFaissStore
from retrieval.writer import MemoryWriter
from steer.evals.prefeval_data import _FORM_DIRS, _topics, _write, budgets
from steer.methods.memory import assist
from steer.server.metrics import Metrics
from steer.settings import load_settings
from steer.storage import open_database
from steer.upstreams.router import Router


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def main(a: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(
        None, models=[{"name": "gen", "model": a.model, "api_base": a.vllm_url, "backend": "openai", "retries": 0}]
    )
    router = Router(settings, Metrics())
    data = Path(a.data)
    names = _topics(data, "explicit", a.topics or None)
    items = {t: json.loads((data / _FORM_DIRS["explicit"] / f"{t}.json").read_text())[: a.limit] for t in names}
    fillers = json.loads((data / "filtered_inter_turns.json").read_text())[: a.filler]
    limits = budgets(a.budget_tokens)
    ways = ("offline", "expand", "rerank")
    hits = {w: {b: 0 for b in limits} for w in ways}
    used = {w: 0 for w in ways}
    latency: dict[str, list[float]] = {w: [] for w in ways}
    n = 0
    sem = asyncio.Semaphore(a.concurrency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteFaissStore(
                open_database(Path(tmp) / "m.db", synchronous="OFF"), SentenceTransformerEmbedder()
            )
            writes = _write(store, MemoryWriter(store, RuleExtractor()), [names], items, fillers, "explicit")
            say(f"memory written: {writes}")
            recaller = Recaller(store, budget_tokens=a.budget_tokens)

            async def one(topic: str, i: int, question: str) -> None:
                nonlocal n
                source = f"{topic}/{i}"
                top = recaller.top("eval", "user0", question, recaller.candidates)
                ranked: dict[str, Any] = {"offline": top}
                async with sem:
                    t = time.perf_counter()
                    query, outcome = await assist.expand(router, "gen", question, a.timeout_s)
                    latency["expand"].append(time.perf_counter() - t)
                    used["expand"] += outcome == "used"
                    ranked["expand"] = recaller.top("eval", "user0", query, recaller.candidates)
                    head = top[: a.candidates]
                    t = time.perf_counter()
                    order, outcome = await assist.rerank(
                        router, "gen", question, [h.memory.text for h in head], a.timeout_s
                    )
                    latency["rerank"].append(time.perf_counter() - t)
                    used["rerank"] += outcome == "used"
                    ranked["rerank"] = [head[j] for j in order] + top[len(head) :]
                used["offline"] += 1
                for way, order_hits in ranked.items():
                    asked = query if way == "expand" else question
                    cands = recaller.rank("eval", "user0", asked, order_hits, ordered=way == "rerank")
                    own = {k for k, h in enumerate(order_hits) if any(c == source for c, _ in h.memory.sources)}
                    for b in limits:
                        lines = recaller.fill(cands, b)
                        hits[way][b] += any(k in own for line in lines for k in line.keys)
                n += 1
                if n % 50 == 0:
                    say(f"{n} questions: " + ", ".join(f"{w} {hits[w][a.budget_tokens] / n:.3f}" for w in ways))

            await asyncio.gather(*(one(t, i, it["question"]) for t in names for i, it in enumerate(items[t])))
            store.close()
    finally:
        await router.aclose()
    return {
        "model": a.model,
        "topics": names,
        "questions": n,
        "budget_tokens": a.budget_tokens,
        "memory": writes,
        "ways": {
            w: {
                "hit_within_tokens": {str(b): round(hits[w][b] / max(n, 1), 4) for b in limits},
                "model_answer_used": round(used[w] / max(n, 1), 4),
                "median_model_s": round(statistics.median(latency[w]), 3) if latency[w] else None,
            }
            for w in ways
        },
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--vllm-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="PrefEval's folder")
    p.add_argument("--topics", nargs="*")
    p.add_argument("--limit", type=int, help="questions per topic (default: all)")
    p.add_argument("--filler", type=int, default=5)
    p.add_argument("--budget-tokens", type=int, default=600)
    p.add_argument("--candidates", type=int, default=20, help="memories shown to the model (rerank)")
    p.add_argument("--timeout-s", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--json", default="recall_assist_gpu.json")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    out = asyncio.run(main(args))
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out["ways"], indent=2))

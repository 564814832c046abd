"""``steer bench rerank``: what reranking costs on this machine.

* the ``features`` scorer on ``--candidates`` answers of about ``--tokens`` tokens each (fresh
  texts for every timing, so the embedder's cache never helps): its parts one after the other
  (the text signals; the embedding part: MiniLM, the first ``--embed-words`` words of each answer,
  0 = all; combining the scores with a user's weights and ordering them), and the whole as the
  rerank stage runs it (``score()``, then the ordering), which is the figure held to the target;
* one feedback update: the online fit alone (K prototypes, 50 stored pairs), and the whole write
  path on a real SQLite file (log the feedback, read the user's pairs, fit, store the user).

Targets (the issue's): scorer + combine <= 20 ms median, one feedback update <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from steer.bench.report import percentile

TARGET_SCORE_MS = 20.0
TARGET_UPDATE_MS = 2.0
_WORDS = (
    "the a of to and in for is on that with as it be this you by are or from at your can which more "
    "travel plan budget hotel museum dinner recipe vegan spicy python function error install package "
    "training running schedule laptop battery screen memory recommend consider however therefore "
    "first second finally option choice price quality review great terrible simple detailed step"
)
VOCAB = _WORDS.split()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "the features scorer on N candidates, and one feedback update"
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--tokens", type=int, default=300, help="about this many tokens per candidate")
    from steer.scorers.features import DEFAULT_EMBED_WORDS

    p.add_argument(
        "--embed-words", type=int, default=DEFAULT_EMBED_WORDS, help="words of each answer embedded (0: all)"
    )
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--k", type=int, default=4, help="prototypes in the prior used for the update")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--png", metavar="PATH")


def _answer(rng: random.Random, tokens: int) -> str:
    words = int(tokens * 0.75)  # about 4 tokens per 3 English words
    lines, line = [], []
    for i in range(words):
        line.append(rng.choice(VOCAB))
        if i % 15 == 14:
            lines.append(("- " if rng.random() < 0.3 else "") + " ".join(line).capitalize() + ".")
            line = []
    return "\n".join([*lines, " ".join(line)])


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


async def _bench_scorer(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    import numpy as np

    from retrieval.embeddings import SentenceTransformerEmbedder
    from steer.fence import render
    from steer.methods.profiles.math import normalise
    from steer.scorers.features import FeatureScorer

    say("loading the embedder")
    embedder = SentenceTransformerEmbedder()
    scorer = FeatureScorer(None, {"embed_words": args.embed_words}, embedder=embedder)
    rng = random.Random(0)
    w = np.random.default_rng(0).normal(size=len(scorer.attributes))
    conversation = [
        {"role": "system", "content": render(["I prefer short answers", "I am vegan", "Use metric units"])},
        {"role": "user", "content": "Can you plan a three-day trip to Rome on a budget?"},
    ]
    await scorer.score(conversation, [_answer(rng, args.tokens) for _ in range(args.candidates)])  # warm-up
    def rank(rows: list[list[float]]) -> None:
        totals = normalise(rows, scorer.attributes, scorer.ranges) @ w
        sorted(range(len(rows)), key=lambda i: (-totals[i], i))

    text_ms, emb_ms, combine_ms, sequential_ms, total_ms = [], [], [], [], []
    for rep in range(args.reps):
        # each timing gets answers of its own: the embedder caches texts it has seen
        cands = [f"{rep}.{i} " + _answer(rng, args.tokens) for i in range(args.candidates)]
        t0 = time.perf_counter()
        text_rows = scorer.text_rows(cands)
        t1 = time.perf_counter()
        emb_rows = await scorer.embedding_rows(conversation, cands)
        t2 = time.perf_counter()
        rank([a + b for a, b in zip(text_rows, emb_rows, strict=True)])
        t3 = time.perf_counter()
        served = [f"{rep}.{i}b " + _answer(rng, args.tokens) for i in range(args.candidates)]
        t4 = time.perf_counter()
        rank(await scorer.score(conversation, served))  # as the rerank stage runs it
        t5 = time.perf_counter()
        text_ms.append((t1 - t0) * 1000)
        emb_ms.append((t2 - t1) * 1000)
        combine_ms.append((t3 - t2) * 1000)
        sequential_ms.append((t3 - t0) * 1000)
        total_ms.append((t5 - t4) * 1000)
        if rep % 10 == 0:
            say(f"  rep {rep + 1}/{args.reps}: {total_ms[-1]:.1f} ms")
    return {
        "text_ms": _median(text_ms),
        "embedding_ms": _median(emb_ms),
        "combine_ms": _median(combine_ms),
        "sequential_ms": _median(sequential_ms),
        "total_ms": _median(total_ms),
        "total_ms_p90": round(percentile(sorted(total_ms), 90) or 0.0, 3),
        "without_embedding_ms": _median([t + c for t, c in zip(text_ms, combine_ms, strict=True)]),
        "samples": total_ms,
    }


def _bench_update(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from steer.methods.profiles.math import Hyper, Prior, UserParams, fit_user, fresh_user
    from steer.storage.database import SqliteDatabase
    from steer.storage.profiles import ProfileStore

    attrs = ("concise", "structured", "code", "simple", "formal", "positive", "relevant", "adherent")
    rng = np.random.default_rng(0)
    members = Hyper().support  # a fitted prior keeps this many users: the update averages over them
    support = np.hstack([rng.dirichlet(np.ones(args.k), members), rng.normal(0, 0.1, (members, len(attrs)))])
    prior = Prior(attrs, rng.normal(size=(args.k, len(attrs))).tolist(), [0.0] * args.k, support=support.tolist())
    deltas = rng.uniform(-1, 1, (Hyper().max_pairs, len(attrs)))

    def fit_times(pairs: int) -> list[float]:
        out = []
        for _ in range(max(200, args.reps)):
            t0 = time.perf_counter()
            fit_user(prior, fresh_user(prior), deltas[:pairs], np.ones(pairs), {}, {"formal": 0.0}, Hyper())
            out.append((time.perf_counter() - t0) * 1000)
        return out

    fit_ms, fit_max_ms = fit_times(50), fit_times(Hyper().max_pairs)
    path_ms = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ProfileStore(SqliteDatabase(Path(tmp) / "bench.db"))
        params: UserParams = fresh_user(prior)
        for i in range(max(100, args.reps)):
            t0 = time.perf_counter()
            store.add_feedback(
                "t", "u", f"c{i}", "choice", {"choice": 0}, "features", attrs, [(deltas[i % 50].tolist(), 1.0)]
            )
            rows = store.pairs("t", "u", "features", attrs, 0, 256)
            x = np.array([d for d, _ in rows])
            params = fit_user(prior, params, x, np.ones(len(rows)), {}, {}, Hyper())
            store.save_user("t", "u", "features", attrs, params)
            path_ms.append((time.perf_counter() - t0) * 1000)
        store.db.close()
    return {
        "fit_ms": _median(fit_ms),
        "fit_max_pairs_ms": _median(fit_max_ms),
        "max_pairs": Hyper().max_pairs,
        "support": members,
        "with_sqlite_ms": _median(path_ms),
        "pairs": 50,
        "k": args.k,
    }


def run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    scorer = asyncio.run(_bench_scorer(args, say))
    update = _bench_update(args)
    result = {
        "candidates": args.candidates,
        "tokens": args.tokens,
        "embed_words": args.embed_words,
        "reps": args.reps,
        "scorer": {k: v for k, v in scorer.items() if k != "samples"},
        "update": update,
        "targets": {
            "score_ms": TARGET_SCORE_MS,
            "update_ms": TARGET_UPDATE_MS,
            "met_score": scorer["total_ms"] <= TARGET_SCORE_MS,
            "met_score_without_embedding": scorer["without_embedding_ms"] <= TARGET_SCORE_MS,
            "met_update": update["fit_ms"] <= TARGET_UPDATE_MS,
            "met_update_max_pairs": update["fit_max_pairs_ms"] <= TARGET_UPDATE_MS,
            "met_update_with_sqlite": update["with_sqlite_ms"] <= TARGET_UPDATE_MS,
        },
    }
    s, u, t = result["scorer"], update, result["targets"]

    def ok(flag: bool) -> str:
        return "met" if flag else "MISSED"

    embed = args.embed_words or "all"
    print(
        f"features scorer, {args.candidates} candidates x ~{args.tokens} tokens (embed {embed} words), "
        f"median of {args.reps}:"
    )
    print(f"  text signals  {s['text_ms']:>8.2f} ms")
    print(f"  embeddings    {s['embedding_ms']:>8.2f} ms")
    print(f"  combine+sort  {s['combine_ms']:>8.2f} ms")
    print(f"  one after the other {s['sequential_ms']:.2f} ms")
    print(
        f"  total, as served (score(), then the ordering) {s['total_ms']:.2f} ms   "
        f"(p90 {s['total_ms_p90']:.2f}; target <= {TARGET_SCORE_MS} ms: {ok(t['met_score'])})"
    )
    print(f"  without embeddings {s['without_embedding_ms']:.2f} ms ({ok(t['met_score_without_embedding'])})")
    print(
        f"feedback update (K={u['k']}, {u['pairs']} pairs): fit {u['fit_ms']:.3f} ms ({ok(t['met_update'])}), "
        f"with SQLite {u['with_sqlite_ms']:.3f} ms ({ok(t['met_update_with_sqlite'])}) "
        f"(target <= {TARGET_UPDATE_MS} ms)"
    )
    print(
        f"  at the most pairs an update reads ({u['max_pairs']}), prior sample of {u['support']} users: "
        f"fit {u['fit_max_pairs_ms']:.3f} ms ({ok(t['met_update_max_pairs'])})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        parts = [
            ("text", s["text_ms"]),
            ("embeddings", s["embedding_ms"]),
            ("combine", s["combine_ms"]),
            ("update fit", u["fit_ms"]),
            ("update+SQLite", u["with_sqlite_ms"]),
        ]
        ax.barh([p for p, _ in parts], [v for _, v in parts])
        ax.axvline(TARGET_SCORE_MS, color="red", linestyle="--", label=f"score target {TARGET_SCORE_MS} ms")
        ax.axvline(TARGET_UPDATE_MS, color="orange", linestyle=":", label=f"update target {TARGET_UPDATE_MS} ms")
        ax.set_xlabel("median ms")
        ax.set_title(f"steer bench rerank: {args.candidates} x ~{args.tokens} tokens")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        plt.close(fig)
    return 0

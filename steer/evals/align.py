"""``steer eval align``: the align stage's aligner on a prompt file, guards and all.

For each prompt: one rewrite through the same :class:`steer.methods.align.aligner.Aligner` the stage uses (cache
off, so every latency is a real call), then the figures: parse rate, guard decisions by reason,
mean semantic similarity and length ratio of the parsed rewrites, aligner latency. With
``--judge``, the target model answers the original request and the rewritten one, and the judge
compares the two answers against the ORIGINAL request in both orders (position bias cancels); the
win rate counts a win as 1, a tie or a split verdict as 0.5.

Prompts come from ``--prompts FILE``, or are PrefEval's explicit-preference questions under
``--data DIR``, read where they lie, never copied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from steer.bench.report import percentile
from steer.evals import prompts as prompt_files

if TYPE_CHECKING:
    from retrieval.embeddings import Embedder
    from steer.methods.align.aligner import AlignConfig
    from steer.upstreams.router import Router

JUDGE_SYSTEM = (
    "You are an impartial judge. Compare two assistant answers to the user's request below and decide "
    "which one serves the user better: correct, helpful, relevant to what was asked, clear. Ignore the "
    "order of the answers and their length as such. Explain briefly, then end with your verdict in "
    'exactly this form: "[[A]]" if A is better, "[[B]]" if B is better, "[[C]]" for a tie.'
)
VERDICT = re.compile(r"\[\[([ABC])\]\]")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompts",
        help="a .json list (strings, or objects with question/prompt/instruction), "
        ".jsonl, or .txt file (one prompt a line); or PrefEval's explicit questions with --data",
    )
    p.add_argument("--data", help="PrefEval's folder: its explicit-preference questions are the prompts")
    p.add_argument("--config", help="steer.yaml naming the models (default: built-in: local/smollm2)")
    p.add_argument("--aligner", default="local/smollm2", help="aligner model name (default: local/smollm2)")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="the aligner was not trained as P-Aligner: add the principle list to its prompt",
    )
    p.add_argument("--mode", choices=["replace", "guidance"], default="replace")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="aligner timeout in s (default 120: measure the model; the stage's default is 2)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other align stage option, e.g. --set min_similarity=0.7 (repeatable)",
    )
    p.add_argument("--judge", help="judge model: compare answers to the rewritten and the original request")
    p.add_argument("--target", help="model that answers, for --judge (default: the settings' default model)")
    p.add_argument("--answer-tokens", type=int, default=256)
    p.add_argument("--limit", type=int, default=20, help="prompts to run (default 20; 0: all)")
    p.add_argument("--json", help="write the figures (and every rewrite) here")
    p.add_argument("--png", help="write a plot of decisions and latency here")


def load_prompts(path: str | None, data: str | None, limit: int) -> list[str]:
    """Prompts from a file, or PrefEval's explicit questions (under ``data``) taken round-robin across topics."""
    return prompt_files.load_prompts(prompt_files.prompt_source(path, data), limit)


def align_config(args: argparse.Namespace) -> AlignConfig:
    from steer.methods.align.aligner import AlignConfig

    options: dict[str, Any] = {}
    for pair in args.set:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value)
    options.update(
        model=args.aligner,
        trained=not args.untrained,
        mode=args.mode,
        rewrite_timeout_s=args.timeout,
        timeout_s=args.timeout * 2 + 60,
        cache=False,
    )
    return AlignConfig.model_validate(options)


def _answer_text(completion: dict[str, Any]) -> str:
    choice = (completion.get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content")
    return content if isinstance(content, str) else ""


async def _answer(router: Router, model: str, messages: list[dict[str, Any]], tokens: int) -> str:
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": tokens}
    return _answer_text(await router.complete(model, body))


async def _verdict(router: Router, judge: str, question: str, a: str, b: str) -> str | None:
    user = (
        f"[User Request]\n{question}\n\n"
        f"[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
    )
    body = {
        "model": judge,
        "messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}],
        "temperature": 0,
        "max_tokens": 512,
    }
    found = VERDICT.findall(_answer_text(await router.complete(judge, body)))
    return found[-1] if found else None


def rewrite_score(first: str | None, second: str | None) -> float:
    """The rewrite's score over both orders: in ``first`` it was B, in ``second`` it was A."""

    def one(verdict: str | None, rewrite_is: str) -> float:
        if verdict is None or verdict == "C":
            return 0.5
        return 1.0 if verdict == rewrite_is else 0.0

    return (one(first, "B") + one(second, "A")) / 2


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "p90": None}
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 3),
        "median": round(statistics.median(ordered), 3),
        "p90": round(percentile(ordered, 90) or 0.0, 3),
    }


async def evaluate(
    prompts: list[str], config: AlignConfig, args: argparse.Namespace, progress: Any = None
) -> dict[str, Any]:
    from steer.methods.align.aligner import Aligner, aligner_prompt, shared_embedder, turn_gate
    from steer.methods.align.stage import apply
    from steer.server.metrics import Metrics
    from steer.settings import load_settings
    from steer.upstreams.router import Router

    settings = load_settings(args.config)
    router = Router(settings, Metrics())
    router.config(config.model)  # unknown model: fail before any work
    target = router.config(args.target).name if args.judge else None
    if args.judge:
        router.config(args.judge)
    loading: asyncio.Task[Embedder] = asyncio.ensure_future(
        asyncio.to_thread(shared_embedder, settings.memory.embedding_model)
    )

    async def embedder() -> Embedder:
        return await loading

    aligner = Aligner(router.complete, embedder, cache=None)
    warm = getattr(router.upstream(config.model), "warmup", None)
    if warm is not None:
        await warm()
    await loading
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        for i, prompt in enumerate(prompts):
            messages = [{"role": "user", "content": prompt}]
            gate = turn_gate(messages, config)
            row: dict[str, Any] = {"prompt": prompt}
            if isinstance(gate, str):
                row.update(decision="skipped", reason=gate)
            else:
                out = await aligner.rewrite(prompt, config, budget_s=config.timeout_s)
                row.update(out.trace(), raw=out.raw)
                if out.rewrite is not None and out.similarity is None:  # a guard stopped before similarity
                    row["similarity"] = round(await aligner.similarity(prompt, out.rewrite), 4)
                if args.judge and target and out.decision == "applied" and out.rewrite is not None:
                    original = await _answer(router, target, messages, args.answer_tokens)
                    aligned = await _answer(router, target, apply(messages, 0, out.rewrite, config), args.answer_tokens)
                    first = await _verdict(router, args.judge, prompt, original, aligned)
                    second = await _verdict(router, args.judge, prompt, aligned, original)
                    row.update(
                        answer_original=original,
                        answer_rewritten=aligned,
                        verdicts=[first, second],
                        win=rewrite_score(first, second),
                    )
            if progress:
                ms = row.get("aligner_ms")
                progress(
                    f"[{i + 1}/{len(prompts)}] {row['decision']:<8} {row['reason']:<14} "
                    + (f"{ms:8.0f} ms" if ms is not None else "")
                )
            rows.append(row)
    finally:
        await router.aclose()
    called = [r for r in rows if r["decision"] != "skipped" and r["reason"] not in ("timeout", "aligner_error")]
    parsed = [r for r in rows if r.get("rewrite") is not None]
    judged = [r["win"] for r in rows if "win" in r]
    reasons = Counter(f"{r['decision']}:{r['reason']}" for r in rows)
    return {
        "aligner": config.model,
        "format": "principles" if not config.trained else "p-aligner",
        "mode": config.mode,
        "prompt_chars": _summary([float(len(p)) for p in prompts]),
        "prompt_example": aligner_prompt(prompts[0], not config.trained) if prompts else "",
        "prompts": len(rows),
        "aligner_calls": len(called),
        "parse_rate": round(len(parsed) / len(called), 3) if called else None,
        "applied": sum(r["decision"] == "applied" for r in rows),
        "decisions": dict(sorted(reasons.items())),
        "similarity": _summary([r["similarity"] for r in parsed if r.get("similarity") is not None]),
        "length_ratio": _summary([r["length_ratio"] for r in parsed if r.get("length_ratio") is not None]),
        "latency_ms": _summary([r["aligner_ms"] for r in rows if r.get("aligner_ms") is not None]),
        "judge": args.judge,
        "target": target,
        "judged": len(judged),
        "win_rate": round(statistics.fmean(judged), 3) if judged else None,
        "seconds": round(time.perf_counter() - t_start, 1),
        "options": config.model_dump(),
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    def fmt(d: dict[str, Any], key: str, digits: int = 3) -> str:
        value = d.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"aligner {result['aligner']} ({result['format']} prompt, {result['mode']}), {result['prompts']} prompts, "
        f"{result['seconds']} s",
        f"{'aligner calls':<24} {result['aligner_calls']}",
        f"{'parse rate':<24} {fmt(result, 'parse_rate')}",
        f"{'applied':<24} {result['applied']}",
        f"{'similarity mean/median':<24} {fmt(result['similarity'], 'mean')} / {fmt(result['similarity'], 'median')}",
        f"{'length ratio mean/median':<24} {fmt(result['length_ratio'], 'mean', 2)} / "
        f"{fmt(result['length_ratio'], 'median', 2)}",
        f"{'latency ms median/p90':<24} {fmt(result['latency_ms'], 'median', 0)} / "
        f"{fmt(result['latency_ms'], 'p90', 0)}",
    ]
    if result["judge"]:
        lines.append(
            f"{'win rate (both orders)':<24} {fmt(result, 'win_rate')}  over {result['judged']} judged, "
            f"judge {result['judge']}, target {result['target']}"
        )
    lines.append("decisions:")
    lines += [f"  {k:<30} {v}" for k, v in result["decisions"].items()]
    return "\n".join(lines)


def write_png(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(result["decisions"])
    left.barh(names, [result["decisions"][n] for n in names])
    left.set_xlabel("prompts")
    left.set_title("decision:reason")
    latencies = [r["aligner_ms"] for r in result["rows"] if r.get("aligner_ms") is not None]
    right.hist(latencies, bins=20)
    right.set_xlabel("aligner latency (ms)")
    right.set_title(f"{result['aligner']}: parse rate {result['parse_rate']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        prompts = load_prompts(args.prompts, args.data, args.limit)
        config = align_config(args)
        result = asyncio.run(
            evaluate(prompts, config, args, progress=lambda line: print(line, file=sys.stderr, flush=True))
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"steer eval align: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from steer.errors import SteerError

        if isinstance(exc, SteerError):
            print(f"steer eval align: {exc.message}", file=sys.stderr)
            return 2
        raise
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.png:
        write_png(result, args.png)
    return 0

"""``steer eval rps``: RPS against best-of-N with the same budget, as in the paper's comparison.

For each target angle t (default 10..45 degrees) the user's direction is v = (cos t, sin t) over
two of the scorer's attributes (``--attributes``; default helpfulness and verbosity when the
scorer has them, else its first two). For every prompt, RPS draws one answer from each of the
k grid neighbours of t (:mod:`steer.methods.rps.geometry`) and best-of-N draws k answers conditioned on t itself;
every answer is scored, each method keeps its candidate with the largest projection v . x
(x: the scores scaled to 0-1 by the scorer's ranges, as the rerank stage does; the raw scores,
as the paper, with ``raw``), and the table
shows, per angle, the mean projected reward of each method and the share of prompts where RPS's
answer scores higher (ties apart).

Prompts: PrefEval's explicit-preference questions under ``--data DIR``
(``explicit_preference/*.json``, field ``question``), read where they lie, never copied; or
``--prompts FILE`` (JSON list of strings or of objects with ``question``/``prompt``, JSONL, or
plain text, one per line). The generator is any model steer serves (``--model``, with
``--config``); the default is the embedded ``local/smollm2``: slow, use ``--limit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from steer.evals.prompts import load_prompts, prompt_source
from steer.methods.rps import geometry as rps
from steer.scorers import Scorer

Complete = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Progress = Callable[[str], None]
DEFAULT_ANGLES = (10, 15, 20, 25, 30, 35, 40, 45)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "RPS vs best-of-N with the same budget: mean projected reward and RPS's win share per angle"
    p.add_argument("--config", help="steer.yaml naming the generator model (default: built-in models)")
    p.add_argument("--model", default=None, help="generator model name (default: the config's default, local/smollm2)")
    p.add_argument("--scorer", default="features", help="scorer name (default features)")
    p.add_argument("--scorer-options", default="{}", help="the scorer's options, as JSON")
    p.add_argument("--attributes", help="the two attributes the angle lives in, comma-separated")
    p.add_argument("--prompts", help="prompt file or folder")
    p.add_argument("--data", help="PrefEval's folder: its explicit-preference questions are the prompts")
    p.add_argument("--limit", type=int, default=10, help="prompts (default 10)")
    p.add_argument("--angles", default=",".join(map(str, DEFAULT_ANGLES)), help="target angles in degrees")
    p.add_argument("--k", type=int, default=rps.DEFAULT_K, help="samples per method and prompt (default 5)")
    p.add_argument("--t-max", type=float, default=rps.DEFAULT_T_MAX, help="neighbourhood radius, degrees")
    p.add_argument("--conditioning", choices=["natural", "dpa"], default="natural")
    p.add_argument("--placement", choices=["before_last_user", "system"], default="before_last_user")
    p.add_argument("--temperature", type=float, default=rps.DEFAULT_TEMPERATURE)
    p.add_argument("--top-p", type=float, default=rps.DEFAULT_TOP_P)
    p.add_argument("--max-tokens", type=int, default=256, help="per candidate (default 256)")
    p.add_argument("--timeout", type=float, default=600.0, help="per candidate request, seconds")
    p.add_argument("--concurrency", type=int, default=4, help="prompts in flight at once (default 4)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--png", help="write a plot here")


# ---------------------------------------------------------------------------------------------
# the comparison


def pick_attributes(scorer: Scorer, wanted: Sequence[str] | None) -> tuple[str, str]:
    attrs = tuple(scorer.attributes)
    if wanted:
        if len(wanted) != 2 or any(a not in attrs for a in wanted):
            raise ValueError(f"--attributes needs two of the scorer's attributes: {', '.join(attrs)}")
        return wanted[0], wanted[1]
    if "helpfulness" in attrs and "verbosity" in attrs:
        return "helpfulness", "verbosity"
    if len(attrs) < 2:
        raise ValueError("the scorer needs at least two attributes")
    return attrs[0], attrs[1]


def _scaled(
    rows: Sequence[Sequence[float]], attrs: Sequence[str], ranges: dict[str, tuple[float, float]]
) -> list[list[float]]:
    """Each attribute scaled to 0-1 by the scorer's range and clipped, as the rerank stage does."""
    out = []
    for row in rows:
        scaled = []
        for a, v in zip(attrs, row, strict=True):
            lo, hi = ranges.get(a, (0.0, 1.0))
            span = hi - lo if hi > lo else 1.0
            scaled.append(min(1.0, max(0.0, (float(v) - lo) / span)))
        out.append(scaled)
    return out


def _texts(outcomes: Sequence[rps.Outcome]) -> list[str]:
    out = []
    for o in outcomes:
        for c in o.completions:
            content = (c["choices"][0].get("message") or {}).get("content")
            out.append(content if isinstance(content, str) else "")
    return out


async def compare_one(
    complete: Complete,
    scorer: Scorer,
    prompt: str,
    model: str | None,
    pair: tuple[str, str],
    angle: float,
    cfg: dict[str, Any],
) -> dict[str, Any]:
    """One prompt at one angle: RPS's and best-of-N's best projected reward."""
    target = rps.from_angle(angle)
    request: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    if model:
        request["model"] = model
    results: dict[str, Any] = {}

    async def draw(method: rps.Mode) -> list[rps.Outcome]:
        planned = rps.plan(pair, target, method, cfg["k"], cfg["t_max"], cfg["conditioning"], use_n=cfg["use_n"])
        bodies = rps.candidate_bodies(
            request, planned, cfg["placement"], cfg["temperature"], cfg["top_p"], cfg["max_tokens"]
        )
        return await rps.generate(complete, bodies, cfg["timeout"])

    drawn_rps, drawn_bon = await asyncio.gather(draw("rps"), draw("best_of_n"))
    drawn = {"rps": drawn_rps, "best_of_n": drawn_bon}
    texts = {m: _texts(o) for m, o in drawn.items()}
    everything = texts["rps"] + texts["best_of_n"]
    if not everything:
        return {"error": "no candidate came back"}
    rows = await scorer.score(request["messages"], everything)
    attrs = tuple(scorer.attributes)
    cols = [attrs.index(pair[0]), attrs.index(pair[1])]
    sub = [[row[c] for c in cols] for row in rows]
    scaled = [list(map(float, r)) for r in sub] if cfg.get("raw") else _scaled(sub, pair, dict(scorer.ranges))
    split = len(texts["rps"])
    for method, part in (("rps", scaled[:split]), ("best_of_n", scaled[split:])):
        if not part:
            results[method] = None
            continue
        best, projected = rps.select(part, target)
        results[method] = round(projected[best], 6)
        results[f"{method}_candidates"] = len(part)
    results["failed"] = sum(o.status != "ok" for os_ in drawn.values() for o in os_)
    return results


async def evaluate(
    complete: Complete,
    scorer: Scorer,
    prompts: Sequence[str],
    model: str | None,
    pair: tuple[str, str],
    angles: Sequence[float],
    cfg: dict[str, Any],
    progress: Progress = print,
) -> dict[str, Any]:
    """Every angle, every prompt; the per-angle table and the per-prompt figures."""
    gate = asyncio.Semaphore(max(1, int(cfg.get("concurrency", 1))))
    t0 = time.perf_counter()
    per_angle: dict[str, Any] = {}
    done, total = 0, len(angles) * len(prompts)

    async def one(angle: float, prompt: str) -> dict[str, Any]:
        nonlocal done
        async with gate:
            res = await compare_one(complete, scorer, prompt, model, pair, angle, cfg)
        done += 1
        if done % max(1, total // 20) == 0 or done == total:
            progress(f"{done}/{total} prompt x angle pairs ({time.perf_counter() - t0:.0f}s)")
        return res

    for angle in angles:
        rows = await asyncio.gather(*(one(angle, p) for p in prompts))
        both = [r for r in rows if r.get("rps") is not None and r.get("best_of_n") is not None]
        n = len(both)
        wins = sum(r["rps"] > r["best_of_n"] + 1e-9 for r in both)
        ties = sum(abs(r["rps"] - r["best_of_n"]) <= 1e-9 for r in both)
        per_angle[str(angle)] = {
            "angle": angle,
            "prompts": n,
            "rps_mean": round(sum(r["rps"] for r in both) / n, 6) if n else None,
            "best_of_n_mean": round(sum(r["best_of_n"] for r in both) / n, 6) if n else None,
            "rps_win_share": round(wins / n, 4) if n else None,
            "tie_share": round(ties / n, 4) if n else None,
            "failed_requests": sum(int(r.get("failed", 0)) for r in rows),
            "per_prompt": rows,
        }
    return {"angles": per_angle, "seconds": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------------------------------------
# output


def table(result: dict[str, Any]) -> str:
    head = f"{'angle':>6} {'prompts':>7} {'RPS mean':>9} {'BoN mean':>9} {'RPS - BoN':>9} {'RPS wins':>8} {'ties':>6}"
    lines = [head, "-" * len(head)]

    def f(v: float | None, d: int = 4) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    for a in result["angles"].values():
        diff = None if a["rps_mean"] is None else a["rps_mean"] - a["best_of_n_mean"]
        lines.append(
            f"{a['angle']:>6g} {a['prompts']:>7} {f(a['rps_mean']):>9} {f(a['best_of_n_mean']):>9} "
            f"{f(diff):>9} {f(a['rps_win_share'], 3):>8} {f(a['tie_share'], 3):>6}"
        )
    return "\n".join(lines)


def write_png(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [a for a in result["angles"].values() if a["rps_mean"] is not None]
    xs = [a["angle"] for a in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(xs, [a["rps_mean"] for a in rows], "o-", label="RPS", color="#2a9d8f")
    left.plot(xs, [a["best_of_n_mean"] for a in rows], "s--", label="best-of-N", color="#e76f51")
    left.set_xlabel("target angle (degrees)")
    left.set_ylabel("mean projected reward v . x")
    left.legend()
    right.bar(xs, [a["rps_win_share"] for a in rows], width=3, color="#2a9d8f")
    right.axhline(0.5, color="black", linestyle="--", linewidth=0.8)
    right.set_ylim(0, 1)
    right.set_xlabel("target angle (degrees)")
    right.set_ylabel("share of prompts where RPS scores higher")
    c = result.get("config", {})
    fig.suptitle(
        f"RPS vs best-of-N (k={c.get('k')}): {c.get('model')} / {c.get('scorer')} on {c.get('attributes')}, "
        f"{c.get('prompts')} prompts"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(result: dict[str, Any], json_path: str | None, png_path: str | None) -> None:
    print(table(result), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
        print(f"wrote {json_path}")
    if png_path:
        write_png(result, png_path)
        print(f"wrote {png_path}")


# ---------------------------------------------------------------------------------------------
# the command


def run(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    try:
        prompts = load_prompts(prompt_source(args.prompts, args.data), args.limit)
        angles = [float(a) for a in args.angles.split(",") if a.strip()]
        if not angles or not all(math.isfinite(a) for a in angles):
            raise ValueError("--angles needs finite numbers, e.g. 10,20,30,45")
        options = json.loads(args.scorer_options)
    except (FileNotFoundError, ValueError) as exc:
        print(f"steer eval rps: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_main(args, prompts, angles, options, progress))
    except (ValueError, KeyError) as exc:
        print(f"steer eval rps: {exc}", file=sys.stderr)
        return 2
    report(result, args.json, args.png)
    return 0


async def _main(
    args: argparse.Namespace, prompts: list[str], angles: list[float], options: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    from steer.scorers import scorers
    from steer.server.services import Services
    from steer.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="steer-eval-rps-") as tmp:
        (Path(tmp) / "default.yaml").write_text("name: default\nextends: none\nstages: {}\n")
        settings = load_settings(args.config, policies=tmp, database=str(Path(tmp) / "steer.db"))
        services = Services(settings)
        try:
            model = services.router.config(args.model).name
            scorer = scorers.get(args.scorer)(services.profiles, options)
            pair = pick_attributes(scorer, args.attributes.split(",") if args.attributes else None)
            cfg = {
                "k": args.k,
                "t_max": args.t_max,
                "conditioning": args.conditioning,
                "placement": args.placement,
                "temperature": args.temperature,
                "top_p": args.top_p,
                "max_tokens": args.max_tokens,
                "timeout": args.timeout,
                "use_n": True,
                "concurrency": args.concurrency,
            }
            progress(
                f"RPS vs best-of-N: {model}, scorer {args.scorer} on {pair[0]}/{pair[1]}, {len(prompts)} prompts, "
                f"angles {', '.join(f'{a:g}' for a in angles)}, k={args.k}"
            )

            async def complete(body: dict[str, Any]) -> dict[str, Any]:
                return await services.router.complete(model, body)

            result = await evaluate(complete, scorer, prompts, model, pair, angles, cfg, progress)
        finally:
            await services.router.aclose()
    result["config"] = {
        **cfg,
        "model": model,
        "scorer": args.scorer,
        "attributes": list(pair),
        "prompts": len(prompts),
        "prompt_source": str(prompt_source(args.prompts, args.data)),
    }
    return result

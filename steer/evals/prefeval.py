"""``steer eval prefeval``: the preference memory on PrefEval, through steer's write path.

The data is read where it lies (``--data``, required: PrefEval's ``benchmark_dataset`` folder), never
copied.

Recall (always): for each recall design, the share of questions whose preference is inside the block
injected within ``--budget-tokens`` (default: the default policy's, 600) and within 100, 200 and 300
tokens, with extraction, false memories and supersession errors (see :mod:`steer.evals.prefeval_data`).

Multiple choice (with ``--generator MODEL``, a model of the settings' ``models``; ``--config`` to
load them, else the defaults with the embedded ``local/smollm2``): for each topic, the user's memory
holds every preference of the topic (``mcq_options/TOPIC.json``, through the rule extractor and the
store, with ``--filler`` filler conversations), then each question is asked with its four
``classification_task_options`` shuffled with a fixed seed (the first option of the file is the one
that respects the preference), the model asked which option to recommend, answering with a letter:

- recall off: the question and the options alone (a new conversation, no memory);
- recall on: the same, after the recall stage's block (:func:`steer.methods.memory.recall.render`) of what
  the recaller brings back within ``--budget-tokens``.

Accuracy with recall on and off, per topic and overall; chance is 0.25.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from typing import Any

from steer.errors import SteerError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="PrefEval's benchmark_dataset folder (required)")
    p.add_argument("--topics", nargs="*", help="topics to run (default: every topic found)")
    p.add_argument("--form", choices=["explicit", "choice", "persona"], default="explicit")
    p.add_argument("--filler", type=int, default=5, help="filler conversations played between (max 24)")
    p.add_argument(
        "--memory",
        choices=["topic", "all"],
        default="topic",
        help="the user's memory also holds every preference of the same topic, or of all topics",
    )
    p.add_argument("--designs", nargs="*", default=None, help="recall designs to compare (default: all)")
    p.add_argument("--limit", type=int, help="items per topic (default: all)")
    p.add_argument("--generator", help="also run the multiple-choice task with this model (e.g. local/smollm2)")
    p.add_argument("--config", help="steer.yaml whose models hold the generator (default: built-in defaults)")
    p.add_argument(
        "--budget-tokens",
        type=int,
        default=600,
        help="recall budget (default 600, the default policy's); figures also within 100, 200, 300",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the options' shuffle (default 0)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--png", help="write a bar plot here")


def table(result: dict[str, Any]) -> str:
    ks = result["ks"]
    limits = list(next(iter(result["designs"].values()))["hit_within_tokens"]) if result["designs"] else []
    head = (
        f"{'design':<8} {'items':>6} "
        + " ".join(f"{'in ' + b:>7}" for b in limits)
        + f" {'tokens':>7} {'mems':>5} "
        + " ".join(f"{'R@' + str(k):>6}" for k in ks)
        + f" {'ms':>6}"
    )
    rows = [head, "-" * len(head)]
    for name, d in result["designs"].items():
        mark = "*" if name == result["default_design"] else ""
        rows.append(
            f"{name + mark:<8} {d['items']:>6} "
            + " ".join(f"{d['hit_within_tokens'][b]:>7.3f}" for b in limits)
            + f" {d['mean_tokens']:>7.1f} {d['mean_memories']:>5.1f} "
            + " ".join(f"{d[f'recall@{k}']:>6.3f}" for k in ks)
            + f" {d['mean_search_ms']:>6.2f}"
        )
    rows.append(
        f"(* default design) extraction {result['extraction']:.3f}, false memories per filler "
        f"{result['false_per_filler']:.3f}, supersession errors {result['supersede_errors']}, "
        f"memories {result['memories']}; tokens counted with {result.get('tokenizer', '?')}"
    )
    return "\n".join(rows)


LETTERS = "ABCD"
MCQ_PROMPT = (
    "{question}\n\nWhich one of these options would you recommend to me?\n{options}\n\n"
    "Answer with the letter of one option only."
)


def shuffled(options: list[str], seed: int) -> tuple[list[str], int]:
    """The options in a fixed pseudo-random order, and where the first (the right one) went."""
    order = list(range(len(options)))
    random.Random(seed).shuffle(order)
    return [options[i] for i in order], order.index(0)


def parse_choice(answer: str, options: list[str]) -> int | None:
    """The option a model's answer picks: a letter (``B``, ``(B)``, ``B.``), else an option's text."""
    m = re.search(r"(?:^|[\s(\[*])([A-D])(?:[\s).\]:*,]|$)", answer.strip())
    if m:
        return LETTERS.index(m.group(1))
    low = answer.lower()
    found = [i for i, o in enumerate(options) if o.lower().rstrip(".")[:40] in low]
    return found[0] if len(found) == 1 else None


async def run_mcq(
    settings: Any,
    generator: str,
    data_dir: str,
    topics: list[str] | None,
    *,
    limit: int | None,
    filler: int,
    seed: int,
    budget_tokens: int,
    progress: Any,
) -> dict[str, Any]:
    """The multiple-choice task with recall off and on (module docstring); a JSON-able dict."""
    import json
    import tempfile
    from pathlib import Path

    from retrieval import MemoryWriter, Recaller, RuleExtractor, SqliteFaissStore
    from retrieval.embeddings import SentenceTransformerEmbedder
    from steer.fence import render
    from steer.server.metrics import Metrics
    from steer.storage import open_database
    from steer.upstreams.router import Router

    router = Router(settings, Metrics())
    router.config(generator)  # an unknown model is refused before anything loads
    root = Path(data_dir)
    names = topics or sorted(p.stem for p in (root / "mcq_options").glob("*.json"))
    fillers = json.loads((root / "filtered_inter_turns.json").read_text())[:filler]
    embedder = SentenceTransformerEmbedder()
    per_topic: dict[str, dict[str, Any]] = {}
    totals = {"items": 0, "off": 0, "on": 0, "unparsed_off": 0, "unparsed_on": 0, "own_recalled": 0}
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for t, topic in enumerate(names):
                path = root / "mcq_options" / f"{topic}.json"
                if not path.exists():
                    raise FileNotFoundError(f"no multiple-choice data for topic {topic!r} ({path})")
                items = json.loads(path.read_text())
                store = SqliteFaissStore(open_database(Path(tmp) / f"{topic}.db", synchronous="OFF"), embedder)
                writer = MemoryWriter(store, RuleExtractor())
                for i, item in enumerate(items):
                    await asyncio.to_thread(
                        writer.ingest, "eval", "u", [{"role": "user", "content": item["preference"]}], f"p/{i}"
                    )
                for f, conv in enumerate(fillers):
                    await asyncio.to_thread(writer.ingest, "eval", "u", conv["conversation"], f"filler/{f}")
                recaller = Recaller(store, budget_tokens=budget_tokens)
                row = {"items": 0, "off": 0, "on": 0, "unparsed_off": 0, "unparsed_on": 0, "own_recalled": 0}
                for i, item in enumerate(items[:limit]):
                    options, right = shuffled(list(item["classification_task_options"]), seed * 100_003 + i)
                    listed = "\n".join(f"{LETTERS[j]}. {o}" for j, o in enumerate(options))
                    ask = {"role": "user", "content": MCQ_PROMPT.format(question=item["question"], options=listed)}
                    recalled = await asyncio.to_thread(recaller.for_prompt, "eval", "u", item["question"])
                    row["own_recalled"] += any(c == f"p/{i}" for m in recalled.covered for c, _ in m.sources)
                    block = render(recalled.texts)
                    for cond, messages in (("off", [ask]), ("on", [{"role": "system", "content": block}, ask])):
                        body = {"messages": messages, "temperature": 0, "max_tokens": 8, "seed": seed}
                        answer = await router.complete(generator, body)
                        text = answer["choices"][0]["message"].get("content") or ""
                        choice = parse_choice(str(text), options)
                        row[f"unparsed_{cond}"] += choice is None
                        row[cond] += choice == right
                    row["items"] += 1
                store.close()
                for key in totals:
                    totals[key] += row[key]
                per_topic[topic] = {
                    "items": row["items"],
                    "accuracy_off": round(row["off"] / max(row["items"], 1), 4),
                    "accuracy_on": round(row["on"] / max(row["items"], 1), 4),
                    "own_preference_recalled": round(row["own_recalled"] / max(row["items"], 1), 4),
                    "unparsed_off": row["unparsed_off"],
                    "unparsed_on": row["unparsed_on"],
                }
                progress(
                    f"mcq {t + 1}/{len(names)} {topic}: accuracy off {per_topic[topic]['accuracy_off']:.3f} "
                    f"on {per_topic[topic]['accuracy_on']:.3f} ({row['items']} items, "
                    f"{time.perf_counter() - started:.0f}s)"
                )
    finally:
        await router.aclose()
    n = max(totals["items"], 1)
    return {
        "generator": generator,
        "items": totals["items"],
        "seed": seed,
        "budget_tokens": budget_tokens,
        "filler": len(fillers),
        "accuracy_off": round(totals["off"] / n, 4),
        "accuracy_on": round(totals["on"] / n, 4),
        "own_preference_recalled": round(totals["own_recalled"] / n, 4),
        "unparsed_off": totals["unparsed_off"],
        "unparsed_on": totals["unparsed_on"],
        "seconds": round(time.perf_counter() - started, 1),
        "per_topic": per_topic,
    }


def mcq_table(mcq: dict[str, Any]) -> str:
    head = f"{'topic':<28} {'items':>5} {'acc off':>8} {'acc on':>8} {'own recalled':>12} {'unparsed off/on':>15}"
    rows = [f"multiple choice, generator {mcq['generator']} (chance 0.25), {mcq['seconds']} s", head, "-" * len(head)]
    for topic, r in [*mcq["per_topic"].items(), ("all", mcq)]:
        rows.append(
            f"{topic:<28} {r['items']:>5} {r['accuracy_off']:>8.3f} {r['accuracy_on']:>8.3f} "
            f"{r['own_preference_recalled']:>12.3f} {str(r['unparsed_off']) + '/' + str(r['unparsed_on']):>15}"
        )
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from retrieval.recall import DESIGNS
    from steer.evals.prefeval_data import run_prefeval, write_report

    data = args.data
    settings = None
    if args.generator:
        from steer.settings import ConfigError, load_settings

        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            print(f"steer eval prefeval: {exc}", file=sys.stderr)
            return 2
        if settings.model(args.generator) is None:
            known = ", ".join(m.name for m in settings.models)
            print(f"steer eval prefeval: no model {args.generator!r} in the settings (known: {known})", file=sys.stderr)
            return 2
    try:
        result = run_prefeval(
            data,
            args.topics or None,
            args.form,
            args.filler,
            args.memory,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            designs=args.designs or DESIGNS,
            budget_tokens=args.budget_tokens,
            limit=args.limit,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"steer eval prefeval: {exc}", file=sys.stderr)
        return 2
    print(
        f"PrefEval {result['form']}, memory={result['memory']}, filler={result['filler']}, "
        f"topics: {', '.join(result['topics'])} ({result['seconds']} s)"
    )
    print(table(result))
    if args.generator:
        try:
            result["mcq"] = asyncio.run(
                run_mcq(
                    settings,
                    args.generator,
                    data,
                    args.topics or None,
                    limit=args.limit,
                    filler=args.filler,
                    seed=args.seed,
                    budget_tokens=args.budget_tokens,
                    progress=lambda line: print(line, file=sys.stderr, flush=True),
                )
            )
        except (FileNotFoundError, SteerError) as exc:
            print(f"steer eval prefeval: {exc}", file=sys.stderr)
            return 2
        print()
        print(mcq_table(result["mcq"]))
    if args.json:
        write_report(result, args.json, args.png)
    elif args.png:
        write_report(result, "/dev/null", args.png)
    return 0

"""``steer eval prefeval``: the preference memory on PrefEval, through steer's write path.

The data is read where it lies (``--data``, default ``../shared/data/prefeval``), never copied.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="PrefEval benchmark_dataset folder (default: ../shared/data/prefeval)")
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
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--png", help="write a bar plot here")


def table(result: dict[str, Any]) -> str:
    ks = result["ks"]
    head = (
        f"{'design':<10} {'items':>6} {'extract':>8} {'false/fill':>10} "
        + " ".join(f"{'R@' + str(k):>6}" for k in ks)
        + f" {'R@budget':>9} {'search ms':>9}"
    )
    rows = [head, "-" * len(head)]
    for name, d in result["designs"].items():
        rows.append(
            f"{name:<10} {d['items']:>6} {d['extraction_rate']:>8.3f} {d['false_memories_per_filler']:>10.3f} "
            + " ".join(f"{d[f'recall@{k}']:>6.3f}" for k in ks)
            + f" {d['recall@budget']:>9.3f} {d['mean_search_ms']:>9.2f}"
        )
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from retrieval.prefeval import DESIGNS, default_data_dir, run_prefeval, write_report

    data = args.data or str(default_data_dir())
    try:
        result = run_prefeval(
            data,
            args.topics or None,
            args.form,
            args.filler,
            args.memory,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            designs=args.designs or DESIGNS,
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
    if args.json:
        write_report(result, args.json, args.png)
    elif args.png:
        write_report(result, "/dev/null", args.png)
    return 0

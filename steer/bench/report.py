"""What every benchmark shares: percentiles, and the run/print/write-JSON/write-PNG command shell."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steer.bench.processes import StartupError, sigterm_as_interrupt

Progress = Callable[[str], None]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def progress_line(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_cli(
    name: str,
    args: argparse.Namespace,
    produce: Callable[[Progress], dict[str, Any]],
    format_table: Callable[[dict[str, Any]], str],
    write_png: Callable[[dict[str, Any], str], None],
) -> int:
    """Run a benchmark, print its table, write ``--json`` and ``--png``; servers stop on any exit."""
    try:
        with sigterm_as_interrupt():
            out = produce(progress_line)
    except KeyboardInterrupt:
        print(f"steer bench {name}: interrupted; the servers were stopped", file=sys.stderr)
        return 130
    except (ValueError, StartupError, RuntimeError) as exc:
        print(f"steer bench {name}: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_table(out), flush=True)
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    if getattr(args, "png", None):
        write_png(out, args.png)
        print(f"wrote {args.png}")
    return 0

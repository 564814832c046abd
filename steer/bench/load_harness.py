"""What the two load benchmarks (``steer.bench.load_soak`` and ``steer.bench.load_policy``) share: a
work folder whose processes stop on any exit, the resident memory of a server and its growth after the
warm-up, the verdict lines, and the command shell (a missed target exits 1)."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steer.bench.processes import Processes
from steer.bench.report import Progress, run_cli

RSS_LIMIT = 0.10  # each server's resident memory may grow this much from the end of the warm-up to the end

Run = Callable[[argparse.Namespace, Path, Processes, Progress], dict[str, Any]]


def in_workdir(prefix: str, a: argparse.Namespace, run: Run, progress: Progress) -> dict[str, Any]:
    """``run`` in a fresh temporary folder; every process it starts there is stopped when it returns or raises."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        procs = Processes(work)
        try:
            return run(a, work, procs, progress)
        finally:
            procs.close()


def rss(pid: int) -> int | None:
    """Resident memory of a process and its children (a server with --workers), in bytes; None when it
    cannot be read."""
    try:
        import psutil

        proc = psutil.Process(pid)
        return int(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))
    except ImportError:
        pass
    except Exception:
        return None
    try:  # Linux without psutil: the process alone
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def rss_growth(after_warmup: list[int]) -> dict[str, float | None]:
    """The samples taken after the warm-up, in order: MiB at their start, end and peak, and the growth
    from start to end (0.05: 5%)."""
    start, end = (after_warmup[0], after_warmup[-1]) if after_warmup else (None, None)
    return {
        "mib_after_warmup": round(start / 2**20, 1) if start else None,
        "mib_end": round(end / 2**20, 1) if end else None,
        "mib_peak": round(max(after_warmup) / 2**20, 1) if after_warmup else None,
        "growth": round(end / start - 1, 4) if start and end else None,
    }


def verdict_lines(out: dict[str, Any]) -> list[str]:
    return [f"{'MET ' if v['met'] else 'MISSED'}  {v['target']}: {v['measured']}" for v in out["verdicts"]]


def main(
    name: str,
    args: argparse.Namespace,
    produce: Callable[[Progress], dict[str, Any]],
    format_table: Callable[[dict[str, Any]], str],
    write_png: Callable[[dict[str, Any], str], None] | None = None,
) -> int:
    """Run, print the table, write ``--json`` (and ``--png`` where there is a chart); 0 when every target
    is met, 1 when one is missed or the run failed, 130 when interrupted."""
    outs: list[dict[str, Any]] = []

    def keep(progress: Progress) -> dict[str, Any]:
        outs.append(produce(progress))
        return outs[-1]

    if write_png is None and getattr(args, "png", None):
        args = argparse.Namespace(**{**vars(args), "png": None})  # no chart for this one

    def no_png(out: dict[str, Any], path: str) -> None:
        pass

    rc = run_cli(name, args, keep, format_table, write_png or no_png)
    if rc or not outs:
        return rc or 1
    return 0 if all(v["met"] for v in outs[0]["verdicts"]) else 1

"""The garbage collector of a process steer owns (`steer serve`): its threshold, and freezing the heap.

Nothing here runs at import time. The threshold's default is ``steer.settings.GC_THRESHOLD``;
``steer.bench.min_proxy`` uses the same, so the reference proxy and steer differ only in what steer does.
"""

from __future__ import annotations

import gc
import logging
from typing import Literal

log = logging.getLogger("steer")


FREEZE_AT_OBJECTS = 200_000  # "auto" freezes a heap this large: loaded models or litellm, not the fast path alone


def tune_collector(threshold: int | None) -> None:
    """Raise the collector's first threshold (objects allocated and not yet freed) to ``threshold``.

    At Python's 700 a proxy under load collects its youngest objects many times a second; the
    objects of requests in flight (waiting on their upstream) survive those collections and are
    promoted, so full collections follow, each stalling every request in flight. At 10,000 a
    steady load's garbage is freed by reference counting before the count is reached, so the
    collector seldom runs at all. Cyclic garbage is still collected, at most ``threshold``
    allocations late. ``steer bench overhead`` measures the effect; the runs are in
    docs/benchmarks.md.
    """
    if threshold is not None:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])


def freeze_heap(mode: Literal["auto", "on", "off"], at_objects: int = FREEZE_AT_OBJECTS) -> int:
    """Move every object alive now out of the collector's reach (``gc.freeze``); how many were moved.

    With models (MiniLM, torch, transformers) or litellm loaded the heap holds well over
    ``at_objects`` objects, and a full collection walks them all, stalling every request in
    flight. Those objects live as long as the process, so after the warm-up they are frozen and
    full collections skip them. A frozen object dropped later is still freed by reference counting; only a cycle
    among frozen objects would stay (old policies replaced by a reload, for instance). A smaller
    heap (the fast path alone) is left alone: there freezing did not pay for itself. "auto"
    freezes a heap of at least ``at_objects`` objects, "on" whatever the size, "off" never.
    ``steer bench remember`` and ``steer bench overhead`` measure both ways; the runs are in
    docs/benchmarks.md.
    """
    if mode == "off":
        return 0
    if mode == "auto" and len(gc.get_objects()) < at_objects:
        return 0
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d objects after the warm-up: full collections skip them from now on", frozen)
    return frozen

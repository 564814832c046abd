"""The garbage collector of a process steer owns (`steer serve`): its threshold, and freezing the heap.

Nothing here runs at import time; ``steer.bench.min_proxy`` uses the same threshold, so the reference
proxy and steer differ only in what steer does.
"""

from __future__ import annotations

import gc
import logging
from typing import Literal

log = logging.getLogger("steer")


FREEZE_AT_OBJECTS = 200_000  # "auto": loaded models or litellm put 390-500k objects on the heap, passthrough ~50k
GC_THRESHOLD = 10_000  # `steer serve`'s default first threshold (Python's is 700)


def tune_collector(threshold: int | None) -> None:
    """Raise the collector's first threshold (objects allocated and not yet freed) to ``threshold``.

    At Python's 700 a proxy under load collects its youngest objects about 50 times a second; the
    objects of requests in flight (waiting 20 ms on their upstream) survive those collections and
    are promoted, so about every hundredth one is a full collection: 50-70 ms on the fast path's
    heap on a 2-core machine, 3-4 times in 10 s, each stalling every request in flight. At 10,000 a
    steady load's garbage is freed by reference counting before the count is reached, so the
    collector seldom runs at all (``steer bench overhead``, the same day: added p99 +56 ms before
    the change, +15 to +26 ms after). Cyclic garbage is still collected, at most ``threshold``
    allocations late.
    """
    if threshold is not None:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])


def freeze_heap(mode: Literal["auto", "on", "off"], at_objects: int = FREEZE_AT_OBJECTS) -> int:
    """Move every object alive now out of the collector's reach (``gc.freeze``); how many were moved.

    With MiniLM, torch and transformers loaded the heap holds about 500,000 objects (litellm: about
    390,000), and a full collection walks them all: 20 to 315 ms measured under load, each one
    stalling every request in flight. Those objects live as long as the process, so after the warm-up they are frozen;
    full collections then take about 1 ms (``steer bench remember``, measured both ways). A frozen
    object dropped later is still freed by reference counting; only a cycle among frozen objects
    would stay (old policies replaced by a reload, for instance). A small heap (the fast path's
    ~50,000 objects) is left alone: there the pauses are 17-37 ms and freezing did not pay for
    itself in ``steer bench overhead``. "on" freezes whatever the size, "off" never.
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

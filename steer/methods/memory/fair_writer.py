"""The background writer: one thread, per-user queues, served round robin.

Work arrives as small jobs (one extracted preference each: embed, reconcile, store), queued per
owner (tenant, user). The thread takes one job from the owner at the head of the ring and, when
that owner has more, puts it at the back: an owner with a long backlog delays another owner's job
by at most one job of its own, however long its backlog. Rules:

- an owner holds at most ``max_pending`` queued jobs; more are refused at once (``Dropped``, reason
  ``queue_full``), so one user's flood neither grows the queue without bound nor holds the
  background slots of everyone else;
- ``drop(owner, reason)`` discards an owner's queued jobs (a forgotten user's);
- ``close(grace_s)`` takes no new jobs, lets the queue drain for up to ``grace_s`` seconds, then
  discards what is left (reason ``shutdown``) and waits for the job in progress only.

A discarded job's future fails with ``Dropped``; ``on_drop(reason, n)`` is called for every
discard, so the caller can count them. The thread is a daemon: a job still running when the
process exits is cut (each store write is one transaction: nothing half-written remains).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("steer.memory")

Owner = tuple[str, str]


class Dropped(Exception):
    """A queued job that was discarded before it ran; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    future: Future[Any]


class FairWriter:
    def __init__(
        self,
        *,
        max_pending: int,
        on_drop: Callable[[str, int], None] = lambda reason, n: None,
        initializer: Callable[[], None] | None = None,
        name: str = "steer-memory-write",
    ) -> None:
        self.max_pending = max_pending
        self.on_drop = on_drop
        self._initializer = initializer
        self._name = name
        self._queues: dict[Owner, deque[_Job]] = {}  # owners with queued jobs, each also in the ring once
        self._ring: deque[Owner] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._active = 0  # 1 while a job runs
        self._thread: threading.Thread | None = None

    def pending(self) -> int:
        """Jobs queued or in progress."""
        with self._cond:
            return sum(len(q) for q in self._queues.values()) + self._active

    def submit(self, owner: Owner, fns: Sequence[Callable[[], Any]]) -> list[Future[Any]]:
        """Queue ``fns`` for ``owner``, in order; one future each (the refused ones already failed)."""
        futures: list[Future[Any]] = [Future() for _ in fns]
        refused: list[Future[Any]] = []
        with self._cond:
            if self._closing:
                refused = futures
                reason = "shutdown"
            else:
                queue = self._queues.get(owner)
                room = self.max_pending - (0 if queue is None else len(queue))
                accepted = list(zip(fns, futures, strict=True))[: max(room, 0)]
                refused = futures[len(accepted) :]
                reason = "queue_full"
                if accepted:
                    if queue is None:
                        queue = self._queues[owner] = deque()
                        self._ring.append(owner)
                    queue.extend(_Job(fn, future) for fn, future in accepted)
                    self._start()
                    self._cond.notify_all()
        self._discard(refused, reason)
        return futures

    def drop(self, owner: Owner, reason: str) -> int:
        """Discard the owner's queued jobs (not one in progress); how many."""
        with self._cond:
            queue = self._queues.pop(owner, None)
            if queue is not None:
                self._ring.remove(owner)
        jobs = [] if queue is None else [job.future for job in queue]
        self._discard(jobs, reason)
        return len(jobs)

    def close(self, grace_s: float, join_s: float = 10.0) -> int:
        """Take no more jobs; run queued ones for up to ``grace_s`` seconds, discard the rest, then wait
        (up to ``join_s``) for the job in progress. The number discarded."""
        with self._cond:
            self._closing = True
            self._cond.wait_for(lambda: not self._ring, timeout=max(grace_s, 0.0))
            left = [job.future for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._ring.clear()
            self._cond.notify_all()
        self._discard(left, "shutdown")
        thread = self._thread
        if thread is not None:
            thread.join(timeout=join_s)
        return len(left)

    def _discard(self, futures: list[Future[Any]], reason: str) -> None:
        for future in futures:
            if future.set_running_or_notify_cancel():
                future.set_exception(Dropped(reason))
        if futures:
            self.on_drop(reason, len(futures))

    def _start(self) -> None:
        """Start the thread on first use (under the condition's lock)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _take(self) -> _Job | None:
        """The next job, round robin over owners; None once closing with nothing left."""
        with self._cond:
            self._active = 0
            while not self._ring:
                if self._closing:
                    return None
                self._cond.wait()
            owner = self._ring.popleft()
            queue = self._queues[owner]
            job = queue.popleft()
            if queue:
                self._ring.append(owner)
            else:
                del self._queues[owner]
                if not self._ring:
                    self._cond.notify_all()  # close() waits for the queue to empty
            self._active = 1
            return job

    def _run(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (job := self._take()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.fn()
            except BaseException as exc:  # handed to whoever waits on the future
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

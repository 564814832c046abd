"""Fixture plugin: no ``steer serve`` process outlives the tests that started it.

- ``steer_process``: start ``python -m steer serve`` (:class:`helpers.SteerProcess`); every process it
  started is killed in the fixture's teardown, which pytest runs whether the test passed or failed.
- After each test module (an autouse fixture, so it is torn down after the module's own fixtures),
  any ``steer serve`` this test process started that still runs, through ``SteerProcess`` or as a
  child process by any other path, is killed and reported as an error of that module.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import STARTED, SteerProcess


def _is_steer_serve(cmdline: list[str]) -> bool:
    return "steer" in cmdline and "serve" in cmdline


def leftover_steer_processes() -> list[str]:
    """Kill every ``steer serve`` this process started that still runs; describe each one killed."""
    import psutil

    found: list[str] = []
    for proc in STARTED:
        if proc.running:
            assert proc.proc is not None
            found.append(f"pid {proc.proc.pid} ({proc.config})")
            proc.kill()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and _is_steer_serve(child.cmdline()):
                found.append(f"pid {child.pid} ({' '.join(child.cmdline())})")
                os.kill(child.pid, signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    STARTED[:] = [p for p in STARTED if p.running]
    return found


@pytest.fixture
def steer_process(tmp_path: Path) -> Iterator[Callable[..., SteerProcess]]:
    """``start(config, port, probe="/models", headers=None)``: a running ``steer serve``, stopped in teardown."""
    started: list[SteerProcess] = []

    def start(config: Path, port: int, probe: str = "/models", headers: dict[str, str] | None = None) -> Any:
        proc = SteerProcess(config, port, tmp_path / f"serve{len(started)}.log", probe, headers)
        started.append(proc)
        proc.start()
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="module", autouse=True)
def no_steer_serve_left_behind() -> Iterator[None]:
    yield
    left = leftover_steer_processes()
    if left:
        pytest.fail("steer serve still running after the module's tests (killed now): " + ", ".join(left))

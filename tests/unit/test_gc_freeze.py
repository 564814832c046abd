"""The collector under `steer serve`: ``gc_threshold`` at start, ``gc_freeze`` after the warm-up."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from steer.server.gc import freeze_heap, tune_collector
from steer.server.services import Services
from steer.settings import GC_THRESHOLD, load_settings


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session keeps a normal collector
    gc.set_threshold(*thresholds)


def test_off_never_freezes_and_auto_only_a_large_heap() -> None:
    assert freeze_heap("off", at_objects=0) == 0
    assert freeze_heap("auto", at_objects=10**9) == 0
    assert gc.get_freeze_count() == 0
    assert freeze_heap("auto", at_objects=1) > 1000  # this test process has a real heap
    assert gc.get_freeze_count() > 1000


def test_on_freezes_whatever_the_size_and_new_objects_stay_collectable() -> None:
    assert freeze_heap("on", at_objects=10**9) > 0

    class Cycle:
        pass

    a, b = Cycle(), Cycle()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None  # a cycle made after the freeze is still collected


def _settings(tmp_path, **overrides):
    (tmp_path / "p").mkdir(exist_ok=True)
    (tmp_path / "p" / "default.yaml").write_text("name: default\nextends: none\nstages: {}\n")
    return load_settings(
        None,
        policies=str(tmp_path / "p"),
        database=str(tmp_path / "s.db"),
        models=[{"name": "m", "model": "m", "backend": "openai", "api_base": "http://127.0.0.1:9/v1"}],
        **overrides,
    )


def test_tune_collector_sets_the_first_threshold_and_none_keeps_it() -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(None)
    assert gc.get_threshold() == (700, 10, 10)
    tune_collector(12_345)
    assert gc.get_threshold() == (12_345, 10, 10)  # the older generations' thresholds are kept


def test_only_a_process_owner_tunes_the_collector(tmp_path) -> None:
    gc.set_threshold(700, 10, 10)
    settings = _settings(tmp_path, gc_threshold=12_345)
    assert settings.gc_threshold == 12_345

    async def start_and_close(services: Services) -> None:
        await services.start()
        await services.close()

    asyncio.run(start_and_close(Services(settings)))  # embedded: the host process's collector is its own
    assert gc.get_threshold()[0] == 700
    asyncio.run(start_and_close(Services(settings, owns_process=True)))  # `steer serve`
    assert gc.get_threshold()[0] == 12_345
    assert load_settings(None).gc_threshold == GC_THRESHOLD == 10_000  # the default


def test_only_a_process_owner_freezes_after_warm_up(tmp_path) -> None:
    settings = _settings(tmp_path, gc_freeze="on")
    services = Services(settings)
    assert not services.warm
    asyncio.run(services.warmup())  # embedded in someone's process (steer.Pipeline, tests)
    assert services.warm and gc.get_freeze_count() == 0
    asyncio.run(Services(settings, owns_process=True).warmup())  # `steer serve`
    assert gc.get_freeze_count() > 0

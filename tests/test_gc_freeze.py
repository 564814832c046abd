"""``gc_freeze``: after the warm-up, `steer serve` moves a large heap out of the collector's reach."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from steer.services import Services, freeze_heap
from steer.settings import load_settings


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session keeps a normal collector


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


def test_only_a_process_owner_freezes_after_warm_up(tmp_path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "default.yaml").write_text("name: default\nextends: none\nstages: {}\n")
    settings = load_settings(
        None,
        policies=str(tmp_path / "p"),
        database=str(tmp_path / "s.db"),
        gc_freeze="on",
        models=[{"name": "m", "model": "m", "backend": "openai", "api_base": "http://127.0.0.1:9/v1"}],
    )
    services = Services(settings)
    assert not services.warm
    asyncio.run(services.warmup())  # embedded in someone's process (steer.Pipeline, tests)
    assert services.warm and gc.get_freeze_count() == 0
    asyncio.run(Services(settings, owns_process=True).warmup())  # `steer serve`
    assert gc.get_freeze_count() > 0

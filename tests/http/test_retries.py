"""Retries do not multiply: once steer has spent its own retries on an upstream failure, it answers
with ``x-should-retry: false``, which the official OpenAI SDK obeys, so one client call costs at most
the configured retries + 1 upstream attempts, whatever the SDK's own ``max_retries``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest
from helpers import ServerThread, Steer


def model(stub: ServerThread, fault: str, retries: int, timeout: float = 30.0) -> dict[str, Any]:
    return {
        "name": "stub",
        "api_base": stub.url + "/v1",
        "retries": retries,
        "timeout": timeout,
        "extra_body": {"stub_fault": fault},
    }


def attempts(stub: ServerThread, marker: str) -> int:
    """How many requests carrying ``marker`` the stub upstream received."""
    return sum(marker in str(call.get("messages")) for call in stub.app.state.calls)


def sdk(s: Steer) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url, api_key="none", max_retries=2, timeout=60)


@pytest.mark.parametrize(
    ("fault", "retries", "status"),
    [("500", 0, 502), ("500", 2, 502), ("timeout", 1, 504), ("429", 1, 429)],
    ids=["500-no-retries", "500-two-retries", "timeout-one-retry", "429-one-retry"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_sdk_makes_one_attempt_and_the_upstream_sees_retries_plus_one(
    make_steer: Callable[..., Steer], stub: ServerThread, fault: str, retries: int, status: int, stream: bool
) -> None:
    s = make_steer(models=[model(stub, fault, retries, timeout=0.5)])
    marker = uuid.uuid4().hex
    with pytest.raises(openai.APIStatusError) as exc:
        sdk(s).chat.completions.create(
            model="stub", messages=[{"role": "user", "content": marker}], stream=stream
        )
    assert exc.value.status_code == status
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert attempts(stub, marker) == retries + 1  # the SDK's max_retries=2 added none


def test_an_error_steer_did_not_retry_for_the_upstream_carries_no_such_header(
    make_steer: Callable[..., Steer], stub: ServerThread
) -> None:
    s = make_steer(models=[model(stub, "", 1)])
    with pytest.raises(openai.BadRequestError) as exc:
        sdk(s).chat.completions.create(model="stub", messages=[])
    assert "x-should-retry" not in exc.value.response.headers

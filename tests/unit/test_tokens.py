"""Token budgets count real tokens: o200k_base from the file litellm ships, else a safe estimate."""

from __future__ import annotations

import importlib.util

import pytest

from retrieval import tokens
from retrieval.tokens import count_tokens, estimate_tokens, tokenizer

SENTENCES = [
    "I dislike crowded beaches.",
    "I prefer aisle seats on long flights and I never check a bag.",
    "I'm allergic to peanuts, tree nuts and sesame.",
]


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm (which ships the encoding) is absent")
def test_with_litellm_installed_the_count_is_o200k_base_offline() -> None:
    assert tokenizer() == "o200k_base"
    assert count_tokens("hello world") == 2  # two tokens in o200k_base
    assert count_tokens("") == 1  # a line always costs something


def test_the_fallback_estimate_never_undercounts_english() -> None:
    # the estimate (4 characters a token) is the rule without tiktoken: blocks may come out smaller, never larger
    for s in SENTENCES:
        assert estimate_tokens(s) >= count_tokens(s)


def test_without_the_encoding_file_the_estimate_is_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_COUNT", None)
    monkeypatch.setattr(tokens, "_NAME", "")
    monkeypatch.setattr(tokens, "_cached_file", lambda: None)
    assert tokenizer().startswith("estimate")
    assert count_tokens(SENTENCES[1]) == estimate_tokens(SENTENCES[1])

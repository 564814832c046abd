"""The embedder: precision choice, agreement across precisions, and calls from many threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from retrieval.embeddings import SentenceTransformerEmbedder, cpu_has_bf16, resolve_precision

TEXTS = [
    "I have a severe peanut allergy.",
    "What are some must-try street foods in Bangkok?",
    "Here is a three-day plan for Rome on a budget: start at the Colosseum early, then walk to the Forum.",
]


def test_precision_auto_uses_bfloat16_only_on_a_cpu_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEER_EMBEDDING_PRECISION", raising=False)
    assert resolve_precision("auto", "cpu") == ("bfloat16" if cpu_has_bf16() else "float32")
    assert resolve_precision("auto", "cuda") == "float32"
    assert resolve_precision("float32", "cpu") == "float32"
    monkeypatch.setenv("STEER_EMBEDDING_PRECISION", "float32")
    assert resolve_precision(None, "cpu") == "float32"


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, float32 or bfloat16"):
        resolve_precision("fp8", "cpu")


def test_bfloat16_vectors_agree_with_float32_ones(embedder: SentenceTransformerEmbedder) -> None:
    exact = SentenceTransformerEmbedder(embedder.name, cache_size=0, precision="float32").encode(TEXTS)
    fast = SentenceTransformerEmbedder(embedder.name, cache_size=0, precision="bfloat16").encode(TEXTS)
    assert fast.dtype == np.float32
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-4)
    assert float((exact * fast).sum(axis=1).min()) > 0.999


def test_encode_from_many_threads_gives_each_caller_its_own_rows(embedder: SentenceTransformerEmbedder) -> None:
    fresh = SentenceTransformerEmbedder(embedder.name, cache_size=0)
    expected = fresh.encode(TEXTS)
    got: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        got[i] = fresh.encode([TEXTS[i % len(TEXTS)]])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, row in got.items():
        assert float(row @ expected[i % len(TEXTS)]) > 0.9999


def test_the_model_thread_uses_its_own_torch_thread_count_and_leaves_the_callers_alone(
    embedder: SentenceTransformerEmbedder,
) -> None:
    import torch

    before = torch.get_num_threads()
    one = SentenceTransformerEmbedder(embedder.name, cache_size=0, threads=1)
    one.encode(TEXTS[:1])
    assert one._worker.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == before

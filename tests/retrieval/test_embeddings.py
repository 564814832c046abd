"""The embedder: precision choice, agreement across precisions and with the traced graph, many threads."""

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


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_traced_graph_gives_the_eager_vectors_at_any_batch_shape(
    embedder: SentenceTransformerEmbedder, precision: str
) -> None:
    graphed = SentenceTransformerEmbedder(embedder.name, cache_size=0, precision=precision, threads=1)  # type: ignore[arg-type]
    eager = SentenceTransformerEmbedder(embedder.name, cache_size=0, precision=precision, threads=1, graph=False)  # type: ignore[arg-type]
    assert graphed.graphed and not eager.graphed
    long = " ".join(["a walk through the old town, then lunch by the river"] * 40)  # past the 256-token limit
    for batch in (TEXTS[:1], TEXTS, [*TEXTS, long, "ok"]):  # shapes unlike the trace's example
        a, b = graphed.encode(batch), eager.encode(batch)
        assert a.shape == b.shape == (len(batch), embedder.dim)
        assert float((a * b).sum(axis=1).min()) > 0.9999


def test_a_trace_that_disagrees_with_the_model_is_not_used(
    embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def wrong(module: object) -> object:  # a "graph" whose outputs have nothing to do with the text
        return lambda ids, mask: (torch.randn(ids.shape[0], ids.shape[1], embedder.dim),)

    monkeypatch.setattr(torch.jit, "freeze", wrong)
    guarded = SentenceTransformerEmbedder(embedder.name, cache_size=0, threads=1)
    assert not guarded.graphed
    eager = SentenceTransformerEmbedder(embedder.name, cache_size=0, threads=1, graph=False)
    assert float((guarded.encode(TEXTS) * eager.encode(TEXTS)).sum(axis=1).min()) > 0.9999


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


def test_each_model_thread_uses_one_torch_thread_and_leaves_the_callers_alone(
    embedder: SentenceTransformerEmbedder,
) -> None:
    import torch

    before = torch.get_num_threads()
    two = SentenceTransformerEmbedder(embedder.name, cache_size=0, threads=2)
    two.encode(TEXTS)
    assert two.threads == 2
    assert {two._workers.submit(torch.get_num_threads).result() for _ in range(4)} == {1}
    assert torch.get_num_threads() == before


def test_a_batch_split_across_model_threads_keeps_each_text_its_own_row(embedder: SentenceTransformerEmbedder) -> None:
    texts = [f"{t} ({i})" for i in range(7) for t in TEXTS]  # 21 texts of mixed lengths, over 2 batches
    alone = SentenceTransformerEmbedder(embedder.name, cache_size=0, threads=1, batch_size=16).encode(texts)
    split = SentenceTransformerEmbedder(embedder.name, cache_size=0, threads=3, batch_size=16).encode(texts)
    assert float((alone * split).sum(axis=1).min()) > 0.9999
    assert np.allclose(np.linalg.norm(split, axis=1), 1.0, atol=1e-5)


def test_a_caller_at_lowered_priority_gets_one_model_thread_for_its_batch(
    embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import retrieval.embeddings as emb

    two = SentenceTransformerEmbedder(embedder.name, cache_size=0, threads=2)
    used: list[str] = []
    forward = two._forward

    def spy(features):  # type: ignore[no-untyped-def]
        used.append(threading.current_thread().name)
        return forward(features)

    monkeypatch.setattr(two, "_forward", spy)
    texts = [f"{t} ({i})" for i in range(3) for t in TEXTS]
    two.encode(texts)
    assert len(used) == 2  # the request path: the batch split across both model threads
    used.clear()
    monkeypatch.setattr(emb, "_caller_is_background", lambda: True)
    vectors = two.encode([t + " again" for t in texts])
    assert len(used) == 1 and vectors.shape == (len(texts), two.dim)

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.sqlite_store import SqliteFaissStore

PREFEVAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "prefeval"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    os.environ["HF_HUB_OFFLINE"] = "1"
    return SentenceTransformerEmbedder()


@pytest.fixture
def store(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[SqliteFaissStore]:
    s = SqliteFaissStore(tmp_path / "memory.db", embedder)
    yield s
    s.close()


@pytest.fixture
def prefeval_dir() -> Path:
    if not (PREFEVAL / "explicit_preference").is_dir():
        pytest.skip(f"PrefEval data not found at {PREFEVAL}")
    return PREFEVAL

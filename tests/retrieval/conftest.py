from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SHARED

from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.sqlite_store import SqliteFaissStore
from steer.storage import open_database

PREFEVAL = SHARED / "data" / "prefeval"  # ../shared/data/prefeval, read in place


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    os.environ["HF_HUB_OFFLINE"] = "1"
    return SentenceTransformerEmbedder()


@pytest.fixture
def store(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[SqliteFaissStore]:
    s = SqliteFaissStore(open_database(tmp_path / "memory.db"), embedder)
    yield s
    s.close()


@pytest.fixture
def prefeval_dir() -> Path:
    if not (PREFEVAL / "explicit_preference").is_dir():
        pytest.skip(f"PrefEval data not found at {PREFEVAL}")
    return PREFEVAL

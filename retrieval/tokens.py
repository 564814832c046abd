"""Counting the tokens of what recall injects, so a token budget means tokens.

The count is the length of the text in OpenAI's ``o200k_base`` encoding (tiktoken, the encoding of
the GPT-4o and later models), read from the copy of its file that litellm ships (litellm is one of
steer's dependencies), so no network is needed. Other models' tokenizers differ by a few per cent
on English; a budget is a bound on the block's size, not an exact bill.

Where tiktoken or the file is missing (a minimal install without litellm), the count falls back to
an estimate of four characters a token, which overcounts English by about a quarter: blocks are
then smaller than the budget allows, never larger. :func:`tokenizer` says which rule is in force.

The encoding is loaded on first use, never at import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path

ENCODING = "o200k_base"
_URL = f"https://openaipublic.blob.core.windows.net/encodings/{ENCODING}.tiktoken"
_LOCK = threading.Lock()
_COUNT: Callable[[str], int] | None = None
_NAME = ""


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (about four characters a token for English): the fallback."""
    return max(1, (len(text) + 3) // 4)


def count_tokens(text: str) -> int:
    """The tokens of ``text`` (at least 1): ``o200k_base`` when available, else the estimate."""
    count = _COUNT or _load()
    return max(1, count(text))


def tokenizer() -> str:
    """The rule in force: ``"o200k_base"`` or ``"estimate (4 characters a token)"``."""
    _COUNT or _load()
    return _NAME


def _cached_file() -> Path | None:
    """The encoding's file where tiktoken looks for it: its cache folder, else litellm's copy."""
    name = hashlib.sha1(_URL.encode()).hexdigest()  # tiktoken's cache key: the sha1 of the file's URL
    folders = [os.environ.get("TIKTOKEN_CACHE_DIR"), os.environ.get("DATA_GYM_CACHE_DIR")]
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it (litellm's import is slow)
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            folders.append(str(Path(root) / "litellm_core_utils" / "tokenizers"))
    for folder in folders:
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def _load() -> Callable[[str], int]:
    global _COUNT, _NAME
    with _LOCK:
        if _COUNT is not None:
            return _COUNT
        count: Callable[[str], int] = estimate_tokens
        name = "estimate (4 characters a token)"
        found = _cached_file()
        if found is not None:
            try:
                import tiktoken

                # tiktoken reads its cache folder from the environment; point it at the folder found
                # only when none is set, as litellm itself does on import
                os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(found.parent))
                if Path(os.environ["TIKTOKEN_CACHE_DIR"]) == found.parent:
                    encoding = tiktoken.get_encoding(ENCODING)
                    count, name = (lambda text: len(encoding.encode_ordinary(text))), ENCODING
            except Exception:  # any failure to load leaves the estimate in force
                pass
        _COUNT, _NAME = count, name
        return count

"""The prompts an evaluation runs: a prompt file or folder (PrefEval's explicit-preference questions:
``<--data>/explicit_preference``), read where they lie and never copied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NO_PROMPTS = "no prompts: give --prompts FILE, or --data DIR (PrefEval's folder: its explicit-preference questions)"


def prompt_source(path: str | None, data: str | None) -> Path:
    """The prompt file or folder: ``path``, else PrefEval's explicit-preference questions under ``data``."""
    if path:
        return Path(path)
    if data:
        return Path(data) / "explicit_preference"
    raise FileNotFoundError(NO_PROMPTS)


def _text_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item.strip() or None
    if isinstance(item, dict):
        for key in ("question", "prompt", "instruction"):
            if isinstance(item.get(key), str) and item[key].strip():
                return str(item[key]).strip()
    return None


def load_prompts(path: str | Path | None, limit: int | None) -> list[str]:
    """Prompts from a file (.json list of strings or of objects with ``question``/``prompt``/``instruction``,
    .jsonl, or text: one a line) or a folder of .json files (such as PrefEval's explicit questions), taken
    round-robin over the files so a small ``limit`` spans every topic."""
    if not path:
        raise FileNotFoundError(NO_PROMPTS)
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such prompt file or folder")
    files = sorted(source.glob("*.json")) if source.is_dir() else [source]
    if not files:
        raise FileNotFoundError(f"{source}: no .json files")
    per_file: list[list[str]] = []
    for f in files:
        raw = f.read_text(encoding="utf-8")
        items: list[Any]
        if f.suffix == ".jsonl":
            items = [json.loads(line) for line in raw.splitlines() if line.strip()]
        elif f.suffix == ".json":
            data = json.loads(raw)
            items = data if isinstance(data, list) else [data]
        else:
            items = raw.splitlines()
        per_file.append([t for t in map(_text_of, items) if t])
    out: list[str] = []
    for i in range(max((len(p) for p in per_file), default=0)):
        out += [p[i] for p in per_file if i < len(p)]
    if not out:
        raise ValueError(f"{source}: no prompts found (expected `question` or `prompt` fields)")
    return out[:limit] if limit else out

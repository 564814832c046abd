"""The prompts an evaluation runs: a prompt file or folder, by default PrefEval's explicit-preference
questions, read where they lie (``../shared/data/prefeval``, see :func:`steer.evals.prefeval_data.default_data_dir`)
and never copied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steer.evals.prefeval_data import default_data_dir


def default_prompt_dir() -> Path:
    return default_data_dir() / "explicit_preference"


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
    .jsonl, or text: one a line) or a folder of .json files (PrefEval's explicit questions by default),
    taken round-robin over the files so a small ``limit`` spans every topic."""
    source = Path(path) if path else default_prompt_dir()
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

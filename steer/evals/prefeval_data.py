"""PrefEval evaluation of the memory: extraction, false memories from filler, recall@k.

``run_prefeval`` plays, for each topic (``memory="topic"``) or once for all given topics
(``memory="all"``), every preference conversation of those topics through the write path
(extractor -> reconciliation -> store, provenance = the conversation id), then ``filler`` filler
conversations through the same path (whatever they leave is a false memory), then asks each
item's question. A hit is decided by provenance only: a recalled memory whose sources include the
item's preference conversation. Each design runs on its own store in the same run, the plain
MiniLM baseline (``dense``) among them. The data is read from ``data_dir`` and never copied.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from retrieval.extract import RuleExtractor, Turn
from retrieval.recall import LEXICAL_WEIGHT, LexiconExpander, Recaller
from retrieval.sqlite_store import SqliteFaissStore
from retrieval.writer import MemoryWriter
from steer.storage import open_database

Form = Literal["explicit", "choice", "persona"]
DESIGNS = ("dense", "lexicon", "hybrid")
_FORM_DIRS = {
    "explicit": "explicit_preference",
    "choice": "implicit_preference/choice-based",
    "persona": "implicit_preference/persona-driven",
}


def item_turns(item: dict[str, Any], form: Form) -> list[Turn]:
    if form == "explicit":
        return [{"role": "user", "content": item["preference"]}]
    conv = item["conversation"]
    if form == "choice":
        return [
            {"role": "user", "content": conv["query"]},
            {"role": "assistant", "content": conv["assistant_options"]},
            {"role": "user", "content": conv["user_selection"]},
            {"role": "assistant", "content": conv["assistant_acknowledgment"]},
        ]
    turns: list[Turn] = []
    for key in sorted(conv, key=int):
        turns.append({"role": "user", "content": conv[key]["user"]})
        turns.append({"role": "assistant", "content": conv[key]["assistant"]})
    return turns


def _topics(data_dir: Path, form: Form, topics: Sequence[str] | None) -> list[str]:
    found = sorted(p.stem for p in (data_dir / _FORM_DIRS[form]).glob("*.json"))
    if topics is None:
        return found
    missing = sorted(set(topics) - set(found))
    if missing:
        raise ValueError(f"no {form} data for topics: {', '.join(missing)}")
    return list(topics)


def run_prefeval(
    data_dir: str | Path,
    topics: Sequence[str] | None = None,
    form: Form = "explicit",
    filler: int = 5,
    memory: Literal["topic", "all"] = "topic",
    progress: Callable[[str], None] | None = None,
    *,
    embedder: Any = None,
    designs: Sequence[str] = DESIGNS,
    ks: Sequence[int] = (1, 5, 10),
    budget_tokens: int = 1500,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the evaluation; returns a JSON-able dict (figures per design, per topic, and overall)."""
    unknown = sorted(set(designs) - set(DESIGNS))
    if unknown:  # else an unknown name would run as plain MiniLM under its own label
        raise ValueError(f"unknown recall designs: {', '.join(unknown)} (known: {', '.join(DESIGNS)})")
    started = time.perf_counter()
    data = Path(data_dir)
    names = _topics(data, form, topics)
    items = {t: json.loads((data / _FORM_DIRS[form] / f"{t}.json").read_text())[:limit] for t in names}
    fillers = json.loads((data / "filtered_inter_turns.json").read_text())[:filler]
    if embedder is None:
        from retrieval.embeddings import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
    extractor = RuleExtractor()
    groups = [[t] for t in names] if memory == "topic" else [names]
    result: dict[str, Any] = {
        "form": form,
        "memory": memory,
        "filler": len(fillers),
        "topics": names,
        "ks": list(ks),
        "budget_tokens": budget_tokens,
        "designs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for design in designs:
            expander = LexiconExpander() if design in ("lexicon", "hybrid") else None
            store = SqliteFaissStore(
                open_database(Path(tmp) / f"{design}.db", synchronous="OFF"), embedder, expander=expander
            )
            writer = MemoryWriter(store, extractor)
            result["designs"][design] = _run_design(
                store, writer, groups, items, fillers, form, ks, budget_tokens, design, progress
            )
            store.close()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _run_design(
    store: SqliteFaissStore,
    writer: MemoryWriter,
    groups: list[list[str]],
    items: dict[str, list[dict[str, Any]]],
    fillers: list[dict[str, Any]],
    form: Form,
    ks: Sequence[int],
    budget_tokens: int,
    design: str,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    weight = LEXICAL_WEIGHT if design == "hybrid" else 0.0
    recaller = Recaller(store, budget_tokens=budget_tokens, lexical_weight=weight)
    per_topic: dict[str, dict[str, Any]] = {}
    total = {
        "items": 0,
        "extracted": 0,
        "false": 0,
        "filler_convs": 0,
        "budget_hits": 0,
        "budget_tokens": 0,
        **{f"hits@{k}": 0 for k in ks},
    }
    search_s = 0.0
    for g, group in enumerate(groups):
        user = f"user{g}"
        for topic in group:
            for i, item in enumerate(items[topic]):
                got = writer.ingest("eval", user, item_turns(item, form), f"{topic}/{i}")
                total["extracted"] += bool(got.added or got.merged)
        for f, conv in enumerate(fillers):
            got = writer.ingest("eval", user, conv["conversation"], f"filler/{f}")
            total["false"] += len(got.added) + len(got.merged)
            total["filler_convs"] += 1
        for topic in group:
            row = per_topic.setdefault(topic, {"items": 0, **{f"hits@{k}": 0 for k in ks}})
            for i, item in enumerate(items[topic]):
                source = f"{topic}/{i}"
                t0 = time.perf_counter()
                hits = recaller.top("eval", user, item["question"], max(ks))
                search_s += time.perf_counter() - t0
                ranks = [n for n, h in enumerate(hits) if any(c == source for c, _ in h.memory.sources)]
                for k in ks:
                    hit = bool(ranks) and ranks[0] < k
                    row[f"hits@{k}"] += hit
                    total[f"hits@{k}"] += hit
                row["items"] += 1
                total["items"] += 1
                packed = recaller.for_prompt("eval", user, item["question"])
                total["budget_hits"] += any(any(c == source for c, _ in m.sources) for m in packed.memories)
                total["budget_tokens"] += packed.tokens
            if progress:
                progress(
                    f"{design}: {topic} recall@{ks[-1]} {row[f'hits@{ks[-1]}'] / max(row['items'], 1):.3f}"
                )
    n = max(total["items"], 1)
    return {
        "items": total["items"],
        "extraction_rate": round(total["extracted"] / n, 4),
        "false_memories_per_filler": round(total["false"] / max(total["filler_convs"], 1), 4),
        **{f"recall@{k}": round(total[f"hits@{k}"] / n, 4) for k in ks},
        "recall@budget": round(total["budget_hits"] / n, 4),
        "mean_budget_tokens": round(total["budget_tokens"] / n, 1),
        "mean_search_ms": round(1000 * search_s / n, 2),
        "memories": sum(len(store.list("eval", u)) for u in (f"user{g}" for g in range(len(groups)))),
        "per_topic": {
            t: {f"recall@{k}": round(r[f"hits@{k}"] / max(r["items"], 1), 4) for k in ks}
            | {"items": r["items"]}
            for t, r in per_topic.items()
        },
    }


def write_report(result: dict[str, Any], json_path: str | Path, png_path: str | Path | None = None) -> None:
    """Write ``result`` as JSON, and a bar plot of recall@k per design as PNG (needs matplotlib)."""
    Path(json_path).write_text(json.dumps(result, indent=2))
    if png_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    designs = list(result["designs"])
    metrics = [f"recall@{k}" for k in result["ks"]] + ["recall@budget"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(designs), 1)
    for d, design in enumerate(designs):
        values = [result["designs"][design][m] for m in metrics]
        ax.bar([x + d * width for x in range(len(metrics))], values, width, label=design)
    ax.set_xticks([x + width * (len(designs) - 1) / 2 for x in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of questions")
    ax.set_title(f"PrefEval {result['form']}, memory={result['memory']}, filler={result['filler']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)

"""PrefEval evaluation of the memory: what a user gets inside the injected block, at a token budget.

``run_prefeval`` plays, for each topic (``memory="topic"``) or once for all given topics
(``memory="all"``: a heavy user holding every preference of those topics), every preference
conversation through the write path (extractor -> reconciliation -> store, provenance = the
conversation id), then ``filler`` filler conversations through the same path (whatever they leave is
a false memory), then asks each item's question. A hit is decided by provenance only: a recalled
memory whose sources include the item's preference conversation. The memory is written once; each
recall design (:data:`retrieval.recall.DESIGNS`, the plain MiniLM baseline ``dense`` among them)
then answers every question from it.

Reported per design: ``hit_within_tokens`` (the share of questions whose preference is inside the
block the design injects within 100, 200, 300 tokens and the policy budget), the mean tokens and
memories injected at the budget (lines: restatements folded into a line count once), and
recall@k of the ranking (a diagnostic). Reported once (the write
path is shared): ``extraction`` (the share of preference conversations that stored or restated a
memory), ``false_per_filler`` and ``supersede_errors``: PrefEval's users never change their mind, so
every supersession while its conversations are written replaced a memory that did not contradict
the new one. The data is read from ``data_dir`` and never copied.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from retrieval.extract import RuleExtractor, Turn
from retrieval.recall import DEFAULT_DESIGN, DESIGNS, Recaller
from retrieval.sqlite_store import SqliteFaissStore
from retrieval.tokens import tokenizer
from retrieval.writer import MemoryWriter
from steer.storage import open_database

Form = Literal["explicit", "choice", "persona"]
WITHIN = (100, 200, 300)  # token budgets reported beside the policy's
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


def budgets(budget_tokens: int) -> list[int]:
    """The budgets reported: 100, 200, 300 and the policy's, ascending, each once."""
    return sorted({*WITHIN, budget_tokens})


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
    budget_tokens: int = 600,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the evaluation; returns a JSON-able dict (module docstring)."""
    unknown = sorted(set(designs) - set(DESIGNS))
    if unknown:  # else an unknown name would run as another design under its own label
        raise ValueError(f"unknown recall designs: {', '.join(unknown)} (known: {', '.join(DESIGNS)})")
    started = time.perf_counter()
    data = Path(data_dir)
    names = _topics(data, form, topics)
    items = {t: json.loads((data / _FORM_DIRS[form] / f"{t}.json").read_text())[:limit] for t in names}
    fillers = json.loads((data / "filtered_inter_turns.json").read_text())[:filler]
    if embedder is None:
        from retrieval.embeddings import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
    groups = [[t] for t in names] if memory == "topic" else [names]
    result: dict[str, Any] = {
        "form": form,
        "memory": memory,
        "filler": len(fillers),
        "topics": names,
        "ks": list(ks),
        "budget_tokens": budget_tokens,
        "designs": {},
        "default_design": DEFAULT_DESIGN,
        "tokenizer": tokenizer(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteFaissStore(open_database(Path(tmp) / "memory.db", synchronous="OFF"), embedder)
        try:
            writes = _write(store, MemoryWriter(store, RuleExtractor()), groups, items, fillers, form)
            for design in designs:
                recaller = Recaller(store, budget_tokens=budget_tokens, design=design)  # type: ignore[arg-type]
                result["designs"][design] = _ask(recaller, groups, items, ks, budget_tokens, design, progress)
        finally:
            store.close()
    result.update(writes)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _write(
    store: SqliteFaissStore,
    writer: MemoryWriter,
    groups: list[list[str]],
    items: dict[str, list[dict[str, Any]]],
    fillers: list[dict[str, Any]],
    form: Form,
) -> dict[str, Any]:
    """Every group's preference conversations, then the fillers, through the write path; its figures."""
    n = extracted = false = filler_convs = supersessions = 0
    for g, group in enumerate(groups):
        user = f"user{g}"
        for topic in group:
            for i, item in enumerate(items[topic]):
                got = writer.ingest("eval", user, item_turns(item, form), f"{topic}/{i}")
                n += 1
                extracted += bool(got.added or got.merged)
                supersessions += len(got.superseded)
        for f, conv in enumerate(fillers):
            got = writer.ingest("eval", user, conv["conversation"], f"filler/{f}")
            false += len(got.added) + len(got.merged)
            supersessions += len(got.superseded)
            filler_convs += 1
    return {
        "items": n,
        "extraction": round(extracted / max(n, 1), 4),
        "false_per_filler": round(false / max(filler_convs, 1), 4),
        "supersede_errors": supersessions,
        "memories": sum(store.count("eval", f"user{g}") for g in range(len(groups))),
    }


def _ask(
    recaller: Recaller,
    groups: list[list[str]],
    items: dict[str, list[dict[str, Any]]],
    ks: Sequence[int],
    budget_tokens: int,
    design: str,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    limits = budgets(budget_tokens)
    per_topic: dict[str, dict[str, Any]] = {}
    total: dict[str, float] = {"items": 0, "tokens": 0, "memories": 0, **{f"hits@{k}": 0 for k in ks}}
    total |= {f"within{b}": 0 for b in limits}
    search_s = 0.0
    for g, group in enumerate(groups):
        user = f"user{g}"
        for topic in group:
            row = per_topic.setdefault(topic, {"items": 0, **{f"hits@{k}": 0 for k in ks}, "within": 0})
            for i, item in enumerate(items[topic]):
                source = f"{topic}/{i}"
                t0 = time.perf_counter()
                vector = recaller.vector(item["question"])
                hits = recaller.top("eval", user, vector, recaller.candidates)
                ranked = recaller.rank("eval", user, vector, hits)
                search_s += time.perf_counter() - t0
                own = [n for n, h in enumerate(hits) if any(c == source for c, _ in h.memory.sources)]
                for k in ks:
                    hit = bool(own) and own[0] < k
                    row[f"hits@{k}"] += hit
                    total[f"hits@{k}"] += hit
                for b in limits:
                    chosen = recaller.fill(ranked, b)
                    inside = any(key in own for line in chosen for key in line.keys)
                    total[f"within{b}"] += inside
                    if b == budget_tokens:
                        row["within"] += inside
                        total["tokens"] += sum(line.candidate.tokens for line in chosen)
                        total["memories"] += len(chosen)
                row["items"] += 1
                total["items"] += 1
            if progress:
                progress(
                    f"{design}: {topic} within {budget_tokens} tokens {row['within'] / max(row['items'], 1):.3f}, "
                    f"recall@{ks[-1]} {row[f'hits@{ks[-1]}'] / max(row['items'], 1):.3f}"
                )
    n = max(int(total["items"]), 1)
    return {
        "items": int(total["items"]),
        "hit_within_tokens": {str(b): round(total[f"within{b}"] / n, 4) for b in limits},
        "mean_tokens": round(total["tokens"] / n, 1),
        "mean_memories": round(total["memories"] / n, 1),
        **{f"recall@{k}": round(total[f"hits@{k}"] / n, 4) for k in ks},
        "mean_search_ms": round(1000 * search_s / n, 2),
        "per_topic": {
            t: {"items": r["items"], f"within_{budget_tokens}": round(r["within"] / max(r["items"], 1), 4)}
            | {f"recall@{k}": round(r[f"hits@{k}"] / max(r["items"], 1), 4) for k in ks}
            for t, r in per_topic.items()
        },
    }


def write_report(result: dict[str, Any], json_path: str | Path, png_path: str | Path | None = None) -> None:
    """Write ``result`` as JSON, and a bar plot of each design's figures as PNG (needs matplotlib)."""
    Path(json_path).write_text(json.dumps(result, indent=2))
    if png_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    designs = list(result["designs"])
    metrics = [f"within {b}" for b in budgets(result["budget_tokens"])] + [f"recall@{k}" for k in result["ks"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(designs), 1)
    for d, design in enumerate(designs):
        d_ = result["designs"][design]
        values = [d_["hit_within_tokens"][m.split()[1]] if m.startswith("within") else d_[m] for m in metrics]
        ax.bar([x + d * width for x in range(len(metrics))], values, width, label=design)
    ax.set_xticks([x + width * (len(designs) - 1) / 2 for x in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of questions")
    ax.set_title(f"PrefEval {result['form']}, memory={result['memory']}, filler={result['filler']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)

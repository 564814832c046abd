"""The align stage's parts as functions of their input: prompt format, parser, each guard, the turn gate,
the cache. The aligner is a fake; the embedding model is the real one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from steer.methods.align.aligner import (
    END_OPT,
    START_OPT,
    AlignConfig,
    Aligner,
    aligner_prompt,
    missing_facts,
    parse_rewrite,
    shared_embedder,
    turn_gate,
)
from steer.methods.align.cache import Cached, RewriteCache
from steer.methods.align.stage import apply
from steer.storage.database import SqliteDatabase

QUESTION = "I'll be visiting Rome soon. What are some must-try local restaurants you'd recommend for me?"
GOOD = (
    "I'll be visiting Rome soon. What are some must-try local restaurants you'd recommend for me? "
    "Please list a few, with the dishes each is known for and the neighbourhood it is in."
)


def marked(text: str) -> str:
    return f"The Optimized Prompt:\n\n{START_OPT}\n{text}\n{END_OPT}"


def config(**kw: Any) -> AlignConfig:
    return AlignConfig.model_validate({"model": "fake", "timeout_s": 60, **kw})  # no test depends on speed


class FakeAligner:
    """Answers every aligner call with ``reply`` (a string, or a function of the request body)."""

    def __init__(self, reply: Any, delay: float = 0.0, finish: str = "stop") -> None:
        self.reply, self.delay, self.finish = reply, delay, finish
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.reply, Exception):
            raise self.reply
        text = self.reply(body) if callable(self.reply) else self.reply
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": self.finish}]
        }


@pytest.fixture(scope="module")
def embedder() -> Any:
    return shared_embedder(None)


def aligner(fake: FakeAligner, embedder: Any = None, cache: RewriteCache | None = None) -> Aligner:
    async def get() -> Any:
        if embedder is None:
            raise AssertionError("this test must not need the embedder")
        return embedder

    return Aligner(fake, get, cache)


# --- the prompt format and the parser --------------------------------------------------------------


def test_prompt_is_the_p_aligner_training_format_exactly():
    assert aligner_prompt("Tell me about tea.") == (
        "You are an expert prompt engineer. Please help me optimize this prompt to get better response:\n\n"
        "[The Start of Raw Prompt]\nTell me about tea.\n[The End of Raw Prompt]"
    )


def test_untrained_prompt_keeps_the_format_and_adds_principles_and_the_answer_format():
    text = aligner_prompt("Tell me about tea.", principles=True)
    assert text.startswith("You are an expert prompt engineer.")
    assert "[The Start of Raw Prompt]\nTell me about tea.\n[The End of Raw Prompt]" in text
    assert "Harmlessness" in text and "Math" in text and START_OPT in text and END_OPT in text


def test_parser_takes_the_text_between_the_optimized_prompt_markers():
    assert parse_rewrite(marked("  Explain tea.  ")) == "Explain tea."
    assert parse_rewrite(f"noise {START_OPT}\nA\n{END_OPT} trailing {END_OPT}") == "A"


@pytest.mark.parametrize(
    "text",
    [
        "Explain tea.",
        f"{START_OPT}\nExplain tea.",
        f"Explain tea.\n{END_OPT}",
        f"{START_OPT}\n \n{END_OPT}",
        f"{END_OPT} Explain tea. {START_OPT}",
    ],
)
def test_parser_fails_without_both_markers_or_without_text(text):
    assert parse_rewrite(text) is None


# --- the call --------------------------------------------------------------------------------------


async def test_aligner_is_called_greedily_with_a_bounded_token_budget(embedder):
    fake = FakeAligner(marked(GOOD))
    out = await aligner(fake, embedder).rewrite(QUESTION, config())
    assert out.decision == "applied" and out.rewrite == GOOD and out.reason == "ok"
    body = fake.calls[0]
    assert body["temperature"] == 0 and body["max_tokens"] <= 1024
    assert body["messages"] == [{"role": "user", "content": aligner_prompt(QUESTION)}]
    assert out.similarity is not None and out.similarity >= 0.6


# --- each guard ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "finish", "reason"),
    [
        ("Sure, here is a better prompt: Explain Rome.", "stop", "unparsed"),
        (f"{START_OPT}\nI'll be visiting Rome soon and want", "length", "too_long"),
        (marked(QUESTION + " Please add much more detail." * 40), "stop", "too_long"),
        (marked("Rome food?"), "stop", "too_short"),
        (marked(QUESTION), "stop", "unchanged"),
        (marked("[The Start of Raw Prompt]\n" + QUESTION), "stop", "echoed_prompt"),
    ],
)
async def test_guard_keeps_the_original(reply, finish, reason):
    out = await aligner(FakeAligner(reply, finish=finish)).rewrite(QUESTION, config(min_similarity=-1))
    assert (out.decision, out.reason, out.original) == ("kept", reason, QUESTION)


async def test_a_slow_aligner_times_out_and_the_reason_is_recorded():
    out = await aligner(FakeAligner(marked(GOOD), delay=5)).rewrite(QUESTION, config(rewrite_timeout_s=0.05))
    assert (out.decision, out.reason) == ("kept", "timeout") and "0.05" in (out.error or "")


async def test_a_failing_aligner_keeps_the_original():
    out = await aligner(FakeAligner(ConnectionError("refused"))).rewrite(QUESTION, config())
    assert (out.decision, out.reason) == ("kept", "aligner_error") and "refused" in (out.error or "")


async def test_a_rewrite_that_drifts_in_meaning_is_rejected(embedder):
    drift = "Write a short poem about the ocean at night, in the style of a sea shanty with a chorus."
    out = await aligner(FakeAligner(marked(drift)), embedder).rewrite(
        "How do I fix a flat bicycle tyre at home?", config(preserve=())
    )
    assert (out.decision, out.reason) == ("kept", "drift") and out.similarity is not None
    assert out.similarity < 0.6


@pytest.mark.parametrize(
    ("original", "rewrite", "reason", "lost"),
    [
        (
            "Why does `x = y[0]` fail here?",
            "Why does indexing fail here? Explain the cause.",
            "lost_code",
            "`x = y[0]`",
        ),
        ("Fix this:\n```py\nprint(1/0)\n```", "Please fix the code and explain the error.", "lost_code", "print"),
        ("Plan a 3 day trip for 1,200 dollars.", "Plan a short trip on a small budget.", "lost_numbers", "3"),
        ("Compare Rust and Go for web servers.", "Compare two languages for web servers.", "lost_names", "Rust"),
    ],
)
def test_facts_of_the_original_must_survive(original, rewrite, reason, lost):
    found = missing_facts(original, rewrite, ("code", "numbers", "names"))
    assert found is not None and found[0] == reason and any(lost in x for x in found[1])


def test_facts_kept_in_other_words_pass():
    original = "Plan a 3 day trip to Kyoto for 1,200 dollars using `itinerary.py`."
    rewrite = "Plan a detailed 3-day trip to kyoto for 1200 dollars; extend `itinerary.py` to print it."
    assert missing_facts(original, rewrite, ("code", "numbers", "names")) is None


async def test_lost_facts_are_reported_in_the_outcome():
    out = await aligner(FakeAligner(marked("Plan a trip to Japan for me, with a day-by-day schedule."))).rewrite(
        "Plan a 3 day trip to Kyoto for me please.", config(min_similarity=-1)
    )
    assert (out.decision, out.reason, out.missing) == ("kept", "lost_numbers", ["3"])


# --- which turns are rewritten ---------------------------------------------------------------------


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([user("thanks!")], "short_turn"),
        (
            [
                user("Tell me about tea."),
                {"role": "assistant", "content": "Tea is..."},
                user("What about its caffeine?"),
            ],
            "follow_up",
        ),
        (
            [
                user("Tell me about tea."),
                {"role": "assistant", "content": "Tea is..."},
                user("Can you make it a lot shorter and simpler please?"),
            ],
            "follow_up",
        ),
        (
            [
                user("Look up the weather in Paris today."),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"},
            ],
            "tool_result",
        ),
        (
            [
                user(
                    [
                        {"type": "text", "text": "What is in this picture here?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ]
                )
            ],
            "non_text",
        ),
        ([user("Write a haiku about the sea."), {"role": "assistant", "content": "Waves"}], "not_user_turn"),
        ([{"role": "system", "content": "You are a helpful assistant for travel questions."}], "not_user_turn"),
        ([], "no_user_turn"),
    ],
)
def test_turns_where_rewriting_hurts_are_left_alone(messages, reason):
    assert turn_gate(messages, config()) == reason


def test_a_self_contained_new_request_after_earlier_turns_is_rewritten():
    messages = [
        user("Tell me about tea."),
        {"role": "assistant", "content": "Tea is..."},
        user("Now recommend a good beginner book about Roman history for teenagers."),
    ]
    assert turn_gate(messages, config()) == "follow_up"  # "now" leads: leans on the conversation
    messages[-1] = user("Recommend a good beginner book about Roman history for teenagers.")
    gate = turn_gate(messages, config())
    assert not isinstance(gate, str) and gate.index == 2


def test_replace_rewrites_only_the_user_message_and_keeps_its_other_fields():
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q", "name": "ann"}]
    out = apply(messages, 1, "better q", config())
    assert out[0] == {"role": "system", "content": "sys"} and out[1] == {
        "role": "user",
        "content": "better q",
        "name": "ann",
    }
    assert messages[1]["content"] == "q"  # the client's list is not mutated
    parts = apply([user([{"type": "text", "text": "q"}])], 0, "better q", config())
    assert parts[0]["content"] == [{"type": "text", "text": "better q"}]


def test_guidance_adds_a_system_message_after_the_leading_ones_and_keeps_the_user_words():
    messages = [{"role": "system", "content": "sys"}, user("q")]
    out = apply(messages, 1, "better q", config(mode="guidance"))
    assert [m["role"] for m in out] == ["system", "system", "user"] and out[2]["content"] == "q"
    assert out[1]["content"].endswith("\nbetter q") and "clearer statement" in out[1]["content"]


def test_a_rewrite_is_never_applied_to_a_system_message():
    with pytest.raises(ValueError, match="user messages only"):
        apply([{"role": "system", "content": "sys"}, user("q")], 0, "x", config())


def test_policy_options_are_checked():
    with pytest.raises(ValidationError):
        config(min_length_ratio=3, max_length_ratio=2)
    with pytest.raises(ValidationError):
        config(mode="guidance", guidance="no placeholder")
    with pytest.raises(ValidationError):
        AlignConfig()  # the aligner model is required
    with pytest.raises(ValidationError):
        config(preserve=["colours"])


# --- the cache -------------------------------------------------------------------------------------


async def test_cache_answers_the_second_time_from_memory_then_from_sqlite(tmp_path, embedder):
    db = SqliteDatabase(tmp_path / "c.db")
    fake = FakeAligner(marked(GOOD))
    first = aligner(fake, embedder, RewriteCache(lambda: db))
    a = await first.rewrite(QUESTION, config(), "t1", "alice")
    b = await first.rewrite(QUESTION, config(), "t1", "alice")
    assert (a.cached, b.cached, b.reason, b.rewrite) == (False, True, "cache", GOOD) and len(fake.calls) == 1
    reopened = aligner(fake, embedder, RewriteCache(lambda: db))  # a fresh process: only SQLite holds it
    c = await reopened.rewrite(QUESTION, config(), "t1", "alice")
    assert c.cached and c.rewrite == GOOD and len(fake.calls) == 1
    await reopened.rewrite(QUESTION, config(trained=False), "t1", "alice")  # another prompt format
    await reopened.rewrite(QUESTION, config(), "t1", "bob")  # another user
    assert len(fake.calls) == 3
    assert db.execute("SELECT count(*) FROM align_cache WHERE instr(key, 'Rome') > 0")[0][0] == 0
    db.close()


async def test_failed_parses_are_cached_and_guards_rerun_on_a_hit(tmp_path):
    db = SqliteDatabase(tmp_path / "c.db")
    fake = FakeAligner("no markers at all")
    al = aligner(fake, None, RewriteCache(lambda: db))
    for _ in range(2):
        out = await al.rewrite(QUESTION, config(min_similarity=-1), "t1", "alice")
        assert (out.decision, out.reason) == ("kept", "unparsed")
    assert len(fake.calls) == 1
    db.close()


def test_forgetting_a_user_drops_their_cached_rewrites_only(tmp_path):
    db = SqliteDatabase(tmp_path / "c.db")
    cache = RewriteCache(lambda: db)
    for who in ("alice", "bob"):
        cache.put("t1", who, "m", "f", QUESTION, Cached(GOOD, "parsed"), persist=True)
    assert cache.forget("t1", "alice") == 1
    assert cache.get("t1", "alice", "m", "f", QUESTION) is None
    assert cache.get("t1", "bob", "m", "f", QUESTION) == Cached(GOOD, "parsed")
    db.close()


def test_memory_cache_is_bounded():
    cache = RewriteCache(lambda: None, size=2)
    for i in range(3):
        cache.put("t", "u", "m", "f", f"q{i}", Cached(f"r{i}", "parsed"), persist=False)
    assert cache.get("t", "u", "m", "f", "q0") is None and cache.get("t", "u", "m", "f", "q2") is not None


async def test_the_stage_reuses_the_memory_embedder_when_memory_has_loaded_one():
    from types import SimpleNamespace

    from steer.methods.align.stage import Align
    from steer.methods.memory.service import MemoryService
    from steer.methods.profiles.service import ProfileService
    from steer.server.metrics import Metrics
    from steer.settings import load_settings

    loaded = object()
    memory = MemoryService(load_settings(None), Metrics())
    memory._parts = (SimpleNamespace(embedder=loaded), None, None)  # type: ignore[assignment]
    services = SimpleNamespace(metrics=Metrics(), memory=memory, db=None)
    services.profiles = ProfileService(lambda: None, memory, None)  # type: ignore[arg-type]
    assert await Align(services)._embedder() is loaded  # type: ignore[arg-type]


async def test_the_stage_and_the_scorers_share_one_embedder_loaded_once_even_when_a_caller_gives_up(monkeypatch):
    import threading
    from types import SimpleNamespace

    from steer.methods.align.stage import Align
    from steer.methods.profiles.service import ProfileService
    from steer.server.metrics import Metrics

    loads: list[str | None] = []
    release = threading.Event()
    loaded = object()

    def load(model: str | None) -> object:
        loads.append(model)
        release.wait(5)
        return loaded

    monkeypatch.setattr("retrieval.embeddings.shared_embedder", load)
    memory = SimpleNamespace(loaded_embedder=lambda: None)  # the preference memory has loaded nothing
    services = SimpleNamespace(metrics=Metrics(), memory=memory, db=None)
    services.profiles = ProfileService(lambda: None, memory, None)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):  # a stage timing out while the model loads
        await asyncio.wait_for(services.profiles.embedder(), 0.05)
    stage = Align(services)  # type: ignore[arg-type]
    waiting = asyncio.gather(stage._embedder(), services.profiles.embedder())
    release.set()
    assert await waiting == [loaded, loaded]
    assert loads == [None]


# --- the evaluation's pieces -----------------------------------------------------------------------


def test_judging_in_both_orders_cancels_a_judge_that_always_picks_the_first_answer():
    from steer.evals.align import rewrite_score

    assert rewrite_score("A", "A") == 0.5  # position bias only
    assert rewrite_score("B", "A") == 1.0  # the rewrite won in both orders
    assert rewrite_score("A", "B") == 0.0
    assert rewrite_score(None, "C") == 0.5


def test_eval_prompts_come_from_a_file_or_round_robin_from_prefeval(tmp_path):
    from helpers import SHARED

    from steer.evals.align import load_prompts

    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "First one?"}\n{"prompt": "Second one?"}\n{"other": 1}\n')
    assert load_prompts(str(path), None, 0) == ["First one?", "Second one?"]
    data = SHARED / "data" / "prefeval"  # ../shared/data/prefeval, read in place
    if not (data / "explicit_preference").is_dir():
        pytest.skip("PrefEval data absent")
    prompts = load_prompts(None, str(data), 3)
    assert len(prompts) == 3 and len(set(prompts)) == 3  # three topics, one question each


def test_steer_eval_align_is_a_cli_command():
    from steer.cli import build_parser

    args = build_parser().parse_args(["eval", "align", "--limit", "2", "--set", "min_similarity=0.7"])
    assert args.eval == "align" and args.limit == 2 and args.set == ["min_similarity=0.7"]

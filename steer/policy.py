"""Per-user policies: YAML files under ``policies/`` that say which stages run, and how.

Each file holds one policy::

    name: concise
    extends: default            # inherit everything not set here (default: "default"; none: nothing)
    match:
      users: ["alice", "team-*"] # ids or globs
      tenants: ["acme"]
    stages:
      system_prompt: {text: "Answer in three sentences at most."}

A request gets the first of: a policy naming its user exactly, a policy whose glob matches it
(longest pattern first), a policy naming its tenant, then ``default``. Requests without a user
get ``anonymous`` (the default with every stage that needs a user turned off, unless a file
named ``anonymous`` says otherwise). Files are validated strictly: a typo is an error naming
the file, the field and its line. A bad reload keeps the last good set and logs why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from steer.auth import Identity
from steer.pipeline import StageConfig, stage_order, stages
from steer.settings import ConfigError

DEFAULT = "default"
ANONYMOUS = "anonymous"


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    extends: str | None = DEFAULT
    match: Match = Match()
    log_prompts: bool = False  # store raw prompts in the request log (off: only sizes and ids)
    stages: Any = Field(default=None)  # replaced by the per-stage model in policy_model()

    def stage_configs(self) -> list[tuple[str, StageConfig]]:
        """Enabled stages, in pipeline order (``steer.pipeline.stage_order``) within each phase."""
        out = []
        for name in sorted(type(self.stages).model_fields, key=stage_order):
            cfg = getattr(self.stages, name)
            if cfg is not None and cfg.enabled:
                out.append((name, cfg))
        return out


def policy_model() -> type[Policy]:
    """The Policy model with one typed, optional field per registered stage."""
    return _policy_model(tuple(stages.names()))


@lru_cache(maxsize=8)
def _policy_model(names: tuple[str, ...]) -> type[Policy]:
    fields: dict[str, Any] = {name: (stages.get(name).Config | None, None) for name in names}
    stage_model = create_model("PolicyStages", __config__=ConfigDict(extra="forbid", frozen=True), **fields)
    model: type[Policy] = create_model("Policy", __base__=Policy, stages=(stage_model, stage_model()))
    return model


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, or of its nearest parent that exists."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(key)), None)
            if nxt is None:
                key_node = next((k for k, _ in node.value if k.value == str(key)), None)
                return key_node.start_mark.line + 1 if key_node else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_policies(directory: str | Path) -> dict[str, Policy]:
    """Read and validate every ``*.yaml``/``*.yml`` directly in ``directory``; all errors at once."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such policy directory")
    raw: dict[str, tuple[Path, str, dict[str, Any]]] = {}
    errors: list[str] = []
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            errors.append(f"{path}: invalid YAML: {exc}".replace("\n", " "))
            continue
        if not isinstance(data, dict):
            errors.append(f"{path}: a policy file must hold a mapping")
            continue
        name = data.get("name") or path.stem
        data["name"] = name
        if name in raw:
            errors.append(f"{path}: policy name {name!r} is also used by {raw[name][0]}")
            continue
        raw[name] = (path, text, data)
    if DEFAULT not in raw and not errors:
        raw[DEFAULT] = (root / "default.yaml", "", {"name": DEFAULT, "extends": None})
    model = policy_model()
    policies: dict[str, Policy] = {}
    for name, (path, text, _) in raw.items():
        try:
            merged = _resolve_extends(name, raw, ())
        except ConfigError as exc:
            errors.append(f"{path}: {exc}")
            continue
        try:
            policies[name] = model.model_validate(merged)
        except ValidationError as exc:
            for e in exc.errors():
                loc = tuple(e["loc"])
                where = ".".join(str(p) for p in loc) or "(top level)"
                line = _line_of(text, loc) if text else None
                at = f":{line}" if line else ""
                errors.append(f"{path}{at}: {where}: {e['msg']}")
    if errors:
        raise ConfigError(f"{len(errors)} policy error(s) in {root}:\n" + "\n".join("  " + e for e in errors))
    return policies


def _resolve_extends(
    name: str, raw: dict[str, tuple[Path, str, dict[str, Any]]], seen: tuple[str, ...]
) -> dict[str, Any]:
    if name in seen:
        raise ConfigError(f"extends cycle: {' -> '.join((*seen, name))}")
    data = raw[name][2]
    parent = data.get("extends", DEFAULT if name != DEFAULT else None)
    if parent in (None, "none") or parent == name:
        return {**data, "extends": None}
    if parent not in raw:
        raise ConfigError(f"extends: unknown policy {parent!r}")
    base = _resolve_extends(parent, raw, (*seen, name))
    base = {k: v for k, v in base.items() if k not in ("match", "description")}
    return {**_merge(base, data), "extends": parent}


class PolicySet:
    """A validated set of policies, indexed for resolution."""

    def __init__(self, policies: dict[str, Policy]) -> None:
        self.policies = policies
        self._exact: dict[str, Policy] = {}
        self._globs: list[tuple[str, Policy]] = []
        self._tenants: dict[str, Policy] = {}
        for policy in policies.values():
            for pattern in policy.match.users:
                if any(c in pattern for c in "*?["):
                    self._globs.append((pattern, policy))
                else:
                    self._exact.setdefault(pattern, policy)
            for tenant in policy.match.tenants:
                self._tenants.setdefault(tenant, policy)
        self._globs.sort(key=lambda gp: -len(gp[0]))
        self._anonymous = self._make_anonymous()

    def _make_anonymous(self) -> Policy:
        if ANONYMOUS in self.policies:
            return self.policies[ANONYMOUS]
        default = self.policies[DEFAULT]
        off = {n: {"enabled": False} for n, _ in default.stage_configs() if stages.get(n).needs_user}
        data = _merge(default.model_dump(exclude_none=True), {"name": ANONYMOUS, "stages": off})
        return type(default).model_validate(data)

    def resolve(self, identity: Identity) -> Policy:
        user = identity.user
        if user is None:
            return self._anonymous
        policy = self._exact.get(user)
        if policy is not None:
            return policy
        for pattern, p in self._globs:
            if fnmatchcase(user, pattern):
                return p
        return self._tenants.get(identity.tenant) or self.policies[DEFAULT]


class PolicyStore:
    """The live policy set, reloaded when a file under the directory changes."""

    log = logging.getLogger("steer.policy")

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.current = PolicySet(load_policies(self.directory))
        self._stamp = self._snapshot()
        self.reloads = 0
        self.reload_errors = 0
        self.last_error: str | None = None

    def _snapshot(self) -> tuple[tuple[str, int, int], ...]:
        files = [*self.directory.glob("*.yaml"), *self.directory.glob("*.yml")]
        out = []
        for f in sorted(files):
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def check(self) -> bool:
        """Reload if anything changed; True when a new set was installed."""
        stamp = self._snapshot()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.current = PolicySet(load_policies(self.directory))
        except ConfigError as exc:
            self.reload_errors += 1
            self.last_error = str(exc)
            self.log.error("policy reload failed, keeping the last good policies:\n%s", exc)
            return False
        self.reloads += 1
        self.last_error = None
        self.log.info(
            "policies reloaded from %s: %s", self.directory, ", ".join(sorted(self.current.policies))
        )
        return True

    async def watch(self, interval: float = 1.0, on_reload: Callable[[str], None] | None = None) -> None:
        """Check the folder every ``interval`` seconds; ``on_reload("ok" | "error")`` after each attempt."""
        while True:
            await asyncio.sleep(interval)
            errors = self.reload_errors
            if await asyncio.to_thread(self.check):
                result = "ok"
            elif self.reload_errors > errors:
                result = "error"
            else:
                continue
            if on_reload is not None:
                on_reload(result)

    def resolve(self, identity: Identity) -> Policy:
        return self.current.resolve(identity)

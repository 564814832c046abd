"""Per-user policies: YAML files under ``policies/`` that say which stages run, and how.

Each file holds one policy::

    name: concise
    extends: default            # inherit everything not set here (default: "default"; none: nothing)
    match:
      users: ["alice", "team-*"] # user ids or globs ...
      tenants: ["acme"]          # ... within these tenants (exact names, or "*": every tenant)
    stages:
      system_prompt: {text: "Answer in three sentences at most."}

Matching. A policy that names ``users`` matches those users within its ``tenants`` only (both
must hold): acme's ``alice`` is not globex's ``alice``. When API keys are configured (several
tenants), a policy naming users but no tenant is an error at load time; ``tenants: ["*"]`` says
"these users in every tenant" explicitly. With no keys there is one tenant (``default``) and a
policy naming only users matches them there. A policy naming only ``tenants`` is for every user
of those tenants; one naming neither matches nobody (it can still be extended).

A request gets the first of: a policy naming its user id exactly, a policy whose glob matches its
user (longest pattern first, then pattern and policy name), a policy naming its tenant but no
users, a policy for every tenant naming no users, then ``default``; within the first two steps a
policy naming the request's tenant comes before one for every tenant. Two policies naming the
same user id, glob or tenant (without users) for the same tenant are an error: which one wins
would depend on file names. Requests without a user get ``anonymous`` (the default with every
stage that needs a user turned off, unless a file named ``anonymous`` says otherwise).
``PolicySet.explain`` says which policy a (tenant, user) gets and why (``steer policy check
--tenant T --user U``); resolution goes through it, so the explanation is the rule applied.

Files: every ``*.yaml``/``*.yml`` directly in the folder except hidden ones (names starting with
``.``: editors' lock links such as ``.#default.yaml``, swap and temporary files); editors' backups
(``default.yaml~``, ``#default.yaml#``) do not end in ``.yaml`` and are not read either. Files are
validated strictly: a typo is an error naming the file, the field and its line, and a file that
cannot be read (gone, a directory, too many open files) is an error naming the file. A bad reload
keeps the last good set, logs why and shows it in ``/readyz`` to admins; the watcher survives every
error, retries a failure caused by an unreadable file at its next check and otherwise waits for
the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from fnmatch import translate
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model

from steer.identity import Identity
from steer.pipeline.stage import StageConfig, stage_order, stages
from steer.settings import ConfigError

DEFAULT = "default"
ANONYMOUS = "anonymous"
EVERY_TENANT = "*"
GLOB_CHARS = "*?["


class PolicyError(ConfigError):
    """Policy files that do not load. ``unreadable``: some file could not be read (an OSError), so
    the same files may load at the next try."""

    def __init__(self, message: str, *, unreadable: bool = False) -> None:
        super().__init__(message)
        self.unreadable = unreadable


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
    _source: str = PrivateAttr("")  # the file it was read from, for explanations and errors

    @property
    def source(self) -> str:
        return self._source or "(built in)"

    def stage_config(self, name: str) -> Any:
        """The config this policy gives stage ``name``, enabled or not (None when it names none)."""
        return getattr(self.stages, name, None)

    def stage_configs(self) -> list[tuple[str, StageConfig]]:
        """Enabled stages, in pipeline order (``steer.pipeline.stage.stage_order``) within each phase."""
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


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in GLOB_CHARS)


def policy_files(directory: str | Path) -> list[Path]:
    """The policy files of a folder: ``*.yaml`` and ``*.yml`` directly in it, hidden names left out."""
    root = Path(directory)
    return sorted(p for p in (*root.glob("*.yaml"), *root.glob("*.yml")) if not p.name.startswith("."))


def _match_errors(match: Match, multi_tenant: bool) -> list[tuple[tuple[Any, ...], str]]:
    """What is wrong with a policy's ``match`` on its own: (location, message) pairs."""
    out: list[tuple[tuple[Any, ...], str]] = []
    for i, tenant in enumerate(match.tenants):
        if tenant != EVERY_TENANT and (is_glob(tenant) or not tenant):
            message = f'{tenant!r}: tenants are exact names, or "*" alone for every tenant'
            out.append((("match", "tenants", i), message))
    if match.users and not match.tenants and multi_tenant:
        out.append(
            (
                ("match", "users"),
                "names users but no tenant; API keys are configured, so the same user id can exist in "
                'several tenants: add `tenants: [<tenant>]`, or `tenants: ["*"]` for these users in every tenant',
            )
        )
    return out


def shipped_policies() -> Path:
    """The default policies that ship with steer: ``steer/policies/`` in an installed steer (package data,
    mapped from the checkout's top-level ``policies/`` by pyproject.toml), the checkout's ``policies/``
    itself when steer runs from its source tree. One set of files either way."""
    package = Path(__file__).resolve().parents[1]  # steer/
    installed = package / "policies"
    return installed if installed.is_dir() else package.parent / "policies"


def policy_dir(configured: str | Path | None) -> Path:
    """The policy folder to serve: the configured one (settings ``policies``, ``--policies``,
    ``STEER_POLICIES``), else ``./policies`` when there is one, else :func:`shipped_policies`."""
    if configured is not None:
        return Path(configured)
    local = Path("policies")
    return local if local.is_dir() else shipped_policies()


def load_policies(directory: str | Path, *, multi_tenant: bool = True) -> dict[str, Policy]:
    """Read and validate every policy file directly in ``directory`` (``policy_files``); all errors at once.

    ``multi_tenant``: API keys are configured, so a policy naming users must name its tenants too
    (the default, the strict rule); False for a single-tenant steer (no keys).
    """
    root = Path(directory)
    if not root.is_dir():
        raise PolicyError(f"{root}: no such policy directory")
    try:
        files = policy_files(root)
    except OSError as exc:
        raise PolicyError(f"{root}: cannot list the policy files: {exc}", unreadable=True) from exc
    raw: dict[str, tuple[Path, str, dict[str, Any]]] = {}
    errors: list[str] = []
    unreadable = False
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            errors.append(f"{path}: cannot read: {exc.strerror or exc}")
            unreadable = True
            continue
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

    def error(path: Path, text: str, loc: tuple[Any, ...], message: str) -> None:
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(text, loc) if text else None
        errors.append(f"{path}{f':{line}' if line else ''}: {where}: {message}")

    for name, (path, text, _) in raw.items():
        try:
            merged = _resolve_extends(name, raw, ())
        except ConfigError as exc:
            errors.append(f"{path}: {exc}")
            continue
        try:
            policy = model.model_validate(merged)
        except ValidationError as exc:
            for e in exc.errors():
                error(path, text, tuple(e["loc"]), e["msg"])
            continue
        problems = _match_errors(policy.match, multi_tenant)
        for loc, message in problems:
            error(path, text, loc, message)
        if not problems:
            policy._source = str(path) if text else ""
            policies[name] = policy
    if errors:
        raise PolicyError(
            f"{len(errors)} policy error(s) in {root}:\n" + "\n".join("  " + e for e in errors), unreadable=unreadable
        )
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


Choice = tuple[Policy, str]  # a policy and why it was chosen
Glob = tuple[Callable[[str], Any], Choice]  # a compiled pattern's match function and what it chooses


class _TenantRules:
    """Resolution for the users of one tenant: exact ids, then globs (in order), then the fallback."""

    __slots__ = ("exact", "fallback", "globs")

    def __init__(self, exact: dict[str, Choice], globs: list[Glob], fallback: Choice) -> None:
        self.exact = exact
        self.globs = globs
        self.fallback = fallback


class PolicySet:
    """A validated set of policies, indexed per tenant for resolution (dict lookups, then globs).

    ``multi_tenant`` as in ``load_policies``: with it, a policy naming users but no tenant is refused;
    without it, such a policy matches its users in every tenant (there is one).
    """

    def __init__(self, policies: dict[str, Policy], *, multi_tenant: bool = True) -> None:
        self.policies = policies
        self.multi_tenant = multi_tenant
        exact: dict[tuple[str, str], Choice] = {}  # (tenant or "*", user id)
        globs: dict[tuple[str, str], Choice] = {}  # (tenant or "*", pattern)
        tenant_only: dict[str, Choice] = {}  # tenant or "*"
        errors: list[str] = []

        def add(table: dict[Any, Choice], key: Any, choice: Choice, what: str) -> None:
            if key in table:
                other = table[key][0]
                errors.append(
                    f"{what} is named by both {other.name} ({other.source}) and {choice[0].name} "
                    f"({choice[0].source}): say which by naming it in one of them only"
                )
            else:
                table[key] = choice

        for policy in policies.values():
            where = f"policy {policy.name} ({policy.source})"
            problems = _match_errors(policy.match, multi_tenant)
            if problems:
                errors += [f"{policy.source}: {'.'.join(map(str, loc))}: {msg}" for loc, msg in problems]
                continue
            tenants = policy.match.tenants or ((EVERY_TENANT,) if policy.match.users else ())
            if EVERY_TENANT in tenants:
                tenants = (EVERY_TENANT,)
            for tenant in dict.fromkeys(tenants):
                scope = "every tenant" if tenant == EVERY_TENANT else f"tenant {tenant!r}"
                if not policy.match.tenants:
                    scope += " (no tenant named: no API keys, so one tenant)"
                if not policy.match.users:
                    reason = f"every user of {scope}: {where}; no policy names this user there"
                    add(tenant_only, tenant, (policy, reason), f"every user of {scope}")
                for user in dict.fromkeys(policy.match.users):
                    if is_glob(user):
                        reason = f"glob {user!r} for {scope} in {where} (the first matching glob, longest first)"
                        add(globs, (tenant, user), (policy, reason), f"glob {user!r} for {scope}")
                    else:
                        reason = f"user id {user!r} for {scope} in {where}"
                        add(exact, (tenant, user), (policy, reason), f"user id {user!r} for {scope}")
        if errors:
            raise PolicyError(f"{len(errors)} policy error(s):\n" + "\n".join("  " + e for e in errors))

        default = policies[DEFAULT]
        default_choice = (default, f"no policy names this user or tenant: the default ({default.source})")

        def rules(tenant: str) -> _TenantRules:
            scopes = (EVERY_TENANT, tenant)  # the tenant's own entries last: they replace every tenant's
            ids = {u: c for s in scopes for (t, u), c in exact.items() if t == s}
            matching = [(p, t, c) for (t, p), c in globs.items() if t in scopes]
            matching.sort(key=lambda ptc: (-len(ptc[0]), ptc[1] == EVERY_TENANT, ptc[0], ptc[2][0].name))
            compiled: list[Glob] = [(re.compile(translate(p)).match, c) for p, _, c in matching]
            fallback = tenant_only.get(tenant) or tenant_only.get(EVERY_TENANT) or default_choice
            return _TenantRules(ids, compiled, fallback)

        named = {t for t, _ in (*exact, *globs)} | set(tenant_only)
        self._any = rules(EVERY_TENANT)  # tenants no policy names
        self._tenants = {t: rules(t) for t in named if t != EVERY_TENANT}
        self._anonymous = self._make_anonymous()

    def _make_anonymous(self) -> Choice:
        if ANONYMOUS in self.policies:
            policy = self.policies[ANONYMOUS]
            return policy, f"no user in the request: the anonymous policy ({policy.source})"
        default = self.policies[DEFAULT]
        off = {n: {"enabled": False} for n, _ in default.stage_configs() if stages.get(n).needs_user}
        data = _merge(default.model_dump(exclude_none=True), {"name": ANONYMOUS, "stages": off})
        reason = "no user in the request: anonymous, the default without the stages that need a user"
        return type(default).model_validate(data), reason

    def explain(self, tenant: str, user: str | None) -> Choice:
        """The policy a request of ``tenant`` for ``user`` gets, and why."""
        if user is None:
            return self._anonymous
        rules = self._tenants.get(tenant, self._any)
        choice = rules.exact.get(user)
        if choice is not None:
            return choice
        for match, choice in rules.globs:
            if match(user):
                return choice
        return rules.fallback

    def resolve(self, identity: Identity) -> Policy:
        return self.explain(identity.tenant, identity.given_user)[0]


class PolicyStore:
    """The live policy set, reloaded when a policy file of the directory changes."""

    log = logging.getLogger("steer.policy")

    def __init__(self, directory: str | Path, *, multi_tenant: bool = True) -> None:
        self.directory = Path(directory)
        self.multi_tenant = multi_tenant
        self.current = self._load()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        with contextlib.suppress(OSError):  # unlisted: the first check reloads
            self._stamp = self._snapshot()
        self._failure: tuple[Any, str] | None = None  # the last failure reported: (snapshot, message)
        self.reloads = 0
        self.reload_errors = 0
        self.last_error: str | None = None

    def _load(self) -> PolicySet:
        return PolicySet(load_policies(self.directory, multi_tenant=self.multi_tenant), multi_tenant=self.multi_tenant)

    def _snapshot(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for f in policy_files(self.directory):
            try:
                st = f.stat()
            except OSError:
                out.append((str(f), -1, -1))  # a dangling link or a file going away: its state is "unreadable"
                continue
            out.append((str(f), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def check(self) -> bool:
        """Reload if anything changed; True when a new set was installed.

        A failure is reported (log, ``last_error``, ``reload_errors``) once per state of the folder.
        One caused by an unreadable file or folder is retried at the next check, whether or not the
        folder changed; any other waits for the next change.
        """
        try:
            stamp = self._snapshot()
        except OSError as exc:
            self._stamp = None  # reload at the next check that can list the folder (and clear the error)
            self._failed(None, f"{self.directory}: cannot list the policy files: {exc}")
            return False
        if stamp == self._stamp:
            return False
        try:
            current = self._load()
        except ConfigError as exc:
            self._stamp = None if getattr(exc, "unreadable", False) else stamp
            self._failed(stamp, str(exc))
            return False
        self.current = current
        self._stamp = stamp
        self._failure = None
        self.reloads += 1
        self.last_error = None
        self.log.info(
            "policies reloaded from %s: %s", self.directory, ", ".join(sorted(self.current.policies))
        )
        return True

    def _failed(self, stamp: Any, message: str, exc_info: bool = False) -> None:
        if self._failure == (stamp, message):
            return  # the same failure as at the last check: reported then
        self._failure = (stamp, message)
        self.reload_errors += 1
        self.last_error = message
        self.log.error("policy reload failed, keeping the last good policies:\n%s", message, exc_info=exc_info)

    async def watch(self, interval: float = 1.0, on_reload: Callable[[str], None] | None = None) -> None:
        """Check the folder every ``interval`` seconds; ``on_reload("ok" | "error")`` after each attempt.

        Nothing ends the loop but cancellation: an unexpected error is logged, counted as a failed
        reload and shown in ``last_error``, the last good set stays and the next check comes.
        """
        while True:
            await asyncio.sleep(interval)
            errors = self.reload_errors
            try:
                changed = await asyncio.to_thread(self.check)
            except Exception as exc:
                self._stamp = None  # try again at the next check
                self._failed(None, f"{self.directory}: policy reload failed: {type(exc).__name__}: {exc}", True)
                changed = False
            if changed:
                result = "ok"
            elif self.reload_errors > errors:
                result = "error"
            else:
                continue
            if on_reload is not None:
                try:
                    on_reload(result)
                except Exception:
                    self.log.exception("policy reload callback failed")

    def resolve(self, identity: Identity) -> Policy:
        return self.current.resolve(identity)

"""Validate wire payloads against the official OpenAPI document of the OpenAI API.

The document is pinned in ``spec/`` (origin, license and hash in ``spec/README.md``). Components
steer's endpoints answer with (names as the document spells them):

- ``CreateChatCompletionResponse``: ``POST /v1/chat/completions``, JSON answer.
- ``CreateChatCompletionStreamResponse``: one ``data:`` chunk of its event stream.
- ``Response``: ``POST /v1/responses``, JSON answer (the Responses API's response object).
- ``ResponseStreamEvent``: one ``data:`` event of its stream (a union of ``ResponseCreatedEvent``,
  ``ResponseTextDeltaEvent`` (``response.output_text.delta``), ``ResponseCompletedEvent``, ...,
  told apart by ``type``).
- ``ErrorResponse``: every error body, ``{"error": Error}`` with ``message``, ``type``,
  ``param`` and ``code`` all required (``param`` and ``code`` may be null).
- ``CreateEmbeddingResponse``: ``POST /v1/embeddings``.
- ``CreateCompletionResponse``: ``POST /v1/completions``.
- ``ListModelsResponse``: ``GET /v1/models``.
And the requests steer forwards: ``CreateChatCompletionRequest``, ``CreateResponse``,
``CreateEmbeddingRequest``, ``CreateCompletionRequest``.

Rules:
- The document is OpenAPI 3.1 (JSON Schema 2020-12) but still writes 3.0's ``nullable: true``;
  that is read as "null is allowed too": the schema becomes ``anyOf: [<schema>, {"type": "null"}]``
  (also beside ``$ref``, ``allOf``, ``enum``: the whole schema is the first branch), and
  ``nullable: false`` is dropped. No other change is made.
- ``$ref``s resolve inside the document through a ``referencing`` registry.
- The document is loaded once per process and each component's validator is built once.
- The schemas allow keys they do not name (most set no ``additionalProperties``), so an
  extra key passes; a missing required key, a wrong type or a value outside an enum fails.
- A failure raises :class:`ConformanceError` (an ``AssertionError``) that names the component
  and, for each problem, the path in the payload (``$.choices[0].message.refusal``). In a
  union (``anyOf``/``oneOf``), the branch whose discriminator (``type``, ``object``, ``role``)
  matches the payload is the one explained.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parent / "spec" / "openai-openapi.json"
BASE_URI = "urn:openai-openapi"
# Keywords whose value is one schema, a list of schemas, or a map of names to schemas (JSON Schema
# 2020-12, core and applicator vocabularies): the places a nested schema can sit.
ONE_SCHEMA = (
    "items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
    "unevaluatedItems", "unevaluatedProperties", "additionalItems",
)  # fmt: skip
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
# Properties that name which branch of a union an object is, when the union states none.
DISCRIMINATORS = ("type", "object", "role")
DONE = "[DONE]"


class ConformanceError(AssertionError):
    """A payload that does not match its component: ``problems`` holds ``(path, message)`` pairs."""

    def __init__(self, component: str, problems: list[tuple[str, str]], where: str = "") -> None:
        self.component, self.problems = component, problems
        lines = [f"  {path}: {message}" for path, message in problems]
        super().__init__(f"{where}not a valid {component}:\n" + "\n".join(lines))


def allow_null(schema: Any) -> Any:
    """``schema`` with every ``nullable: true`` rewritten to an ``anyOf`` with ``{"type": "null"}``."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ONE_SCHEMA:
            out[key] = allow_null(value)
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [allow_null(v) for v in value]
        elif key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: allow_null(v) for name, v in value.items()}
        else:
            out[key] = value
    nullable = out.pop("nullable", False)
    if nullable is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def json_path(path: Iterable[Any]) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


class FailedUnion:
    """A failed ``anyOf``/``oneOf`` over objects, its branches told apart by a discriminator property."""

    def __init__(self, error: ValidationError) -> None:
        stated = error.schema.get("discriminator") if isinstance(error.schema, dict) else None
        named = stated.get("propertyName") if isinstance(stated, dict) else None
        self.names: tuple[str, ...] = (named,) if isinstance(named, str) else DISCRIMINATORS
        self.branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context or ():
            self.branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def mismatch(self, sub: ValidationError) -> bool:
        return sub.validator in ("enum", "const") and len(sub.relative_path) == 1 and sub.relative_path[0] in self.names

    def matching(self) -> list[list[ValidationError]]:
        return [errs for errs in self.branches.values() if not any(self.mismatch(e) for e in errs)]

    def allowed(self) -> list[str]:
        values: list[Any] = []
        for errs in self.branches.values():
            for e in filter(self.mismatch, errs):
                values += e.validator_value if e.validator == "enum" else [e.validator_value]
        return sorted(map(str, values))


def explain(error: ValidationError) -> list[tuple[str, str]]:
    """The deepest useful ``(path, message)`` pairs for ``error``.

    In a failed union over objects, the branch whose discriminator matches the payload is explained
    (each of its errors); a discriminator that matches no branch is itself the problem.
    """
    if error.validator in ("anyOf", "oneOf") and error.context and isinstance(error.instance, dict):
        union = FailedUnion(error)
        stated = [n for n in union.names if n in error.instance]
        matching = union.matching()
        if stated and len(matching) == 1:
            return [pair for sub in matching[0] for pair in explain(sub)]
        if stated and not matching and union.allowed():
            where = json_path([*error.absolute_path, stated[0]])
            return [(where, f"{error.instance[stated[0]]!r} is not one of {union.allowed()}")]
    if error.context and error.validator in ("anyOf", "oneOf"):
        deeper = best_match(error.context)
        if deeper is not None:
            return (
                explain(deeper)
                if deeper.validator in ("anyOf", "oneOf") and deeper.context
                else [(json_path(deeper.absolute_path), deeper.message)]
            )
    return [(json_path(error.absolute_path), error.message)]


class OpenAPISpec:
    """The loaded document: one validator per component, built on first use."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.validators: dict[str, Draft202012Validator] = {}

    @classmethod
    def load(cls, path: Path = SPEC) -> OpenAPISpec:
        document = json.loads(path.read_text())
        schemas = document["components"]["schemas"]
        document["components"]["schemas"] = {name: allow_null(s) for name, s in schemas.items()}
        return cls(document)

    @functools.cached_property
    def registry(self) -> Registry[Any]:
        resource: Resource[Any] = Resource.from_contents(self.document, default_specification=DRAFT202012)
        registry: Registry[Any] = Registry().with_resource(BASE_URI, resource)
        return registry

    @property
    def components(self) -> dict[str, Any]:
        schemas: dict[str, Any] = self.document["components"]["schemas"]
        return schemas

    def validator(self, component: str) -> Draft202012Validator:
        if component not in self.validators:
            if component not in self.components:
                close = difflib.get_close_matches(component, self.components, n=3)
                raise KeyError(f"no component {component!r} in the OpenAPI document; close: {close}")
            ref = {"$ref": f"{BASE_URI}#/components/schemas/{component}"}
            self.validators[component] = Draft202012Validator(ref, registry=self.registry)
        return self.validators[component]

    def problems(self, instance: Any, component: str) -> list[tuple[str, str]]:
        """Each way ``instance`` fails ``component`` as ``(path, message)``, by path; empty when valid."""
        errors = self.validator(component).iter_errors(instance)
        return sorted({pair for error in errors for pair in explain(error)})

    def validate(self, instance: Any, component: str, where: str = "") -> None:
        problems = self.problems(instance, component)
        if problems:
            raise ConformanceError(component, problems, where)


@functools.cache
def spec() -> OpenAPISpec:
    """The pinned document, loaded on first use."""
    return OpenAPISpec.load()


def validate(instance: Any, component: str) -> None:
    """Raise :class:`ConformanceError` unless ``instance`` is a valid ``component``."""
    spec().validate(instance, component)


def validate_stream(events: Iterable[str | bytes | Mapping[str, Any]], component: str) -> list[dict[str, Any]]:
    """Validate each SSE ``data`` payload of a stream as ``component``; return them parsed.

    Payloads are JSON text (or already parsed objects). ``[DONE]``, the chat stream's end mark,
    may only come last. An empty stream fails.
    """
    payloads = list(events)
    if not payloads:
        raise ConformanceError(component, [("$", "the stream has no events")])
    parsed: list[dict[str, Any]] = []
    for index, payload in enumerate(payloads):
        where = f"event {index} of {len(payloads)}: "
        if isinstance(payload, bytes):
            payload = payload.decode()
        if isinstance(payload, str):
            if payload.strip() == DONE:
                if index != len(payloads) - 1:
                    raise ConformanceError(component, [("$", f"{DONE} before the end of the stream")], where)
                continue
            try:
                payload = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise ConformanceError(component, [("$", f"not JSON: {exc}")], where) from exc
        payload = dict(payload)
        spec().validate(payload, component, where)
        parsed.append(payload)
    return parsed

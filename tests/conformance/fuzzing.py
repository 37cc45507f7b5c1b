"""What the schemathesis conformance tests share: OpenAI's reference specs, the adjustments every one
of them needs, and the checks each generated request's answer must pass.

``tests/conformance/test_conformance.py`` (Assistants), ``tests/conformance/test_files_conformance.py`` and
``tests/conformance/test_responses_conformance.py`` build their specs from these pieces.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
"""OpenAI's specs, beside the repository (they are not ours to ship)."""
ENVELOPE_KEYS = {"message", "type", "param", "code"}
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
"""OpenAI's rule for function and schema names, stated in the spec's prose only."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

ERROR_RESPONSE = {
    "description": "OpenAI's error envelope.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


@functools.cache
def _read(path: Path) -> str:
    return path.read_text()


def reference_spec(name: str) -> dict[str, Any]:
    """A fresh copy of one of OpenAI's specs, or a skip when it is not there."""
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"OpenAI's OpenAPI spec (shared/reference/{name}) is not available")
    loaded: dict[str, Any] = yaml.safe_load(_read(path))
    return loaded


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_data(schema: dict[str, Any]) -> dict[str, Any]:
    """A server-sent event's ``data``: text holding JSON that matches ``schema``."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def sse_event(names: list[str] | None, data: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event, as schemathesis reads it: ``{"event": name, "data": text}``."""
    properties: dict[str, Any] = {"data": data}
    if names is not None:
        properties["event"] = {"enum": names}
    return {"type": "object", "required": ["event", "data"], "properties": properties}


def nullable(schema: dict[str, Any], *fields: str) -> None:
    """Let ``fields`` of an object schema also be null."""
    for name in fields:
        if name in schema.get("properties", {}):
            schema["properties"][name] = {"anyOf": [schema["properties"][name], {"type": "null"}]}


def close_objects(schema: Any, schemas: dict[str, Any], seen: set[str]) -> None:
    """Set ``additionalProperties: false`` on every object schema below ``schema`` that leaves it open."""
    if isinstance(schema, list):
        for item in schema:
            close_objects(item, schemas, seen)
        return
    if not isinstance(schema, dict):
        return
    reference = schema.get("$ref")
    if isinstance(reference, str):
        name = reference.rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            close_objects(schemas[name], schemas, seen)
        return
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for key, value in schema.items():
        if key != "properties":
            close_objects(value, schemas, seen)
    for value in schema.get("properties", {}).values():
        close_objects(value, schemas, seen)


def operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        operation
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "responses" in operation
    ]


def adjust(spec: dict[str, Any], *, close_requests: bool = True) -> None:
    """What every OpenAI spec says less of than the service did, adjusted in place."""
    schemas = spec["components"]["schemas"]
    # The envelope has exactly these four keys; nothing else may leak into an error body.
    schemas["Error"]["additionalProperties"] = False
    schemas["ErrorResponse"]["additionalProperties"] = False
    for operation in operations(spec):
        # The range of ``limit`` is in the spec's prose only.
        for parameter in operation.get("parameters", []):
            if parameter.get("name") == "limit" and parameter.get("in") == "query":
                parameter["schema"].update(minimum=1, maximum=100)
        # The service refuses unknown request fields ("Unrecognized request argument supplied"),
        # but the spec leaves most nested request objects open, so "valid" bodies would carry them.
        request = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if request and close_requests:
            close_objects(request["schema"], schemas, set())
        # The spec lists few errors; the service also answers bad input (400), a wrong key (401,
        # with a key configured) and unknown ids (404), always in the error envelope.
        responses = operation["responses"]
        for status in ("400", "401", "404"):
            responses.setdefault(status, ERROR_RESPONSE)


def fuzz(examples: int, **strategies: Any) -> Callable[[Callable[..., None]], Callable[[], None]]:
    """``@given(**strategies)`` with the settings every conformance test runs at."""

    def decorate(test: Callable[..., None]) -> Callable[[], None]:
        run: Callable[[], None] = settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(given(**strategies)(test))
        return run

    return decorate


def check_answer(case: Any, response: Any, checks: list[Any] = CHECKS) -> None:
    """Below 500, documented, matching the spec; and an error only in OpenAI's envelope."""
    assert response.status_code < 500, f"{response.text}\n{case.as_curl_command()}"
    case.validate_response(response, checks=checks)
    if response.status_code >= 400:
        assert_envelope(response)


def assert_envelope(response: httpx.Response | Any) -> None:
    error = response.json()["error"]
    assert set(error) == ENVELOPE_KEYS and error["message"], error


# --- hostile text and depth, planted in generated bodies ------------------------------------------

HOSTILE_TEXT = ["\udfff", "a\ud800b", "\udbff\udbff", "\x00", "ok\x00"]
"""Strings no reply or database can carry: lone surrogates (sent as JSON ``"\\udfff"`` escapes) and NUL."""
TOO_DEEP = 70
"""Levels of nesting past the server's limit for request bodies (64)."""

HOSTILITIES = [*HOSTILE_TEXT, "key", "deep"]


def hostility(case: Any) -> tuple[int, str] | None:
    """What to plant in a generated body: nothing in two cases of three, else one hostile string,
    key or nesting (see :func:`plant`). Derived from the body, not drawn: an extra draw would change
    every example hypothesis generates after it."""
    if not isinstance(case.body, dict):
        return None
    digest = zlib.crc32(json.dumps(case.body, sort_keys=True, default=str).encode())
    if digest % 3:
        return None
    return digest >> 8, HOSTILITIES[(digest >> 2) % len(HOSTILITIES)]


def _hostile_already(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_hostile_already(k) or _hostile_already(v) for k, v in value.items())
    return isinstance(value, list) and any(_hostile_already(v) for v in value)


def _leaves(value: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Paths to every string in ``value`` (and to every object, as a place for a key)."""
    if isinstance(value, str):
        return [path]
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        found.append((*path, None))
        for key, item in value.items():
            found += _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _leaves(item, (*path, index))
    return found


def param_of(path: tuple[Any, ...]) -> str | None:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or None


def plant(case: Any) -> tuple[str | None, str] | None:
    """Plant one hostile thing (see :func:`hostility`) in ``case.body``: the ``param`` its refusal
    must name and how (``"exact"`` or ``"prefix"``), or ``None`` when nothing was planted."""
    chosen = hostility(case)
    if chosen is None or _hostile_already(case.body):
        return None  # (schemathesis generates NUL itself: such a body is refused as it is)
    pick, what = chosen
    strings = [p for p in _leaves(case.body, ()) if p[-1:] != (None,)]
    objects = [p[:-1] for p in _leaves(case.body, ()) if p[-1:] == (None,)]
    if what in ("key", "deep") or not strings:
        path = objects[pick % len(objects)]
        target: Any = case.body
        for step in path:
            target = target[step]
        if what == "deep":
            nested: Any = "x"
            for _ in range(TOO_DEEP):
                nested = [nested]
            target["deep"] = nested
            return param_of((*path, "deep")), "prefix"
        target["bad\udfffkey"] = "v"
        return param_of(path), "exact"
    path = strings[pick % len(strings)]
    target = case.body
    for step in path[:-1]:
        target = target[step]
    text: str = target[path[-1]]
    middle = pick % (len(text) + 1)
    target[path[-1]] = text[:middle] + what + text[middle:]
    return param_of(path), "exact"


def check_refused(response: Any, planted: tuple[str | None, str], curl: str) -> None:
    """A planted request is refused with a 400 that names the planted parameter."""
    assert response.status_code == 400, f"{response.text}\n{curl}"
    assert_envelope(response)
    param, how = planted
    named = response.json()["error"]["param"]
    if how == "exact":
        assert named == param, (named, param, curl)
    else:  # too deep: named where the limit was crossed, or at the schema it was crossed in
        assert param is not None and named is not None, (named, param, curl)
        assert named.startswith(param) or param.startswith(named), (named, param, curl)

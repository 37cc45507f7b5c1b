"""JSON schema → bounded GBNF grammar, and a validator for what those grammars guarantee.

Local models call functions and write ``response_format`` JSON under a grammar (llama.cpp's
constrained decoding). Schemas are bounded first (arrays get ``maxItems``, strings ``maxLength``,
free-form JSON a depth and size limit) so decoding always ends, and what was decoded is checked
against the schema. Pure Python: usable by any local model runtime that takes GBNF.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from threadline.domain.ports.models import ProviderError

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_LENGTH",
    "JSON_MAX_TOKENS",
    "bound_schema",
    "json_object_grammar",
    "schema_grammar",
    "schema_violation",
]

DEFAULT_MAX_ITEMS = 8
"""``maxItems`` given to arrays whose schema sets none, so constrained decoding cannot loop forever."""
DEFAULT_MAX_LENGTH = 200
"""``maxLength`` given to free strings whose schema sets none, for the same reason."""
FREE_JSON_DEPTH = 3
"""Nesting limit for schema-less JSON (``{"type": "object"}``, ``json_object`` mode)."""
FREE_JSON_MEMBERS = 8
"""Member/element limit per object or array in schema-less JSON."""
JSON_MAX_TOKENS = 2048
"""Backstop on tokens decoded under a JSON grammar when the request sets no ``max_tokens``."""

_STRING_TYPES_WITH_OWN_SHAPE = ("enum", "const", "pattern", "format")


def bound_schema(schema: Any) -> Any:
    """A copy of ``schema`` in which every array and free string has an upper size bound.

    Also rewrites what llama.cpp's converter would otherwise leave unbounded or drop: ``type`` lists
    become ``anyOf`` (the converter keeps only the bare types, losing ``maxLength`` and the like) and
    ``additionalProperties`` next to ``properties`` is dropped (only the declared properties are then
    generated, which still fits the schema).
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = dict(schema)
    schema_type = out.get("type")
    if isinstance(schema_type, list):
        rest = {k: v for k, v in out.items() if k != "type"}
        return {"anyOf": [bound_schema({**rest, "type": t}) for t in schema_type]}

    for key in ("properties", "$defs", "definitions", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {name: bound_schema(sub) for name, sub in out[key].items()}
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [bound_schema(sub) for sub in out[key]]
    if isinstance(out.get("items"), list):
        out["items"] = [bound_schema(sub) for sub in out["items"]]
    elif isinstance(out.get("items"), dict):
        out["items"] = bound_schema(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = bound_schema(out["additionalProperties"])

    if "properties" in out:
        out.pop("additionalProperties", None)
    is_array = schema_type == "array" or (schema_type is None and ("items" in out or "prefixItems" in out))
    if is_array and "maxItems" not in out:
        out["maxItems"] = max(DEFAULT_MAX_ITEMS, int(out.get("minItems", 0)))
    is_free_string = schema_type == "string" and not any(k in out for k in _STRING_TYPES_WITH_OWN_SHAPE)
    if is_free_string and "maxLength" not in out:
        out["maxLength"] = max(DEFAULT_MAX_LENGTH, int(out.get("minLength", 0)))
    return out


# JSON forbids raw control characters in strings; llama.cpp's converter allows them, so a model that
# decodes a newline inside a string would produce unparseable JSON. This is the converter's ``char``
# rule with control characters excluded (as in llama.cpp's own json.gbnf).
_SAFE_CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'

_GENERIC_SUPPORT_RULES = {
    "space": '" "?',
    "char": _SAFE_CHAR_RULE,
    "string": rf'"\"" char{{0,{DEFAULT_MAX_LENGTH}}} "\"" space',
    "integral-part": "[0-9] | [1-9] [0-9]{0,15}",
    "decimal-part": "[0-9]{1,16}",
    "number": '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space',
    "boolean": '("true" | "false") space',
    "null": '"null" space',
}

_RULE_LINE = re.compile(r"^([A-Za-z0-9-]+) ::= (.*)$")
# The converter's rule for ``additionalProperties`` members: ``kv ( "," space kv )*`` (unbounded).
_UNBOUNDED_KVS = re.compile(r'^(\S+) \( "," space (\S+) \)\*$')


def _generic_json_rules() -> dict[str, str]:
    """Depth- and size-limited rules for schema-less JSON: ``gj-oN``/``gj-aN``/``gj-vN``."""
    rules = dict(_GENERIC_SUPPORT_RULES)
    scalars = "string | number | boolean | null"
    more = FREE_JSON_MEMBERS - 1
    rules["gj-v0"] = scalars
    for depth in range(1, FREE_JSON_DEPTH + 1):
        inner = f"gj-v{depth - 1}"
        member = f'string ":" space {inner}'
        rules[f"gj-o{depth}"] = f'"{{" space ( {member} ( "," space {member} ){{0,{more}}} )? "}}" space'
        rules[f"gj-a{depth}"] = f'"[" space ( {inner} ( "," space {inner} ){{0,{more}}} )? "]" space'
        rules[f"gj-v{depth}"] = f"gj-o{depth} | gj-a{depth} | {scalars}"
    return rules


def _harden_grammar(grammar: str) -> str:
    """Make a grammar from llama.cpp's converter safe: valid JSON strings, no unbounded repetition."""
    rules: dict[str, str] = {}
    for line in grammar.splitlines():
        if not line.strip():
            continue
        match = _RULE_LINE.match(line)
        if match is None:
            raise ProviderError(f"Unexpected line in a generated grammar: {line!r}")
        rules[match.group(1)] = match.group(2)

    if "char" in rules:
        rules["char"] = _SAFE_CHAR_RULE
    if "string" in rules:
        rules["string"] = _GENERIC_SUPPORT_RULES["string"]
    generic_targets = {"object": "o", "array": "a", "value": "v"}
    if any(name in rules for name in generic_targets):
        for name, rule in _generic_json_rules().items():
            rules.setdefault(name, rule)
        rules.update({"char": _SAFE_CHAR_RULE, "string": _GENERIC_SUPPORT_RULES["string"]})
        for name, kind in generic_targets.items():
            if name in rules:
                rules[name] = f"gj-{kind}{FREE_JSON_DEPTH}"
    for name, rule in rules.items():
        kvs = _UNBOUNDED_KVS.match(rule)
        if kvs is not None and kvs.group(1) == kvs.group(2):
            rules[name] = f'{kvs.group(1)} ( "," space {kvs.group(1)} ){{0,{FREE_JSON_MEMBERS - 1}}}'
    return "\n".join(f"{name} ::= {rule}" for name, rule in rules.items()) + "\n"


def schema_grammar(schema: dict[str, Any]) -> str:
    """A GBNF grammar accepting JSON that fits ``schema`` (bounded by :func:`bound_schema`)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(json.dumps(bound_schema(schema)))
    except Exception as exc:  # the converter asserts and raises freely on schemas it cannot handle
        raise ProviderError(f"Unsupported JSON schema for constrained decoding: {exc}") from exc
    return _harden_grammar(grammar)


def json_object_grammar() -> str:
    return schema_grammar({"type": "object"})


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_violation(value: Any, schema: Any, *, root: Any = None, path: str = "$") -> str | None:
    """Why ``value`` does not fit ``schema``, or ``None`` if it does.

    Covers the subset the grammars enforce: ``type``, ``properties``, ``required``,
    ``additionalProperties``, ``items``/``prefixItems``, ``enum``, ``const``, ``minItems``/``maxItems``,
    ``minLength``/``maxLength``, ``anyOf``/``oneOf``/``allOf`` and local ``$ref``. Other keywords
    (numeric ranges, ``pattern``, ...) are not checked.
    """
    if not isinstance(schema, dict):
        return None
    root = schema if root is None else root
    if isinstance(schema.get("$ref"), str):
        target = _resolve_ref(root, schema["$ref"])
        if target is None:
            return f"{path}: cannot resolve {schema['$ref']}"
        return schema_violation(value, target, root=root, path=path)

    schema_type = schema.get("type")
    if schema_type is not None:
        types = schema_type if isinstance(schema_type, list) else [schema_type]
        if not any(_JSON_TYPES.get(t, lambda _v: True)(value) for t in types):
            return f"{path}: expected {' or '.join(types)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {value!r} is not one of {schema['enum']!r}"
    if "const" in schema and value != schema["const"]:
        return f"{path}: {value!r} is not {schema['const']!r}"
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            matches = [s for s in schema[key] if schema_violation(value, s, root=root, path=path) is None]
            if not matches or (key == "oneOf" and len(matches) > 1):
                return f"{path}: does not match exactly the {key} alternatives"
    for sub in schema.get("allOf") or []:
        if (problem := schema_violation(value, sub, root=root, path=path)) is not None:
            return problem

    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                return f"{path}: missing required property {name!r}"
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            sub_path = f"{path}.{name}"
            if name in properties:
                problem = schema_violation(item, properties[name], root=root, path=sub_path)
            elif extra is False:
                problem = f"{path}: unexpected property {name!r}"
            else:
                problem = schema_violation(item, extra, root=root, path=sub_path)
            if problem is not None:
                return problem
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{path}: fewer than {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{path}: more than {schema['maxItems']} items"
        prefix = schema.get("prefixItems") or (
            schema["items"] if isinstance(schema.get("items"), list) else []
        )
        rest = schema.get("items") if isinstance(schema.get("items"), dict) else None
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else rest
            if sub is not None and (problem := schema_violation(item, sub, root=root, path=f"{path}[{i}]")):
                return problem
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{path}: shorter than {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path}: longer than {schema['maxLength']} characters"
    return None


def _resolve_ref(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return None
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node

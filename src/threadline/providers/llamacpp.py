"""The embedded model provider: llama.cpp running inside the server process.

This is what lets a user with no API key and no model server get real answers. A GGUF model file (by
default SmolLM2-135M-Instruct, see :mod:`threadline.providers.embedded`) is loaded lazily with
``llama-cpp-python`` and driven token by token in a worker thread: tokens reach the async consumer as
they are decoded, the event loop never blocks, generations on one model are serialised, and a consumer
that goes away stops the decoding at the next token.

Small local models cannot call functions on their own, so calls are made under constraints. The tools
are described in the system prompt and the model picks between answering and calling one of them from a
closed set of choices (its reply restricted to the choices' tokenizations); the arguments are then
decoded under a grammar (GBNF, llama.cpp's constrained decoding) built from the function's JSON schema. Schemas are bounded first
(arrays get ``maxItems``, strings ``maxLength``, free-form JSON a depth and size limit) so decoding
always ends, and the decoded arguments are checked against the schema. ``response_format`` JSON modes
use the same grammars for the answer text.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import re
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from threadline.providers.base import (
    ChatMessage,
    Finish,
    ModelEvent,
    ModelRequest,
    ProviderError,
    TextDelta,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_LENGTH",
    "LlamaCppProvider",
    "bound_schema",
    "default_threads",
    "plain_messages",
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

DEFAULT_TEMPERATURE = 1.0  # the Assistants API's defaults
DEFAULT_TOP_P = 1.0
DEFAULT_REPEAT_PENALTY = 1.1
# A small local model can ramble until its context is full; without a limit from the run, stop at
# this many tokens (the run's message then ends as if the model had stopped).
DEFAULT_ANSWER_TOKENS = 1024
"""Applied to free text only: tiny models loop at low temperature without it. Never under a grammar,
where penalising repeated tokens (quotes, braces) would fight the JSON syntax."""

# ChatML, for GGUF files that carry no chat template of their own.
_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


# --------------------------------------------------------------------------------------------------
# JSON schema → bounded GBNF grammar, and the validator for what the grammar guarantees
# --------------------------------------------------------------------------------------------------

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


def _json_object_grammar() -> str:
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


# --------------------------------------------------------------------------------------------------
# Prompt rendering
# --------------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Chat-completions content (a string or a list of parts) as plain text; non-text parts dropped."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict) and "text" in part]
        return "\n".join(t for t in texts if isinstance(t, str))
    return str(content)


def plain_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Messages as ``system``/``user``/``assistant`` text any chat template can render.

    Small models' templates know nothing of tool calls, so an assistant's calls become
    ``Called name({...})`` and a tool's output becomes a user turn ``Result of name: ...``.
    Consecutive turns of one role are merged, which strict templates (alternating roles) require.
    """
    names_by_id: dict[str, str] = {}
    out: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role")
        text = _content_text(message.get("content"))
        if role in ("system", "developer"):
            role, body = "system", text
        elif role == "assistant":
            lines = [text] if text else []
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                name = str(function.get("name", ""))
                if call.get("id"):
                    names_by_id[str(call["id"])] = name
                lines.append(f"Called {name}({function.get('arguments', '')})")
            body = "\n".join(lines)
        elif role in ("tool", "function"):
            name = message.get("name") or names_by_id.get(
                str(message.get("tool_call_id", "")), "the function"
            )
            role, body = "user", f"Result of {name}: {text}"
        else:
            role, body = "user", text
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + body
        else:
            out.append({"role": str(role), "content": body})
    return out


def _function_specs(request: ModelRequest) -> list[dict[str, Any]]:
    specs = []
    for tool in request.tools:
        if tool.get("type", "function") == "function" and isinstance(tool.get("function"), dict):
            specs.append(tool["function"])
    return specs


def _parameters(spec: dict[str, Any]) -> dict[str, Any]:
    parameters = spec.get("parameters")
    return parameters if isinstance(parameters, dict) and parameters else {"type": "object", "properties": {}}


def _with_system_text(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    out = [dict(m) for m in messages]
    if out and out[0]["role"] == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{text}" if out[0]["content"] else text
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


_ANSWER_CHOICE = "Answer"
_CALL_CHOICE = "Call "


_WORD = re.compile(r"[a-z0-9]{4,}")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
_COMMON = frozenset(
    {"what", "that", "this", "with", "have", "from", "your", "please", "could", "would", "about"}
)


def _terms(text: str) -> set[str]:
    """Words of four letters or more, and pairs of adjacent CJK characters (no spaces to split on)."""
    lowered = text.lower().replace("_", " ")
    terms = {w for w in _WORD.findall(lowered) if w not in _COMMON}
    for run in _CJK.findall(lowered):
        terms.update(run[i : i + 2] for i in range(len(run) - 1))
    return terms


def _schema_text(schema: Any) -> str:
    if isinstance(schema, dict):
        parts = [str(schema.get("description", ""))]
        parts += [f"{key} {_schema_text(value)}" for key, value in (schema.get("properties") or {}).items()]
        parts.append(_schema_text(schema.get("items")))
        return " ".join(parts)
    return ""


def relevant_functions(
    messages: list[dict[str, str]], functions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The functions whose name, description or parameters share a term with the last user message."""
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    asked = _terms(last)
    return [
        spec
        for spec in functions
        if asked
        & _terms(
            f"{spec.get('name', '')} {spec.get('description', '')} {_schema_text(spec.get('parameters'))}"
        )
    ]


def _decision_prompt(messages: list[dict[str, str]], functions: list[dict[str, Any]]) -> list[dict[str, str]]:
    """``messages`` set up for the model to reply ``Answer`` or ``Call <name>``.

    Short on purpose: among the phrasings we tried, this one separated "needs a function" from "just
    answer" best for SmolLM2-135M (schemas in this prompt made it prefer answering across the board).
    """
    lines = ["You are a helpful assistant with access to these functions:"]
    for spec in functions:
        description = spec.get("description")
        lines.append(f"- {spec['name']}: {description}" if description else f"- {spec['name']}")
    lines.append("Decide whether to call one of the functions or to answer directly.")
    return _with_system_text(messages, "\n".join(lines))


def _arguments_prompt(
    messages: list[dict[str, str]], spec: dict[str, Any]
) -> tuple[list[dict[str, str]], str]:
    """``messages`` set up for the model to write the arguments of a call to ``spec``, and the start
    of the assistant's reply, which the arguments continue."""
    name = str(spec["name"])
    description = spec.get("description")
    lines = [
        f"Call the function {name}" + (f" ({description})." if description else "."),
        f"Its arguments follow this JSON schema: {json.dumps(_parameters(spec), ensure_ascii=False)}",
        'Reply with {"name": "' + name + '", "arguments": {<arguments>}}.',
    ]
    prefix = json.dumps({"name": name}, ensure_ascii=False)[:-1] + ', "arguments": '
    return _with_system_text(messages, "\n".join(lines)), prefix


# --------------------------------------------------------------------------------------------------
# The provider
# --------------------------------------------------------------------------------------------------


def default_threads() -> int:
    """All cores but one. llama.cpp's worker threads spin at barriers: when the event loop (or anything
    else) takes one of their cores, every token waits for the descheduled thread — on 2 busy cores we
    measured 2 threads at 10x slower than 1."""
    return max(1, (os.cpu_count() or 1) - 1)


@dataclass(slots=True)
class _Loaded:
    llm: Llama
    formatter: Jinja2ChatFormatter
    n_ctx: int


class _Stopped(Exception):
    """The consumer went away: stop decoding."""


class _Done:
    """End of the event stream from the worker thread."""


class LlamaCppProvider:
    """A :class:`~threadline.providers.base.Provider` running a GGUF model in-process via llama.cpp.

    The model loads on first use (in a worker thread). ``context_window`` and ``count_tokens`` load it
    too, synchronously, if needed.
    """

    def __init__(
        self, model_path: str, *, n_threads: int | None = None, repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    ) -> None:
        self.model_path = model_path
        self.n_threads = n_threads or default_threads()
        self.repeat_penalty = repeat_penalty
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        # The real guard of the model: held by whichever worker thread is decoding, even when the
        # consumer has gone (a cancelled run's worker finishes its current token first).
        self._model_lock = threading.Lock()
        # Queues waiting requests without tying up worker threads. asyncio locks belong to one loop,
        # hence one per loop.
        self._queue_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    # -- model --------------------------------------------------------------------------------------

    def _load(self) -> _Loaded:
        with self._load_lock:
            if self._loaded is not None:
                return self._loaded
            try:
                from llama_cpp import Llama
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter
            except ImportError as exc:
                raise ProviderError(
                    "The embedded model needs llama-cpp-python: pip install 'llama-cpp-python>=0.3,<0.4'"
                ) from exc
            try:
                # n_ctx=0: the context size the model was trained with, from the GGUF metadata.
                llm = Llama(
                    model_path=self.model_path,
                    n_ctx=0,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise ProviderError(f"Could not load the model {self.model_path}: {exc}") from exc
            template = llm.metadata.get("tokenizer.chat_template") or _CHATML_TEMPLATE
            bos, eos = llm.token_bos(), llm.token_eos()
            formatter = Jinja2ChatFormatter(
                template=template,
                bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
                eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            )
            self._loaded = _Loaded(llm=llm, formatter=formatter, n_ctx=llm.n_ctx())
            return self._loaded

    @property
    def context_window(self) -> int:
        """The model's context size in tokens (from the GGUF metadata)."""
        return self._load().n_ctx

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for this model's tokenizer (no special tokens added)."""
        return len(self._load().llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    async def aclose(self) -> None:
        await asyncio.to_thread(self._unload)

    def _unload(self) -> None:
        with self._load_lock, self._model_lock:
            if self._loaded is not None:
                self._loaded.llm.close()
                self._loaded = None

    # -- streaming ----------------------------------------------------------------------------------

    def _queue_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._queue_locks.get(loop)
        if lock is None:
            lock = self._queue_locks[loop] = asyncio.Lock()
        return lock

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        loaded = await asyncio.to_thread(self._load)
        async with self._queue_lock():
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[ModelEvent | BaseException | _Done] = asyncio.Queue()
            stop = threading.Event()

            def emit(item: ModelEvent | BaseException | _Done) -> None:
                if stop.is_set():
                    raise _Stopped
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    stop.set()
                    raise _Stopped from None

            worker = loop.run_in_executor(None, self._work, loaded, request, emit, stop)
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, _Done):
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                stop.set()
                # Keep our place in the queue until the worker has let go of the model.
                await asyncio.wait([worker])

    def _work(
        self,
        loaded: _Loaded,
        request: ModelRequest,
        emit: Callable[[ModelEvent | BaseException | _Done], None],
        stop: threading.Event,
    ) -> None:
        try:
            with self._model_lock:
                if self._loaded is not loaded:  # closed by aclose() while we waited
                    raise ProviderError("The model provider was closed.")
                _Turn(loaded, request, emit, stop, repeat_penalty=self.repeat_penalty).run()
        except _Stopped:
            return
        except ProviderError as exc:
            _emit_quietly(emit, exc)
        except Exception as exc:
            _emit_quietly(emit, ProviderError(f"llama.cpp failed: {exc}"))
        _emit_quietly(emit, _Done())


def _emit_quietly(emit: Callable[[ModelEvent | BaseException | _Done], None], item: Any) -> None:
    with contextlib.suppress(_Stopped):
        emit(item)


class _Turn:
    """One request, run start to end in the worker thread while it holds the model."""

    def __init__(
        self,
        loaded: _Loaded,
        request: ModelRequest,
        emit: Callable[[ModelEvent | BaseException | _Done], None],
        stop: threading.Event,
        *,
        repeat_penalty: float,
    ) -> None:
        self.loaded = loaded
        self.repeat_penalty = repeat_penalty
        self.llm = loaded.llm
        self.request = request
        self.emit = emit
        self.stop = stop
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
        self.top_p = DEFAULT_TOP_P if request.top_p is None else request.top_p
        self.max_tokens = request.max_tokens if request.max_tokens and request.max_tokens > 0 else None

    def run(self) -> None:
        request = self.request
        messages = plain_messages(request.messages)
        functions = _function_specs(request)
        by_name = {str(spec.get("name")): spec for spec in functions}
        choice = request.tool_choice

        forced: str | None = None
        if isinstance(choice, dict):
            forced = str((choice.get("function") or {}).get("name", ""))
            if forced not in by_name:
                raise ProviderError(
                    f"tool_choice names {forced!r}, which is not among the tools", code="invalid_prompt"
                )
        if not functions or choice == "none":
            name = None
        elif forced is not None:
            name = forced
        elif choice == "required" and len(functions) == 1:
            name = str(functions[0].get("name"))
        elif choice == "required":
            name = self._choose(messages, functions, allow_answer=False)
        elif request.messages and request.messages[-1].get("role") == "tool":
            # The calls it asked for have just been answered: a small model would happily ask again,
            # forever; it answers from the results instead.
            name = None
        else:
            # A small model asked "answer or call?" says "call" to nearly everything; only functions
            # the conversation is plainly about are put to it.
            candidates = relevant_functions(messages, functions)
            name = self._choose(messages, candidates, allow_answer=True) if candidates else None
        reason = self._answer(messages) if name is None else self._call(messages, by_name[name])
        self.emit(Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens))
        self.emit(Finish(reason))

    # -- steps ------------------------------------------------------------------------------------

    def _answer(self, messages: list[dict[str, str]]) -> FinishReason:
        grammar, max_tokens = None, self.max_tokens
        response_format = self.request.response_format or {}
        if response_format.get("type") == "json_object":
            grammar = _json_object_grammar()
        elif response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
            grammar = schema_grammar(schema)
        max_tokens = max_tokens or (DEFAULT_ANSWER_TOKENS if grammar is None else JSON_MAX_TOKENS)
        _, reason = self._generate(
            self._prompt(messages),
            grammar=grammar,
            max_tokens=max_tokens,
            on_text=lambda t: self.emit(TextDelta(t)),
        )
        return reason

    def _choose(
        self, messages: list[dict[str, str]], functions: list[dict[str, Any]], *, allow_answer: bool
    ) -> str | None:
        """The function the model picks (``None``: answer), out of a closed set of choices.

        The reply is constrained to the choices' own tokenizations (``Answer``, ``Call <name>``, each
        ending in end-of-sequence), walked as a trie: the model's next-token distribution decides only
        where the choices branch. (A character grammar of the choices would also admit tokens that
        merely start a choice, like "C" or "An", and summing whole-choice log-probabilities penalises
        long names for tokens that are near-certain anyway.)
        """
        names = list(dict.fromkeys(str(spec.get("name")) for spec in functions))
        choices = ([_ANSWER_CHOICE] if allow_answer else []) + [_CALL_CHOICE + name for name in names]
        eos = self.llm.token_eos()
        sequences = [[*self._tokens(choice, special=False), eos] for choice in choices]
        prompt = self._tokens(self._prompt(_decision_prompt(messages, functions)))
        logprobs = self._evaluate(prompt)
        self.prompt_tokens += len(prompt)
        remaining = list(range(len(choices)))
        position = 0
        while len(remaining) > 1:
            if self.stop.is_set():
                raise _Stopped
            options = sorted({sequences[i][position] for i in remaining})
            token = (
                options[self._pick([float(logprobs[t]) for t in options])] if len(options) > 1 else options[0]
            )
            remaining = [i for i in remaining if sequences[i][position] == token]
            self.completion_tokens += 1
            if len(remaining) > 1:
                self.llm.eval([token])
                logprobs = self._next_logprobs()
            position += 1
        chosen = choices[remaining[0]]
        return None if chosen == _ANSWER_CHOICE else chosen.removeprefix(_CALL_CHOICE)

    @staticmethod
    def _pick(logprobs: list[float]) -> int:
        # The decision is the model's most likely choice whatever the temperature: sampling it would
        # make the same question call a function one time and not the next.
        return max(range(len(logprobs)), key=lambda i: logprobs[i])

    def _call(self, messages: list[dict[str, str]], spec: dict[str, Any]) -> FinishReason:
        """Decode the arguments of a call to ``spec`` under its schema's grammar, streaming them."""
        name, schema = str(spec["name"]), _parameters(spec)
        call_messages, prefix = _arguments_prompt(messages, spec)
        self.emit(ToolCallDelta(index=0, name=name))
        arguments, reason = self._generate(
            self._prompt(call_messages) + prefix,
            grammar=schema_grammar(schema),
            max_tokens=self.max_tokens or JSON_MAX_TOKENS,
            on_text=lambda t: self.emit(ToolCallDelta(index=0, arguments=t)),
        )
        if reason == "length":
            return "length"
        try:
            value = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ProviderError(
                f"Constrained decoding produced invalid JSON arguments for {name}: {exc}"
            ) from exc
        if (problem := schema_violation(value, schema)) is not None:
            raise ProviderError(f"Arguments decoded for {name} do not fit its schema: {problem}")
        return "tool_calls"

    # -- llama.cpp ---------------------------------------------------------------------------------

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.loaded.formatter(messages=cast(Any, messages)).prompt
        except Exception as exc:  # template errors (e.g. roles it refuses) are the prompt's fault
            raise ProviderError(
                f"The model's chat template cannot render these messages: {exc}", code="invalid_prompt"
            ) from exc

    def _reset(self) -> None:
        reset: Callable[[], None] = self.llm.reset  # (untyped in llama-cpp-python)
        reset()

    def _tokens(self, text: str, *, special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def _evaluate(self, tokens: list[int]) -> npt.NDArray[np.float64]:
        """Evaluate ``tokens`` from a fresh state; the log-probabilities of the next token."""
        if len(tokens) >= self.loaded.n_ctx:
            raise ProviderError(
                f"The prompt is {len(tokens)} tokens; the model's context window is {self.loaded.n_ctx}.",
                code="invalid_prompt",
            )
        self._reset()
        self.llm.eval(tokens)
        return self._next_logprobs()

    def _next_logprobs(self) -> npt.NDArray[np.float64]:
        import llama_cpp
        import numpy as np

        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),)).astype(np.float64)
        top = logits.max()
        result: npt.NDArray[np.float64] = logits - (top + np.log(np.exp(logits - top).sum()))
        return result

    def _check_grammar(self, grammar: str) -> None:
        # llama-cpp-python hands a grammar that fails to parse to llama.cpp as a NULL sampler, which
        # crashes the process; parse it once here first.
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self.llm._model.vocab, grammar.encode(), b"root")
        if not sampler:
            raise ProviderError("Internal error: a generated grammar does not parse.")
        llama_cpp.llama_sampler_free(sampler)

    def _generate(
        self,
        prompt: str,
        *,
        grammar: str | None,
        max_tokens: int | None,
        on_text: Callable[[str], None] | None,
    ) -> tuple[str, FinishReason]:
        """Decode one completion of ``prompt`` (fresh state), calling ``on_text`` per decoded piece."""
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        llm = self.llm
        tokens = self._tokens(prompt)
        room = self.loaded.n_ctx - len(tokens)
        if room <= 0:
            raise ProviderError(
                f"The prompt is {len(tokens)} tokens; the model's context window is {self.loaded.n_ctx}.",
                code="invalid_prompt",
            )
        limit = min(room, max_tokens) if max_tokens else room
        if grammar is not None:
            self._check_grammar(grammar)
        self.prompt_tokens += len(tokens)

        # A fresh state per generation (no prompt-prefix reuse), so that the same request at
        # temperature 0 decodes the same tokens every time.
        self._reset()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        reason: FinishReason = "length"
        generated = 0
        steps = llm.generate(
            tokens,
            temp=self.temperature,
            top_p=self.top_p,
            repeat_penalty=self.repeat_penalty if grammar is None else 1.0,
            reset=True,
            grammar=LlamaGrammar.from_string(grammar, verbose=False) if grammar is not None else None,
        )
        try:
            for token in steps:
                if self.stop.is_set():
                    raise _Stopped
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    reason = "stop"
                    break
                generated += 1
                self.completion_tokens += 1
                text = decoder.decode(llm.detokenize([token]))
                if text:
                    pieces.append(text)
                    if on_text is not None:
                        on_text(text)
                if generated >= limit:
                    break
        finally:
            steps.close()
        # A character whose bytes were cut off by the token limit is dropped, not shown as U+FFFD.
        return "".join(pieces), reason

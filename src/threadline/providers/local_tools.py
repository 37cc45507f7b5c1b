"""Function calling for small local models: messages any chat template renders, and the prompts
that let a model choose a function and write its arguments.

Small models' chat templates know nothing of tool calls and their models cannot decide on their
own when to call one. The tools are described in the system prompt; the model picks between
answering and calling one of them from a closed set of choices (see :mod:`decoding`), and the
arguments are then decoded under the function's grammar (see :mod:`grammars`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from threadline.domain.ports.models import ChatMessage, ModelRequest


def _content_text(content: Any) -> str:
    """Chat-completions content (a string or a list of parts) as plain text; images described."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                # A small local model cannot see images: it is told one was sent, not left unaware.
                texts.append("[The user sent an image, which this model cannot see.]")
        return "\n".join(texts)
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


def function_specs(request: ModelRequest) -> list[dict[str, Any]]:
    specs = []
    for tool in request.tools:
        if tool.get("type", "function") == "function" and isinstance(tool.get("function"), dict):
            specs.append(tool["function"])
    return specs


def parameters(spec: dict[str, Any]) -> dict[str, Any]:
    parameters = spec.get("parameters")
    return parameters if isinstance(parameters, dict) and parameters else {"type": "object", "properties": {}}


def _with_system_text(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    out = [dict(m) for m in messages]
    if out and out[0]["role"] == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{text}" if out[0]["content"] else text
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


ANSWER_CHOICE = "Answer"
CALL_CHOICE = "Call "


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


def decision_prompt(messages: list[dict[str, str]], functions: list[dict[str, Any]]) -> list[dict[str, str]]:
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


def arguments_prompt(
    messages: list[dict[str, str]], spec: dict[str, Any]
) -> tuple[list[dict[str, str]], str]:
    """``messages`` set up for the model to write the arguments of a call to ``spec``, and the start
    of the assistant's reply, which the arguments continue."""
    name = str(spec["name"])
    description = spec.get("description")
    lines = [
        f"Call the function {name}" + (f" ({description})." if description else "."),
        f"Its arguments follow this JSON schema: {json.dumps(parameters(spec), ensure_ascii=False)}",
        'Reply with {"name": "' + name + '", "arguments": {<arguments>}}.',
    ]
    prefix = json.dumps({"name": name}, ensure_ascii=False)[:-1] + ', "arguments": '
    return _with_system_text(messages, "\n".join(lines)), prefix

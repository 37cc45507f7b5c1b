"""Parsing a Responses request's ``tools``, ``tool_choice`` and ``text.format`` into the run engine's form.

A Responses function tool is flat (``{"type": "function", "name": ...}``), a run's nests it under
``function``; file_search's vector stores become the run's tool resources; every name of the web
search tool (``web_search``, ``web_search_preview`` ...) becomes ``web_search`` with its options.
Errors name the exact parameter, as OpenAI's do.
"""

from __future__ import annotations

from typing import Any

from threadline.api.response_parsing import bad, function_name
from threadline.domain.mcp import check_labels, mcp_tool


def parse_tools(tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The run engine's tools and the resources they name (file_search's vector stores)."""
    out: list[dict[str, Any]] = []
    resources: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        kind = tool.get("type")
        if kind == "function":
            name = function_name(tool, param)
            parameters = tool.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise bad(
                    f"Invalid type for '{param}.parameters': expected an object.", f"{param}.parameters"
                )
            function = {"name": name, "description": tool.get("description"), "parameters": parameters}
            if tool.get("strict") is not None:
                function["strict"] = bool(tool["strict"])
            out.append({"type": "function", "function": function})
        elif kind == "file_search":
            ids = tool.get("vector_store_ids")
            if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
                raise bad(
                    f"Missing required parameter: '{param}.vector_store_ids'.", f"{param}.vector_store_ids"
                )
            known = resources.setdefault("file_search", {"vector_store_ids": []})["vector_store_ids"]
            known += [v for v in ids if v not in known]
            options: dict[str, Any] = {}
            if tool.get("max_num_results") is not None:
                options["max_num_results"] = tool["max_num_results"]
            ranking = tool.get("ranking_options") or {}
            if ranking.get("score_threshold") is not None:
                options["ranking_options"] = {
                    "ranker": "auto",
                    "score_threshold": ranking["score_threshold"],
                }
            out.append({"type": "file_search", "file_search": options})
        elif kind in WEB_SEARCH_TYPES:
            out.append({"type": "web_search", "web_search": _web_search(tool, param)})
        elif kind == "code_interpreter":
            container = tool.get("container")
            if isinstance(container, dict) and container.get("file_ids"):
                resources["code_interpreter"] = {"file_ids": list(container["file_ids"])}
            out.append({"type": "code_interpreter"})
        elif kind == "mcp":
            kept, headers = mcp_tool(tool, param)
            out.append(kept)
            # Plain only until the response is made, which seals them (``mcp_headers``).
            resources.setdefault("mcp_headers", {})[kept["server_label"]] = headers
        else:
            raise bad(
                f"Tools of type '{str(kind)[:64]}' are not supported by this server: use 'function', "
                "'file_search', 'code_interpreter' 'mcp' or 'web_search'.",
                f"{param}.type",
            )
    check_labels(out)
    return out, resources


WEB_SEARCH_TYPES = (
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
)
"""The spec's names of the web search tool; the run engine knows them all as ``web_search``."""
CONTEXT_SIZES = ("low", "medium", "high")


def _web_search(tool: dict[str, Any], param: str) -> dict[str, Any]:
    """A web search tool's options: ``search_context_size``, ``filters.allowed_domains`` and
    ``user_location`` (``external_web_access``, content types and image settings are accepted)."""
    options: dict[str, Any] = {}
    size = tool.get("search_context_size")
    if size is not None:
        if size not in CONTEXT_SIZES:
            raise bad(
                f"Invalid value for '{param}.search_context_size': expected 'low', 'medium' or 'high'.",
                f"{param}.search_context_size",
            )
        options["search_context_size"] = size
    filters = tool.get("filters")
    if filters is not None:
        at = f"{param}.filters.allowed_domains"
        domains = filters.get("allowed_domains") if isinstance(filters, dict) else None
        if not isinstance(filters, dict) or not isinstance(domains, list | None):
            raise bad(f"Invalid type for '{at}': expected an array of domains.", at)
        if domains:
            if len(domains) > 100 or not all(isinstance(d, str) and 0 < len(d) <= 253 for d in domains):
                raise bad(f"Invalid '{at}': at most 100 domain names.", at)
            options["filters"] = {"allowed_domains": list(domains)}
    location = tool.get("user_location")
    if location is not None:
        if not isinstance(location, dict):
            raise bad(
                f"Invalid type for '{param}.user_location': expected an object.", f"{param}.user_location"
            )
        kept = {
            k: str(v)[:200]
            for k, v in location.items()
            if k in ("country", "region", "city", "timezone") and v
        }
        options["user_location"] = kept
    return options


def parse_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise bad(
                "Invalid value for 'tool_choice': expected 'auto', 'none' or 'required'.", "tool_choice"
            )
        return choice
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise bad("Missing required parameter: 'tool_choice.name'.", "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    if kind in ("file_search", "code_interpreter"):
        return {"type": kind}
    if kind in WEB_SEARCH_TYPES:
        return {"type": "web_search"}
    if kind == "allowed_tools":
        return "auto"  # the tools are narrowed by ``allowed_tools``
    raise bad(f"Invalid value for 'tool_choice.type': {str(kind)[:64]!r}.", "tool_choice.type")


def allowed_tools(choice: dict[str, Any], tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """``tool_choice: {"type": "allowed_tools", "mode", "tools"}``: the request's tools narrowed to
    the ones listed (each must be one of them), and the ``tool_choice`` its ``mode`` stands for."""
    for field_name in choice:
        if field_name not in ("type", "mode", "tools"):
            raise bad(f"Unknown parameter: 'tool_choice.{field_name}'.", f"tool_choice.{field_name}")
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        raise bad("Invalid value for 'tool_choice.mode': expected 'auto' or 'required'.", "tool_choice.mode")
    listed = choice.get("tools")
    if not isinstance(listed, list):
        raise bad("Missing required parameter: 'tool_choice.tools'.", "tool_choice.tools")
    offered = {_tool_key(tool): tool for tool in tools}
    kept: list[dict[str, Any]] = []
    for i, tool in enumerate(listed):
        param = f"tool_choice.tools[{i}]"
        if not isinstance(tool, dict):
            raise bad(f"Invalid type for '{param}': expected an object.", param)
        kind = str(tool.get("type"))
        kind = "web_search" if kind in WEB_SEARCH_TYPES else kind
        wanted = (kind, str(tool.get("name")) if kind == "function" else "")
        if wanted not in offered:
            raise bad(f"Invalid value for '{param}': it names no tool of the request's 'tools'.", param)
        if offered[wanted] not in kept:
            kept.append(offered[wanted])
    return kept, str(mode)


def _tool_key(tool: dict[str, Any]) -> tuple[str, str]:
    """A run engine tool's identity: its type, and a function's name."""
    if tool.get("type") == "function":
        return "function", str(tool["function"]["name"])
    return str(tool.get("type")), ""


def parse_text_format(text: dict[str, Any]) -> Any:
    """``text.format`` as a run's ``response_format``."""
    fmt = text.get("format") or {"type": "text"}
    kind = fmt.get("type")
    if kind == "text":
        return "auto"
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise bad(
                "Missing required parameter: 'text.format.name' or 'text.format.schema'.", "text.format"
            )
        spec = {"name": fmt["name"], "schema": fmt["schema"], "strict": bool(fmt.get("strict"))}
        if fmt.get("description") is not None:
            spec["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": spec}
    raise bad(f"Invalid value for 'text.format.type': {str(kind)[:64]!r}.", "text.format.type")


def shown_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A request's tool as the response shows it: an ``mcp`` tool without its headers."""
    if tool.get("type") != "mcp":
        return tool
    return {k: v for k, v in tool.items() if k not in ("headers", "authorization")}

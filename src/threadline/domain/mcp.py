"""The ``mcp`` tool of the Responses API: a remote MCP server's tools offered to the model.

A request's ``{"type": "mcp", "server_label", "server_url", "headers", "allowed_tools",
"require_approval", "server_description"}`` is checked here (:func:`mcp_tool`) and kept in the
run's tools without its headers; the headers travel sealed (the ``McpServers`` port seals them with the
server's key) in the response's settings, for the run only, and are never shown.

On a response's first turn each server's tools are listed once per response chain: an
``mcp_list_tools`` item already in the conversation (or the previous responses) for the same label
is used again. The model sees the allowed tools as functions (a tool's name, or
``<label>__<name>`` when two servers or a client function share it). A call the policy lets run
becomes an ``mcp_call`` item; one that needs approval ends the response with an
``mcp_approval_request`` item, and the next request's ``mcp_approval_response`` runs or refuses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from threadline.errors import InvalidRequestError

LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
"""What a ``server_label`` may be: it names the server in items and in function names."""
MAX_HEADERS = 32
MAX_HEADER_CHARS = 8_192


@dataclass(frozen=True, slots=True)
class McpServerTool:
    """One ``mcp`` entry of a run's tools, as the run engine keeps it (no headers)."""

    label: str
    url: str
    allowed_tools: Any = None
    require_approval: Any = "always"
    description: str | None = None

    @classmethod
    def of(cls, tool: Mapping[str, Any]) -> McpServerTool:
        return cls(
            tool["server_label"],
            tool["server_url"],
            tool.get("allowed_tools"),
            tool.get("require_approval") or "always",
            tool.get("server_description"),
        )

    def allows(self, info: Mapping[str, Any]) -> bool:
        allowed = self.allowed_tools
        if allowed is None:
            return True
        if isinstance(allowed, list):
            return info["name"] in allowed
        return _matches(allowed, info)

    def needs_approval(self, info: Mapping[str, Any]) -> bool:
        policy = self.require_approval
        if policy == "never":
            return False
        # A tool ``never`` names goes without; any other needs approval, as OpenAI's default is.
        return not (
            isinstance(policy, dict) and policy.get("never") is not None and _matches(policy["never"], info)
        )


def _matches(tool_filter: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
    """An ``MCPToolFilter`` (``tool_names``, ``read_only``; both must hold when both are given)."""
    names = tool_filter.get("tool_names")
    if names is not None and info["name"] not in names:
        return False
    read_only = tool_filter.get("read_only")
    if read_only is not None and bool((info.get("annotations") or {}).get("readOnlyHint")) != read_only:
        return False
    return names is not None or read_only is not None


def mcp_tool(tool: Mapping[str, Any], param: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A request's ``mcp`` tool checked: the run engine's tool (no headers) and the headers."""

    def bad(message: str, where: str) -> InvalidRequestError:
        return InvalidRequestError(message, param=f"{param}.{where}")

    label = tool.get("server_label")
    if not isinstance(label, str) or not LABEL.match(label):
        raise bad(
            "Invalid 'server_label': a letter, then up to 63 letters, digits, '_' or '-'.", "server_label"
        )
    if tool.get("connector_id") is not None or tool.get("tunnel_id") is not None:
        raise bad(
            "Connectors and tunnels are not available on this server: give a 'server_url'.", "server_url"
        )
    url = tool.get("server_url")
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url, re.IGNORECASE) or len(url) > 2048:
        raise bad("Missing or invalid 'server_url': an http(s) URL of the MCP server.", "server_url")
    headers = dict(tool.get("headers") or {})
    if tool.get("authorization") is not None:
        headers.setdefault("Authorization", f"Bearer {tool['authorization']}")
    if (
        len(headers) > MAX_HEADERS
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        or sum(len(k) + len(v) for k, v in headers.items()) > MAX_HEADER_CHARS
        or any(
            not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", k) or "\n" in v or "\r" in v
            for k, v in headers.items()
        )
    ):
        raise bad("Invalid 'headers': an object of header names to string values.", "headers")
    allowed = tool.get("allowed_tools")
    if allowed is not None and not (
        (isinstance(allowed, list) and all(isinstance(n, str) for n in allowed)) or _is_filter(allowed)
    ):
        raise bad("Invalid 'allowed_tools': a list of tool names or a filter object.", "allowed_tools")
    approval = tool.get("require_approval")
    if (
        approval is not None
        and approval not in ("always", "never")
        and not (
            isinstance(approval, dict)
            and set(approval) <= {"always", "never"}
            and all(v is None or _is_filter(v) for v in approval.values())
        )
    ):
        raise bad(
            "Invalid 'require_approval': 'always', 'never', or {'always': {...}, 'never': {...}}.",
            "require_approval",
        )
    description = tool.get("server_description")
    if description is not None and not isinstance(description, str):
        raise bad("Invalid 'server_description': expected a string.", "server_description")
    kept: dict[str, Any] = {
        "type": "mcp",
        "server_label": label,
        "server_url": url,
        "allowed_tools": allowed,
        "require_approval": approval if approval is not None else "always",
    }
    if description is not None:
        kept["server_description"] = description
    return kept, headers


def _is_filter(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) <= {"tool_names", "read_only"}
        and (
            value.get("tool_names") is None
            or (
                isinstance(value["tool_names"], list) and all(isinstance(n, str) for n in value["tool_names"])
            )
        )
        and (value.get("read_only") is None or isinstance(value["read_only"], bool))
    )


def check_labels(tools: Iterable[Mapping[str, Any]]) -> None:
    """Two ``mcp`` tools of one request may not share a label."""
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if tool.get("type") != "mcp":
            continue
        label = tool["server_label"]
        if label in seen:
            raise InvalidRequestError(
                f"Duplicate MCP server_label '{label}'.", param=f"tools[{i}].server_label"
            )
        seen.add(label)


@dataclass(frozen=True, slots=True)
class OfferedTool:
    """An MCP tool as the model is offered it, and where its calls go."""

    function: str
    """The function name the model sees."""
    server: McpServerTool
    info: dict[str, Any]
    """The tool as its server listed it."""

    @property
    def name(self) -> str:
        return str(self.info["name"])

    def spec(self) -> dict[str, Any]:
        description = self.info.get("description") or ""
        if self.server.description:
            description = f"{description}\n(From {self.server.label}: {self.server.description})".strip()
        schema = self.info.get("input_schema") or {"type": "object", "properties": {}}
        return {
            "type": "function",
            "function": {"name": self.function, "description": description, "parameters": schema},
        }


def offered(
    listings: Iterable[tuple[McpServerTool, list[dict[str, Any]]]], taken: Iterable[str] = ()
) -> dict[str, OfferedTool]:
    """The allowed tools of each listed server by the function name the model sees: the tool's own
    name unless another server's tool or a function in ``taken`` has it, then ``<label>__<name>``."""
    pairs = [(server, info) for server, tools in listings for info in tools if server.allows(info)]
    counts: dict[str, int] = {}
    for _, info in pairs:
        counts[info["name"]] = counts.get(info["name"], 0) + 1
    blocked = set(taken)
    out: dict[str, OfferedTool] = {}
    for server, info in pairs:
        name = info["name"]
        function = name if counts[name] == 1 and name not in blocked else f"{server.label}__{name}"
        out.setdefault(function[:64], OfferedTool(function[:64], server, info))
    return out


_ITEM_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "mcp_list_tools": {"server_label": (str,), "tools": (list,), "error": (str,)},
    "mcp_call": {
        "server_label": (str,),
        "name": (str,),
        "arguments": (str,),
        "output": (str,),
        "error": (dict, str),
        "status": (str,),
        "approval_request_id": (str,),
    },
    "mcp_approval_request": {"server_label": (str,), "name": (str,), "arguments": (str,)},
    "mcp_approval_response": {"approval_request_id": (str,), "approve": (bool,), "reason": (str,)},
}
_ITEM_REQUIRED = {
    "mcp_list_tools": ("server_label", "tools"),
    "mcp_call": ("id", "server_label", "name", "arguments"),
    "mcp_approval_request": ("id", "server_label", "name", "arguments"),
    "mcp_approval_response": ("approval_request_id", "approve"),
}
MCP_ITEM_TYPES = tuple(_ITEM_FIELDS)


def mcp_item(item: Mapping[str, Any], param: str) -> dict[str, Any]:
    """An MCP item given as input (as a response output it, or an approval): the fields its entry
    keeps. A request keeps the id it was given, which its approval names."""
    kind = str(item["type"])
    fields = _ITEM_FIELDS[kind]
    for key in _ITEM_REQUIRED[kind]:
        if item.get(key) is None:
            raise InvalidRequestError(f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}")
    for key, value in item.items():
        if key in ("type", "id"):
            if key == "id" and value is not None and not isinstance(value, str):
                raise InvalidRequestError(f"Invalid type for '{param}.id'.", param=f"{param}.id")
            continue
        if key not in fields:
            raise InvalidRequestError(f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
        if value is not None and not isinstance(value, fields[key]):
            raise InvalidRequestError(f"Invalid type for '{param}.{key}'.", param=f"{param}.{key}")
    kept = {key: item.get(key) for key in fields}
    if kind == "mcp_approval_request":
        kept["request_id"] = item["id"]
    if kind == "mcp_call" and kept.get("status") is None:
        kept["status"] = "completed" if kept.get("error") is None else "failed"
    return kept

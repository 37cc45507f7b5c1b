"""Running a response's MCP tools inside its run: listing each server's tools, calling them,
asking for approval, and carrying out the approvals a request brings.

Every item is a thread entry written by the run (``run_id``), so the response's output, a later
response of the chain and a run resumed by another worker all see the same thing. The items are
published as ``ObjectEvent``\\ s named after the stream events they become
(``response.output_item.added``, ``response.mcp_call.in_progress`` …); ``api/response_stream.py``
renders them.

A call is saved ``in_progress`` before it is sent; a worker that dies during it leaves it so, and
the run that resumes marks it ``failed`` (the call may or may not have run on the server) and goes
on, so the model hears it failed rather than calling again unasked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from threadline.domain.clock import now
from threadline.domain.content import ItemFields
from threadline.domain.entities import ListQuery, Message, Run
from threadline.domain.events import Event, ObjectEvent
from threadline.domain.mcp import McpServerTool, OfferedTool, offered
from threadline.domain.ports.mcp import McpServers
from threadline.domain.ports.storage import ThreadRepository
from threadline.ids import new_id

Write = Callable[..., Awaitable[None]]
"""The run loop's guarded write: ``await write(run, events, new_messages=[...], messages=[...])``."""

LISTINGS_LOOKED_AT = 512
"""Entries of the chain looked through for a server's earlier ``mcp_list_tools`` item."""
INTERRUPTED = {
    "type": "http_error",
    "code": 503,
    "message": "The worker running this call stopped before it finished; it may or may not have run.",
}


def servers_of(run: Run) -> list[McpServerTool]:
    return [McpServerTool.of(t) for t in run.tools if t.get("type") == "mcp"]


def item_events(item: Message, *names: str) -> list[Event]:
    return [ObjectEvent(name, item) for name in names]


class McpRun:
    """The MCP side of one response's run (none for a run without ``mcp`` tools)."""

    def __init__(self, servers: McpServers | None, threads: ThreadRepository, run: Run, write: Write) -> None:
        self.servers = servers
        self.threads = threads
        self.run = run
        """The run as the loop last wrote it (the loop keeps it current: writes carry its usage)."""
        self.write = write
        self.configured = servers_of(run)
        self.tools: dict[str, OfferedTool] = {}
        """The MCP tools the model is offered, by function name (once :meth:`prepare` ran)."""
        self.called = False
        """A call ran in this run (a forced ``tool_choice`` no longer holds)."""

    def _sealed(self, label: str) -> str | None:
        sealed = ((self.run.response and self.run.response.mcp_headers) or {}).get(label)
        return str(sealed) if sealed else None

    def _entry(self, kind: Any, fields: dict[str, Any], turn: int, place: str) -> Message:
        ts = now()
        return Message(
            id=new_id(kind),
            thread_id=self.run.thread_id,
            created_at=ts,
            role="assistant",
            content=[ItemFields(fields)],
            run_id=self.run.id,
            metadata={"turn": str(turn), "place": place},
            completed_at=ts,
            type=kind,
        )

    async def own_entries(self) -> list[Message]:
        """The MCP items this run wrote so far, oldest first."""
        page = await self.threads.list_messages(
            self.run.thread_id, ListQuery(limit=1000, order="asc"), self.run.id, items=True
        )
        return [m for m in page.items if m.type.startswith("mcp_")]

    async def resume(self) -> int:
        """Mark calls a dead worker left in progress as failed; the last turn this run's items
        belong to (-1: none), so a resumed run does not redo a turn that only called MCP tools."""
        entries = await self.own_entries()
        left = [m for m in entries if m.type == "mcp_call" and m.fields.get("status") == "in_progress"]
        if left:
            failed = [
                dataclasses.replace(
                    m, content=[ItemFields({**m.fields, "status": "failed", "error": INTERRUPTED})]
                )
                for m in left
            ]
            await self.write(self.run, [], messages=failed)
        ended = [int(m.metadata.get("turn", "-1")) for m in entries if m.metadata.get("place") == "end"]
        return max(ended, default=-1)

    async def prepare(self, turn: int, taken: Iterable[str]) -> dict[str, OfferedTool]:
        """The MCP tools to offer the model: each server's tools as listed earlier in the chain, or
        listed now (an ``mcp_list_tools`` item; a server that cannot be listed offers none)."""
        if not self.configured or self.servers is None:
            return {}
        known = await self._listed()
        listings = []
        for server in self.configured:
            tools = known.get(server.label)
            if tools is None:
                tools = await self._list(server, turn)
            listings.append((server, tools))
        self.tools = offered(listings, taken)
        return self.tools

    async def _listed(self) -> dict[str, list[dict[str, Any]]]:
        """The newest successful listing of each label in the chain (this run's included)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for entry in await self.threads.newest_messages(self.run.thread_id, LISTINGS_LOOKED_AT):
            fields = entry.fields if entry.type == "mcp_list_tools" else {}
            if fields and not fields.get("error"):
                found.setdefault(str(fields.get("server_label")), list(fields.get("tools") or []))
        return found

    async def _list(self, server: McpServerTool, turn: int) -> list[dict[str, Any]]:
        assert self.servers is not None
        fields: dict[str, Any] = {"server_label": server.label, "tools": [], "error": None}
        item = self._entry("mcp_list_tools", fields, turn, "start")
        # Announced before the server answers; saved once it has (a crash lists again).
        announced = item_events(item, "response.output_item.added", "response.mcp_list_tools.in_progress")
        await self.write(self.run, announced)
        tools, error = await self.servers.list_tools(server.url, self._sealed(server.label))
        tools = [t for t in tools if server.allows(t)]
        item.content = [ItemFields({**fields, "tools": tools, "error": error})]
        outcome = "failed" if error else "completed"
        await self.write(
            self.run,
            item_events(item, f"response.mcp_list_tools.{outcome}", "response.output_item.done"),
            new_messages=[item],
        )
        return tools

    def needs_approval(self, tool: OfferedTool) -> bool:
        return tool.server.needs_approval(tool.info)

    async def call(
        self, turn: int, tool: OfferedTool, arguments: str, *, place: str = "end", approval: str | None = None
    ) -> Message:
        """Run one call as an ``mcp_call`` item: saved in progress, sent, saved with its outcome."""
        assert self.servers is not None
        fields: dict[str, Any] = {
            "server_label": tool.server.label,
            "name": tool.name,
            "arguments": arguments,
            "output": None,
            "error": None,
            "status": "in_progress",
            "approval_request_id": approval,
        }
        self.called = True
        item = self._entry("mcp_call", fields, turn, place)
        await self.write(self.run, item_events(item, "response.output_item.added"), new_messages=[item])
        await self.write(
            self.run,
            item_events(
                item,
                "response.mcp_call.in_progress",
                "response.mcp_call_arguments.delta",
                "response.mcp_call_arguments.done",
            ),
        )
        try:
            decoded = json.loads(arguments or "{}")
        except ValueError:
            decoded = None
        output: str | None = None
        error: dict[str, Any] | None
        if not isinstance(decoded, dict):
            error = {
                "type": "mcp_protocol_error",
                "code": -32602,
                "message": "The arguments are not a JSON object.",
            }
        else:
            output, error = await self.servers.call_tool(
                tool.server.url, self._sealed(tool.server.label), tool.name, decoded
            )
        status = "failed" if error else "completed"
        item = dataclasses.replace(
            item, content=[ItemFields({**fields, "output": output, "error": error, "status": status})]
        )
        await self.write(
            self.run,
            item_events(item, f"response.mcp_call.{status}", "response.output_item.done"),
            messages=[item],
        )
        return item

    def approval_request(self, turn: int, tool: OfferedTool, arguments: str) -> Message:
        """An ``mcp_approval_request`` item for a call that waits for the user (saved by the caller,
        with the response's end)."""
        fields = {"server_label": tool.server.label, "name": tool.name, "arguments": arguments}
        return self._entry("mcp_approval_request", fields, turn, "end")

    async def _approved_calls(self) -> set[str]:
        """The approval requests whose call the chain holds already: by this run (resumed), by an
        earlier response answering the same request, or given back in the input by the client."""
        page = await self.threads.list_messages(
            self.run.thread_id, ListQuery(limit=1000, order="desc"), None, items=True
        )
        return {
            str(m.fields["approval_request_id"])
            for m in page.items
            if m.type == "mcp_call" and m.fields.get("approval_request_id")
        }

    async def carry_out_approvals(self, turn: int, input_ids: Iterable[str]) -> int:
        """Run the calls this response's input approves, each once: however often the run is
        resumed, and however often a request is answered (a client sending its history again);
        refusals need nothing run, the model is shown them. How many ran."""
        answers = [
            m for m in await self.threads.messages_by_id(list(input_ids)) if m.type == "mcp_approval_response"
        ]
        approved = [a for a in answers if a.fields.get("approve") is True]
        if not approved:
            return 0
        done = await self._approved_calls()
        ran = 0
        for answer in approved:
            fields = answer.fields
            request_id = fields.get("approval_request_id")
            if request_id in done:
                continue
            server = next((s for s in self.configured if s.label == fields.get("server_label")), None)
            if server is None:
                continue  # checked when the request was made
            info: dict[str, Any] = {"name": fields.get("name"), "input_schema": {}}
            tool = OfferedTool(str(fields.get("name")), server, info)
            await self.call(
                turn, tool, str(fields.get("arguments") or "{}"), place="start", approval=request_id
            )
            ran += 1
        return ran

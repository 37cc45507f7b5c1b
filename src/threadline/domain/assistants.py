"""Assistants: create, apply (declarations), read, list, modify and delete, within one project."""

from __future__ import annotations

import dataclasses

from threadline.domain.commands import AssistantUpdate, NewAssistant, Resources
from threadline.domain.entities import Assistant, ListQuery, Page
from threadline.domain.scope import Scope, not_found
from threadline.domain.updates import KEEP
from threadline.ids import new_id


def found_assistant(assistant: Assistant | None, assistant_id: str) -> Assistant:
    """The assistant a lookup by ``assistant_id`` found, or its 404."""
    if assistant is None:
        raise not_found("assistant", assistant_id)
    return assistant


class AssistantService:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.stores = scope.stores

    async def create_assistant(self, command: NewAssistant, assistant_id: str | None = None) -> Assistant:
        scope = self.scope
        scope.check_model(command.model)
        await scope.check_files(command.file_refs())
        resources = await scope.with_stores(command.tool_resources)
        assistant = self._assistant(assistant_id or new_id("assistant"), command, resources)
        await self.stores.assistants.insert(assistant)
        return assistant

    async def apply_assistant(self, assistant_id: str, command: NewAssistant) -> Assistant:
        """Create or update the assistant with this id (declarations); safe to run concurrently."""
        assistant = self._assistant(assistant_id, command, command.tool_resources)
        await self.stores.assistants.upsert(assistant)
        return await self.get_assistant(assistant_id)

    async def get_assistant(self, assistant_id: str) -> Assistant:
        return found_assistant(
            await self.stores.assistants.get(assistant_id, self.scope.project_id), assistant_id
        )

    async def list_assistants(self, query: ListQuery) -> Page[Assistant]:
        return await self.stores.assistants.list_assistants(query, self.scope.project_id)

    async def modify_assistant(self, assistant_id: str, update: AssistantUpdate) -> Assistant:
        assistant = await self.get_assistant(assistant_id)
        if update.model is not KEEP:
            self.scope.check_model(update.model)
        await self.scope.check_files(update.file_refs())
        changes = update.changes()
        if "tool_resources" in changes:
            changes["tool_resources"] = await self.scope.with_stores(changes["tool_resources"])
        assistant = dataclasses.replace(assistant, **changes)
        await self.stores.assistants.update(assistant)
        return assistant

    async def delete_assistant(self, assistant_id: str) -> None:
        if not await self.stores.assistants.delete(assistant_id, self.scope.project_id):
            raise not_found("assistant", assistant_id)

    def _assistant(self, assistant_id: str, command: NewAssistant, resources: Resources | None) -> Assistant:
        return Assistant(
            id=assistant_id,
            created_at=self.scope.clock(),
            model=command.model,
            name=command.name,
            description=command.description,
            instructions=command.instructions,
            tools=command.tools,
            tool_resources=resources,
            metadata=command.metadata,
            temperature=command.temperature,
            top_p=command.top_p,
            response_format=command.response_format,
            reasoning_effort=command.reasoning_effort,
            project_id=self.scope.project_id,
        )

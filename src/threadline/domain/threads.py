"""Threads and their messages, within one project.

A thread's messages are part of it (the thread's lock guards both), so one service keeps both. Files
that messages attach for ``code_interpreter`` join the thread's tool resources; files attached for
``file_search`` go into the thread's own vector store, made with the thread when needed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from threadline.domain.commands import NewMessage, NewThread, ThreadUpdate
from threadline.domain.content import Part, Text, text_content
from threadline.domain.entities import ListQuery, Message, Page, Thread, ThreadStorePlan
from threadline.domain.files import attached_code_files, thread_store_id, with_code_files, with_search_store
from threadline.domain.ports.storage import ThreadLockedError
from threadline.domain.records import part_from
from threadline.domain.scope import Scope, not_found
from threadline.errors import InvalidRequestError
from threadline.ids import new_id


def message_content(content: str | list[dict[str, Any]]) -> list[Part]:
    """A create-message ``content`` (a string or request parts) as message parts. A request's image
    parts have the stored form's shape."""
    if isinstance(content, str):
        return text_content(content)
    return [Text(part["text"]) if part["type"] == "text" else part_from(part) for part in content]


def found_thread(thread: Thread | None, thread_id: str) -> Thread:
    """The thread a lookup by ``thread_id`` found, or its 404 (a response's own thread is reached
    through the response, never as a thread)."""
    if thread is None or thread.kind == "response":
        raise not_found("thread", thread_id)
    return thread


class ThreadService:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.stores = scope.stores

    # --- threads ---------------------------------------------------------------------------

    def new_message(self, thread_id: str, command: NewMessage, created_at: int | None = None) -> Message:
        """The message ``command`` asks for, not yet saved."""
        return Message(
            id=new_id("message"),
            thread_id=thread_id,
            created_at=self.scope.clock() if created_at is None else created_at,
            role=command.role,
            content=message_content(command.content),
            attachments=command.attachments,
            metadata=command.metadata,
            completed_at=None,
        )

    def new_thread(self, command: NewThread) -> tuple[Thread, list[Message], ThreadStorePlan | None]:
        """The thread ``command`` asks for and its messages, not yet saved; and where the files they
        attach for ``file_search`` go (``tool_resources`` already checked)."""
        thread = Thread(
            id=new_id("thread"),
            created_at=self.scope.clock(),
            metadata=command.metadata,
            tool_resources=command.tool_resources,
            project_id=self.scope.project_id,
        )
        thread.last_active_at = thread.created_at
        messages = [self.new_message(thread.id, m, thread.created_at) for m in command.messages]
        # Files its messages attach for code_interpreter join the thread's resources (as the store
        # does for messages added later), so the thread comes back as it was saved.
        joined = with_code_files(thread.tool_resources, attached_code_files(messages))
        if joined is not None:
            thread.tool_resources = joined
        plan = self.scope.store_plan(thread.id, messages)
        if plan is not None and thread_store_id(thread.tool_resources) is None:
            # Files attached for file_search: the thread is made (and announced) with its own store.
            thread.tool_resources = with_search_store(thread.tool_resources, plan.new_store.id)
        return thread, messages, plan

    async def create_thread(self, command: NewThread) -> Thread:
        await self.scope.check_files(command.file_refs())
        resources = await self.scope.with_stores(command.tool_resources)
        thread, messages, plan = self.new_thread(dataclasses.replace(command, tool_resources=resources))
        joined = await self.stores.threads.insert(thread, messages, search=plan)
        if joined is not None:
            thread.tool_resources = joined.tool_resources
        self.scope.ingest(joined)
        return thread

    async def get_thread(self, thread_id: str) -> Thread:
        return found_thread(await self.stores.threads.get(thread_id, self.scope.project_id), thread_id)

    async def list_threads(self, query: ListQuery, metadata: dict[str, str]) -> Page[Thread]:
        return await self.stores.threads.list_threads(query, metadata, self.scope.project_id)

    async def modify_thread(self, thread_id: str, update: ThreadUpdate) -> Thread:
        thread = await self.get_thread(thread_id)
        await self.scope.check_files(update.file_refs())
        changes = update.changes()
        if "tool_resources" in changes:
            changes["tool_resources"] = await self.scope.with_stores(changes["tool_resources"])
        thread = dataclasses.replace(thread, **changes)
        await self.stores.threads.update(thread)
        return thread

    async def delete_thread(self, thread_id: str) -> None:
        if not await self.stores.threads.delete(thread_id, self.scope.project_id):
            raise not_found("thread", thread_id)

    # --- messages --------------------------------------------------------------------------

    async def create_message(self, thread_id: str, command: NewMessage) -> Message:
        await self.get_thread(thread_id)
        await self.scope.check_files(command.file_refs())
        message = self.new_message(thread_id, command)
        try:
            joined = await self.stores.threads.insert_message(
                message, search=self.scope.store_plan(thread_id, [message])
            )
        except ThreadLockedError as locked:
            raise InvalidRequestError(
                f"Can't add messages to {thread_id} while a run {locked.run_id} is active."
            ) from None
        self.scope.ingest(joined)
        return message

    async def get_message(self, thread_id: str, message_id: str) -> Message:
        await self.get_thread(thread_id)
        message = await self.stores.threads.get_message(thread_id, message_id)
        if message is None or message.type != "message":  # function calls are Responses items only
            raise not_found("message", message_id)
        return message

    async def list_messages(self, thread_id: str, query: ListQuery, run_id: str | None) -> Page[Message]:
        await self.get_thread(thread_id)
        return await self.stores.threads.list_messages(thread_id, query, run_id)

    async def modify_message(
        self, thread_id: str, message_id: str, metadata: dict[str, str] | None
    ) -> Message:
        """Set a message's metadata; ``None`` (the client sent none) leaves it as it is."""
        message = await self.get_message(thread_id, message_id)
        if metadata is not None:
            message.metadata = metadata
            await self.stores.threads.update_message_metadata(message)
        return message

    async def delete_message(self, thread_id: str, message_id: str) -> None:
        await self.get_thread(thread_id)
        if not await self.stores.threads.delete_message(thread_id, message_id):
            raise not_found("message", message_id)

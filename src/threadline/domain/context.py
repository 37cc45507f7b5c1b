"""Building what the model sees for one turn of a run: instructions, thread messages, tool rounds.

The thread's messages come first (oldest to newest), then, in order, what this run has already
done: its own assistant messages and each tool round as an assistant ``tool_calls`` message followed
by one ``role: tool`` message per call, so the model reads outputs exactly where it asked for them.
"""

from __future__ import annotations

from typing import Any

from threadline.domain.entities import Message, Run, RunStep
from threadline.providers.base import ChatMessage, ModelRequest

# How many of the newest thread messages a prompt may draw on.
MAX_THREAD_MESSAGES = 200


def chat_message(message: Message) -> ChatMessage:
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.get("type") == "text":
            parts.append({"type": "text", "text": part["text"]["value"]})
        elif part.get("type") == "image_url":
            parts.append({"type": "image_url", "image_url": part["image_url"]})
    if all(p["type"] == "text" for p in parts):
        return {"role": message.role, "content": "".join(p["text"] for p in parts)}
    return {"role": message.role, "content": parts}


def run_messages(steps: list[RunStep], own: dict[str, Message]) -> list[ChatMessage]:
    """What this run did so far, as chat messages, in the order it happened."""
    out: list[ChatMessage] = []
    for step in steps:
        if step.type == "message_creation":
            message = own.get(step.step_details["message_creation"]["message_id"])
            if message is not None and message.text:
                out.append(chat_message(message))
            continue
        calls = [c for c in step.step_details["tool_calls"] if c.get("type") == "function"]
        if not calls or any(c["function"].get("output") is None for c in calls):
            continue
        out.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                    }
                    for c in calls
                ],
            }
        )
        out.extend(
            {"role": "tool", "tool_call_id": c["id"], "content": c["function"]["output"]} for c in calls
        )
    return out


def function_tools(run: Run) -> list[dict[str, Any]]:
    """The run's function tools in chat-completions form. Built-in tools are not offered to the model."""
    tools = []
    for tool in run.tools:
        if tool.get("type") == "function":
            function = {k: v for k, v in tool["function"].items() if v is not None}
            tools.append({"type": "function", "function": function})
    return tools


def tool_choice(run: Run, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    if not tools:
        return None
    choice = run.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") == "function":
            return {"type": "function", "function": {"name": choice["function"]["name"]}}
        return "auto"
    return str(choice) if choice else None


def response_format(run: Run) -> dict[str, Any] | None:
    fmt = run.response_format
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return fmt
    return None


def build_request(
    run: Run,
    provider_model: str,
    thread_messages: list[Message],
    steps: list[RunStep],
    max_tokens: int | None,
) -> ModelRequest:
    own = {m.id: m for m in thread_messages if m.run_id == run.id}
    messages: list[ChatMessage] = []
    if run.instructions:
        messages.append({"role": "system", "content": run.instructions})
    messages.extend(chat_message(m) for m in thread_messages if m.run_id != run.id)
    if run.truncation_strategy.get("type") == "last_messages" and run.truncation_strategy.get(
        "last_messages"
    ):
        keep = int(run.truncation_strategy["last_messages"])
        system = messages[:1] if run.instructions else []
        messages = system + messages[len(system) :][-keep:]
    messages.extend(run_messages(steps, own))
    tools = function_tools(run)
    return ModelRequest(
        model=provider_model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice(run, tools),
        parallel_tool_calls=run.parallel_tool_calls if tools else None,
        temperature=run.temperature,
        top_p=run.top_p,
        max_tokens=max_tokens,
        response_format=response_format(run),
        reasoning_effort=run.reasoning_effort,
    )

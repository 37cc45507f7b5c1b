"""Object ids, made in one place, with OpenAI's prefixes (``asst_``, ``thread_``, ``msg_`` ...)."""

from __future__ import annotations

import hashlib
import secrets
import string
from typing import Literal

_ALPHABET = string.ascii_letters + string.digits

Kind = Literal[
    "assistant",
    "thread",
    "message",
    "run",
    "step",
    "call",
    "file",
    "job",
    "project",
    "key",
    "vector_store",
    "vector_store_file_batch",
    "response",
    "conversation",
    "function_call",
    "function_call_output",
    "file_search_call",
    "code_interpreter_call",
    "web_search_call",
    "reasoning",
    "compaction",
    "mcp_list_tools",
    "mcp_call",
    "mcp_approval_request",
    "mcp_approval_response",
    "container",
    "chat_completion",
]

_PREFIXES: dict[Kind, str] = {
    "assistant": "asst_",
    "thread": "thread_",
    "message": "msg_",
    "run": "run_",
    "step": "step_",
    "call": "call_",
    "file": "file-",  # OpenAI's file ids take a hyphen, not an underscore
    "job": "job_",
    "project": "proj_",
    "key": "key_",
    "vector_store": "vs_",
    "vector_store_file_batch": "vsfb_",
    "response": "resp_",
    "chat_completion": "chatcmpl-",
    "conversation": "conv_",
    "function_call": "fc_",
    "function_call_output": "fco_",
    "file_search_call": "fs_",
    "code_interpreter_call": "ci_",
    "web_search_call": "ws_",
    "reasoning": "rs_",
    "compaction": "cmp_",
    "mcp_list_tools": "mcpl_",
    "mcp_call": "mcp_",
    "mcp_approval_request": "mcpr_",
    "mcp_approval_response": "mcpa_",
    "container": "cntr_",
}

API_KEY_PREFIX = "tl-"
"""Threadline's API keys look like ``tl-<48 random characters>``: recognisable in logs and scanners."""


_UNBIASED = 256 - 256 % len(_ALPHABET)
"""Random bytes below this map evenly onto the alphabet (``byte % 62``); the rest are drawn again."""


def _random_text(length: int) -> str:
    """``length`` characters drawn uniformly from the alphabet, from one read of the system's
    randomness rather than one per character."""
    chars: list[str] = []
    while len(chars) < length:
        chars += [_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(length + 8) if b < _UNBIASED]
    return "".join(chars[:length])


def new_api_key() -> str:
    return API_KEY_PREFIX + _random_text(48)


def new_id(kind: Kind) -> str:
    """A fresh random id such as ``run_3kTq9...`` (24 characters after the prefix, like OpenAI's)."""
    return _PREFIXES[kind] + _random_text(24)


def call_item_id(call_id: str) -> str:
    """The Responses item id of the model's tool call ``call_id`` (``call_X`` -> ``fc_X``): derived,
    not drawn, so a stream can name the item before the item is saved."""
    return _PREFIXES["function_call"] + call_id.removeprefix(_PREFIXES["call"])


def container_id(thread_id: str) -> str:
    """The Responses ``container_id`` of a thread's code kernel (one per thread, kept across its
    responses): derived from the thread, so every call on it names the same container."""
    digest = hashlib.sha256(thread_id.encode()).hexdigest()[:32]
    return _PREFIXES["container"] + digest


def builtin_item_id(tool: str, call_id: str) -> str:
    """The Responses item id of a built-in tool's call ``call_id`` (``call_X`` -> ``fs_X`` for
    file_search, ``ci_X`` for code_interpreter, ``ws_X`` for web_search), derived as
    :func:`call_item_id` is."""
    kinds: dict[str, Kind] = {"file_search": "file_search_call", "web_search": "web_search_call"}
    kind = kinds.get(tool, "code_interpreter_call")
    return _PREFIXES[kind] + call_id.removeprefix(_PREFIXES["call"])

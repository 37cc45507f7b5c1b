"""Assistant declarations: a YAML list of assistants created or updated with the ids it gives.

Code that hard-codes ``asst_...`` ids keeps working: ``THREADLINE_ASSISTANTS_FILE`` is applied at
start-up, ``threadline assistants apply FILE`` on demand. Applying is an upsert per assistant, so it
is idempotent and safe when several processes start at once.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from threadline.api.schemas import CreateAssistantRequest
from threadline.domain.assistants import AssistantService
from threadline.domain.commands import NewAssistant
from threadline.domain.entities import Assistant

_ID = re.compile(r"^asst_[A-Za-z0-9_-]{1,59}$")


class DeclarationError(ValueError):
    pass


def load(path: str | Path) -> list[tuple[str, NewAssistant]]:
    """Parse and validate a declarations file: ``(id, assistant)`` per assistant.

    Every problem is a :class:`DeclarationError` with a one-line message naming the file."""
    try:
        entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeclarationError(f"{path}: cannot read assistant declarations: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise DeclarationError(f"{path}: expected a list of assistants, got {type(entries).__name__}")
    declared: list[tuple[str, NewAssistant]] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise DeclarationError(f"{path}: entry {position} is not a mapping")
        entry = dict(entry)
        assistant_id = str(entry.pop("id", ""))
        if not _ID.match(assistant_id):
            raise DeclarationError(
                f"{path}: entry {position} needs an id like 'asst_...', got {assistant_id!r}"
            )
        if assistant_id in seen:
            raise DeclarationError(f"{path}: entry {position} declares {assistant_id} a second time")
        seen.add(assistant_id)
        try:
            request = CreateAssistantRequest.model_validate(entry)
        except ValidationError as exc:
            raise DeclarationError(f"{path}: assistant {assistant_id}: {_validation_problem(exc)}") from exc
        declared.append((assistant_id, request.command()))
    return declared


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's own message spans several lines with a source excerpt; keep where and what.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        what = exc.problem or "invalid syntax"
        return f"{where}: {what}" + (f" ({exc.context})" if exc.context else "")
    return " ".join(str(exc).split())


def _validation_problem(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(problems)


async def apply(assistants: AssistantService, path: str | Path) -> list[Assistant]:
    return await apply_declared(assistants, load(path))


async def apply_declared(
    assistants: AssistantService, declared: list[tuple[str, NewAssistant]]
) -> list[Assistant]:
    """Create or update each ``(id, assistant)`` from :func:`load`."""
    return [await assistants.apply_assistant(assistant_id, command) for assistant_id, command in declared]

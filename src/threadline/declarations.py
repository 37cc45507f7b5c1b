"""Assistant declarations: a YAML list of assistants created or updated with the ids it gives.

Code that hard-codes ``asst_...`` ids keeps working: ``THREADLINE_ASSISTANTS_FILE`` is applied at
start-up, ``threadline assistants apply FILE`` on demand. Applying is an upsert per assistant, so it
is idempotent and safe when several processes start at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from threadline.api.schemas import CreateAssistantRequest
from threadline.domain.entities import Assistant
from threadline.domain.services import Services

_ID = re.compile(r"^asst_[A-Za-z0-9_-]{1,59}$")


class DeclarationError(ValueError):
    pass


def load(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Parse and validate a declarations file: ``(id, fields)`` per assistant."""
    try:
        entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DeclarationError(f"{path}: cannot read assistant declarations: {exc}") from exc
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise DeclarationError(f"{path}: expected a list of assistants, got {type(entries).__name__}")
    declared: list[tuple[str, dict[str, Any]]] = []
    for position, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise DeclarationError(f"{path}: entry {position} is not a mapping")
        entry = dict(entry)
        assistant_id = str(entry.pop("id", ""))
        if not _ID.match(assistant_id):
            raise DeclarationError(
                f"{path}: entry {position} needs an id like 'asst_...', got {assistant_id!r}"
            )
        try:
            request = CreateAssistantRequest.model_validate(entry)
        except ValidationError as exc:
            raise DeclarationError(f"{path}: assistant {assistant_id}: {exc}") from exc
        fields = request.fields()
        fields.setdefault("tools", [])
        declared.append((assistant_id, fields))
    return declared


async def apply(services: Services, path: str | Path) -> list[Assistant]:
    return [await services.apply_assistant(assistant_id, fields) for assistant_id, fields in load(path)]

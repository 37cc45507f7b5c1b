"""The mark of a field an update request did not send (:data:`KEEP`): such a field keeps its value,
while any other value, ``None`` included, replaces it. Its own module, so that every service's
update command can use it without importing the others."""

from __future__ import annotations

import enum


class Keep(enum.Enum):
    KEEP = "keep"


KEEP = Keep.KEEP
"""An update's field the client did not send: the value stays as it is."""

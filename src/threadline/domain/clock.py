"""The time the domain stamps objects with: whole epoch seconds, as OpenAI's objects carry.

A module of its own so that every domain module (and the adapters) can read it without importing
the run lifecycle.
"""

from __future__ import annotations

import time


def now() -> int:
    return int(time.time())

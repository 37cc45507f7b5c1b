"""Which provider serves which model name.

Until a routing table is configured, one catch-all route sends every model name, unchanged, to
the configured upstream.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from threadline.providers.base import Provider, Route


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str
    """A model name, or a shell-style pattern such as ``gpt-4*``; ``*`` is the catch-all."""
    provider: Provider
    model: str | None = None
    """The provider's own name for the model; ``None`` passes the requested name through."""
    context_window: int | None = None


class RoutingTable:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    def resolve(self, name: str) -> Route | None:
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, rule.pattern):
                return Route(rule.provider, rule.model or name, rule.context_window)
        return None

    def routes(self, model: str) -> bool:
        return self.resolve(model) is not None

    def names(self) -> list[str]:
        return [r.pattern for r in self.rules if not any(ch in r.pattern for ch in "*?[")]

    async def aclose(self) -> None:
        seen: set[int] = set()
        for rule in self.rules:
            if id(rule.provider) not in seen:
                seen.add(id(rule.provider))
                await rule.provider.aclose()

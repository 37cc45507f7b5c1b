"""Shared fixtures: the scripted model, a Threadline server on SQLite in front of it, SDK clients."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support import (
    ThreadlineServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
)
from threadline.config import Settings
from threadline.testing import ScriptedModel


@pytest.fixture(scope="session")
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as scripted:
        yield scripted


@pytest.fixture(autouse=True)
def _fresh_model(request: pytest.FixtureRequest) -> None:
    if "model" in request.fixturenames:
        request.getfixturevalue("model").reset()


BACKEND = os.environ.get("THREADLINE_TEST_BACKEND", "sqlite")
"""Which database the suite runs on: ``sqlite`` (default) or ``postgres`` (``make test`` runs both)."""

_created: list[str] = []


def pytest_report_header(config: pytest.Config) -> str:
    return f"threadline test database: {BACKEND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND == "postgres" and not postgres_available():
        message = "PostgreSQL is not reachable on 127.0.0.1:5432 (trust authentication expected)"
        if os.environ.get("CI"):
            raise pytest.UsageError(message + "; under CI the PostgreSQL suite must run")
        skip = pytest.mark.skip(reason=message + ": skipping the PostgreSQL pass")
        for item in items:
            item.add_marker(skip)


def pytest_unconfigure(config: pytest.Config) -> None:
    for url in _created:
        drop_postgres_database(url)
    # llama-cpp-python opens /dev/null twice when imported (the grammar converter imports it here)
    # and never closes it: close it, or every run ends with two ResourceWarnings.
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()


def database_url(directory: Path) -> str:
    """A fresh database for one server: a SQLite file, or a new PostgreSQL database."""
    if BACKEND == "postgres":
        url = create_postgres_database()
        _created.append(url)
        return url
    return f"sqlite+aiosqlite:///{directory / 'threadline.db'}"


def server_settings(model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A test server's settings: its own database, the scripted model, quick background loops."""
    directory = tmp_path_factory.mktemp("threadline")
    return Settings(
        data_dir=directory,
        database_url=database_url(directory),
        upstream_base_url=model.base_url,
        sweep_interval_seconds=0.2,
        worker_poll_seconds=0.5,
    )


@pytest.fixture
def make_server(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ThreadlineServer]]:
    started: list[ThreadlineServer] = []

    def make(*, run_worker: bool = True, **overrides: Any) -> ThreadlineServer:
        settings = server_settings(model, tmp_path_factory).replace(**overrides)
        server = ThreadlineServer(settings, run_worker=run_worker)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadlineServer]:
    server = ThreadlineServer(server_settings(model, tmp_path_factory))
    yield server
    server.stop()


@pytest.fixture
def server(shared_server: ThreadlineServer) -> ThreadlineServer:
    return shared_server


@pytest.fixture
def client(server: ThreadlineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0) as sdk:
        yield sdk

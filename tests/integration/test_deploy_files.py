"""The deployment files (deploy/compose.yaml, deploy/k8s/*.yaml) and docs/deploy.md stay true.

Docker and Kubernetes are not available to the suite, so this checks what can drift without them:
the YAML parses, every ``THREADLINE_*`` name is a real setting and every value parses as one, the
compose file in the docs is the one in deploy/, each role runs the right command, the API has its
probes, and the worker's grace period outlasts ``THREADLINE_SHUTDOWN_GRACE_SECONDS``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from threadline.config import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOC = ROOT / "docs" / "deploy.md"
COMPOSE = DEPLOY / "compose.yaml"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
SETTINGS = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
NAME = re.compile(r"\bTHREADLINE_[A-Z0-9_]*[A-Z0-9]\b")
# uvicorn's graceful shutdown in ``threadline serve`` (cli.py): an API container must outlast it.
UVICORN_GRACE = 15


def seconds(value: str | int) -> float:
    """A compose duration (``45s``, ``1m30s``) or a number of seconds."""
    if isinstance(value, int):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert parts and value, f"not a duration: {value!r}"
    return int(parts[1] or 0) * 60.0 + int(parts[2] or 0)


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFESTS:
        for obj in yaml.safe_load_all(path.read_text()):
            if obj is not None:
                objects[(obj["kind"], obj["metadata"]["name"])] = obj
    return objects


def pod(objects: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = objects[(kind, name)]["spec"]["template"]["spec"]
    return spec


def k8s_settings(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """What every Threadline pod gets from the ConfigMap and the Secret."""
    values = dict(objects[("ConfigMap", "threadline-settings")]["data"])
    values.update(objects[("Secret", "threadline-secrets")]["stringData"])
    return values


def test_every_yaml_file_parses() -> None:
    assert COMPOSE.exists() and MANIFESTS
    for path in [COMPOSE, *MANIFESTS]:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path.name} is empty"
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S):
        yaml.safe_load(block)


@pytest.mark.parametrize("path", [COMPOSE, *MANIFESTS, DOC], ids=lambda p: p.name)
def test_every_threadline_variable_is_a_setting(path: Path) -> None:
    used = set(NAME.findall(path.read_text()))
    unknown = used - SETTINGS
    assert not unknown, f"{path.name} uses {sorted(unknown)}, which config.Settings does not read"


def test_settings_values_parse() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    environments = [s.get("environment", {}) for s in compose["services"].values()]
    for env in [*environments, k8s_settings(k8s_objects())]:
        # Settings.from_env raises on a value its setting cannot take ("30s" for a float).
        Settings.from_env({k: str(v) for k, v in env.items() if k.startswith(PREFIX)})


def test_docs_show_the_compose_file_as_it_is() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert COMPOSE.read_text() in blocks, "docs/deploy.md must show deploy/compose.yaml verbatim"


def test_compose_roles_and_grace_periods() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["api"]["command"] == ["serve", "--no-worker"]
    assert services["worker"]["command"] == ["worker"]
    for role in ("api", "worker"):
        after = services[role]["depends_on"]["migrate"]["condition"]
        assert after == "service_completed_successfully", f"{role} must start after the migration"
    grace = float(services["worker"]["environment"]["THREADLINE_SHUTDOWN_GRACE_SECONDS"])
    assert seconds(services["worker"]["stop_grace_period"]) > grace
    assert seconds(services["api"]["stop_grace_period"]) > UVICORN_GRACE
    url = services["worker"]["environment"]["THREADLINE_DATABASE_URL"]
    assert url.startswith("postgresql+asyncpg://")


def test_kubernetes_roles_probes_and_grace_periods() -> None:
    objects = k8s_objects()
    settings = k8s_settings(objects)
    api = pod(objects, "Deployment", "threadline-api")
    worker = pod(objects, "Deployment", "threadline-worker")
    migrate = pod(objects, "Job", "threadline-migrate")

    (api_container,) = api["containers"]
    assert api_container["args"] == ["serve", "--no-worker"]
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["terminationGracePeriodSeconds"] > UVICORN_GRACE
    (worker_container,) = worker["containers"]
    assert worker_container["args"] == ["worker"]
    assert worker["terminationGracePeriodSeconds"] > float(settings["THREADLINE_SHUTDOWN_GRACE_SECONDS"])
    assert [c["args"] for c in migrate["containers"]] == [["migrate"]]

    # Every Threadline container reads the same settings, from the ConfigMap and the Secret.
    for spec in (api, worker, migrate):
        for container in spec["containers"]:
            sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
            assert sources == {"threadline-settings", "threadline-secrets"}
    assert settings["THREADLINE_DATABASE_URL"].startswith("postgresql+asyncpg://")

    # The Service routes to the API pods' named port.
    service = objects[("Service", "threadline-api")]["spec"]
    labels = objects[("Deployment", "threadline-api")]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] in {p["name"] for p in api_container["ports"]}

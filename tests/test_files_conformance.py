"""Conformance of ``/files`` against OpenAI's spec: schemathesis fuzzes each operation, multipart
uploads included, and every answer must be below 500, documented, and in the error envelope when
it is an error."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.support import ThreadlineServer
from tests.test_conformance import CHECKS, ENVELOPE_KEYS, SPEC, conformance_spec

OPERATIONS = [
    "GET /files",
    "POST /files",
    "GET /files/{file_id}",
    "DELETE /files/{file_id}",
    "GET /files/{file_id}/content",
]
HEADERS = {"Authorization": "Bearer x"}


@functools.cache
def load_schema() -> Any:
    if not SPEC.exists():
        pytest.skip(f"OpenAI's OpenAPI spec (shared/reference/{SPEC.name}) is not available")
    spec = conformance_spec(yaml.safe_load(SPEC.read_text()))
    schemas = spec["components"]["schemas"]
    # As the live service did (and the SDK's types allow): no expiry and no details are null.
    for name in ("expires_at", "status_details"):
        field = schemas["OpenAIFile"]["properties"][name]
        schemas["OpenAIFile"]["properties"][name] = {"anyOf": [field, {"type": "null"}]}
    # The content comes back as the file's own type, not as the JSON string the spec claims.
    download = spec["paths"]["/files/{file_id}/content"]["get"]["responses"]["200"]
    download["content"] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    return schemathesis.openapi.from_dict(spec).include(path_regex=r"^/files")


@pytest.fixture(scope="module")
def aimed(shared_server: ThreadlineServer) -> Iterator[dict[str, str]]:
    load_schema()
    with openai.OpenAI(base_url=shared_server.url, api_key="x", max_retries=0) as sdk:
        yield {"file_id": sdk.files.create(file=("kept.bin", b"\x00\x01"), purpose="assistants").id}


def test_spec_lists_exactly_the_implemented_file_operations() -> None:
    labels = [result.ok().label for result in load_schema().get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_file_operation_conforms_to_spec(
    label: str, mode: GenerationMode, shared_server: ThreadlineServer, aimed: dict[str, str]
) -> None:
    method, path = label.split(" ", 1)
    operation = load_schema()[path][method]
    if mode is GenerationMode.NEGATIVE and not (operation.body or operation.query):
        pytest.skip("no body or query to make invalid")
    branches = [operation.as_strategy(generation_mode=mode, headers=HEADERS)]
    if operation.path_parameters and method != "DELETE":
        branches.append(operation.as_strategy(generation_mode=mode, headers=HEADERS, path_parameters=aimed))

    @given(case=st.one_of(branches))
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call(base_url=shared_server.url, timeout=30)
        assert response.status_code < 500, f"{response.text}\n{case.as_curl_command()}"
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == ENVELOPE_KEYS and error["message"], error

    check()

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
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conformance.fuzzing import check_answer, fuzz, reference_spec
from tests.conformance.test_conformance import SPEC, conformance_spec
from tests.support import ThreadlineServer

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
    spec = conformance_spec(reference_spec(SPEC))
    schemas = spec["components"]["schemas"]
    # As the live service did (and the SDK's types allow): no expiry and no details are null.
    for name in ("expires_at", "status_details"):
        field = schemas["OpenAIFile"]["properties"][name]
        schemas["OpenAIFile"]["properties"][name] = {"anyOf": [field, {"type": "null"}]}
    # The file list's ``limit`` goes up to 10,000 (the spec's prose), not the 100 of other lists.
    for parameter in spec["paths"]["/files"]["get"]["parameters"]:
        if parameter["name"] == "limit":
            parameter["schema"].update(maximum=10_000)
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

    @fuzz(25, case=st.one_of(branches))
    def check(case: Any) -> None:
        check_answer(case, case.call(base_url=shared_server.url, timeout=30))

    check()

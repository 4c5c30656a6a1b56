"""The contract the package ships (scrapy_sdi/openapi.yaml) and the reference server agree.

schemathesis fuzzes every operation: generated requests, valid and invalid, go to a live server
with a real bearer token; every answer must be documented (status, headers, content type, body
schema) and none may be a 5xx.
Cases come from ``operation.as_strategy()`` under plain Hypothesis: schemathesis' fixture-based
loader (``schemathesis.pytest.from_fixture``) touches pytest internals that pytest 9 removed.
"""

from __future__ import annotations

import importlib.resources
import json
import urllib.request
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.schemas import APIOperation

from scrapy_sdi.testing.pytest_plugin import SDIServerProcess

# read as an installed user would: from the package, not from the checkout
OPENAPI = importlib.resources.files("scrapy_sdi").joinpath("openapi.yaml").read_text("utf-8")
SCHEMA = schemathesis.openapi.from_file(OPENAPI)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
MAX_EXAMPLES = 20
# Every (operation, mode) pair; GET /health takes no input at all, so it has no invalid form.
CASES = [
    pytest.param(operation, mode, id=f"{operation.label} {mode.value}")
    for operation in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode is GenerationMode.NEGATIVE and operation.path == "/health")
]


def _access_token(server: SDIServerProcess) -> str:
    body = json.dumps({"username": server.username, "password": server.password}).encode()
    request = urllib.request.Request(
        server.url + "/auth/token",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SDIServerProcess]:
    with SDIServerProcess(tmp_path_factory.mktemp("openapi")) as server:
        server.set_filters([{"id": 1, "field": "url", "kind": "domain", "pattern": "example.org"}])
        yield server


@pytest.mark.parametrize("operation, mode", CASES)
def test_server_conforms_to_openapi(
    live_server: SDIServerProcess, operation: APIOperation, mode: GenerationMode
) -> None:
    headers = {"Authorization": f"Bearer {_access_token(live_server)}"}

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=live_server.url, headers=headers)

    check()


def test_every_contract_path_is_described() -> None:
    described = {(operation.method.upper(), operation.path) for operation in OPERATIONS}
    assert described == {
        ("POST", "/auth/token"),
        ("POST", "/auth/refresh"),
        ("GET", "/health"),
        ("GET", "/filters"),
        ("POST", "/crawler-results"),
        ("POST", "/crawler-results/status"),
        ("GET", "/status-codes"),
    }


def test_the_server_serves_the_contract_it_ships(live_server: SDIServerProcess) -> None:
    url = live_server.url.rsplit("/api/", 1)[0] + "/openapi.yaml"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/yaml"
        assert response.read().decode("utf-8") == OPENAPI

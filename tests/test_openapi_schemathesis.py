"""docs/openapi.yaml and the reference server agree: schemathesis fuzzes every operation.

Generated requests (valid and invalid) go to a live server with a real bearer token; every
answer must be documented (status, headers, content type, body schema) and no 5xx.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import schemathesis
from schemathesis import BaseSchema

from scrapy_sdi.testing.pytest_plugin import SDIServerProcess

OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
MAX_EXAMPLES = 25


def _access_token(server: SDIServerProcess) -> str:
    body = json.dumps({"username": server.username, "password": server.password}).encode()
    request = urllib.request.Request(server.url + "/auth/token", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


@pytest.fixture
def sdi_schema(sdi_server: SDIServerProcess) -> BaseSchema:
    sdi_server.set_filters([{"id": 1, "field": "url", "kind": "domain", "pattern": "example.org"}])
    schema = schemathesis.openapi.from_path(OPENAPI)
    schema.config.update(base_url=sdi_server.url,
                         headers={"Authorization": f"Bearer {_access_token(sdi_server)}"})
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    return schema


schema = schemathesis.pytest.from_fixture("sdi_schema")


@schema.parametrize()
def test_server_conforms_to_openapi(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_every_contract_path_is_described() -> None:
    loaded = schemathesis.openapi.from_path(OPENAPI)
    operations = {(op.method.upper(), op.path) for op in
                  (result.ok() for result in loaded.get_all_operations())}
    assert operations == {
        ("POST", "/auth/token"), ("POST", "/auth/refresh"), ("GET", "/health"),
        ("GET", "/filters"), ("POST", "/crawler-results"),
        ("POST", "/crawler-results/status"), ("GET", "/status-codes"),
    }

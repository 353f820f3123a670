"""Typed path parameters refused the Kadeploy3 way, and /openapi.json saying what the API takes.

Schemathesis found FastAPI's own 422 JSON answer (not Kadeploy3's) for an
environment version that is not an integer; these pin the fix: HTTP 400,
error 4 in `X-Application-Error-Code`, a message naming the parameter.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from kadeploy.errors import ErrorCode


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
async def test_version_that_is_not_an_integer_is_error_4_naming_it(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/environments/alice/debian/twelve", json={"visibility": "public"})
    assert response.status_code == 400
    assert response.headers["X-Application-Error-Code"] == str(int(ErrorCode.INVALID_OPTION))
    message = base64.b64decode(response.headers["X-Application-Error-Info"]).decode()
    assert message == response.text
    assert "'version'" in message and "'twelve'" in message


async def test_openapi_declares_bodies_queries_and_the_error_answer(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    deploy = document["paths"]["/deployment"]["post"]
    assert set(deploy["requestBody"]["content"]) == {"application/json", "application/x-yaml"}
    body = deploy["requestBody"]["content"]["application/json"]["schema"]
    assert {"nodes", "environment"} <= set(body["required"])
    assert body["properties"]["environment"]["properties"]["kind"]["enum"] == ["database", "anonymous"]
    stats_queries = {p["name"] for p in document["paths"]["/stats"]["get"]["parameters"]}
    assert {"kind", "nodes", "date_min", "fields", "limit"} <= stats_queries
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], f"{method} {path}"
            headers = operation["responses"]["400"]["headers"]
            assert headers["X-Application-Error-Code"]["required"], f"{method} {path}"
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})

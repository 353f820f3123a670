"""The request parameters of the Kadeploy3 API, declared in `/openapi.json` (room `server`).

The routes read their parameters loosely (`server.http.read_params`: query
string and JSON/YAML body merged), so FastAPI cannot infer them; this module
declares them once, by operation, so that the OpenAPI document tells clients
(and API fuzzers such as Schemathesis, tests/security) what each operation
takes. It describes, it does not validate: the routes stay the only judges of
a value, and a value outside these schemas is answered HTTP 400 with the
Kadeploy3 error code headers, which the document declares on every operation
in place of FastAPI's 422. The `client` file server URL is left out on
purpose: it names the caller's own host, which a generic client cannot know.

The few parameters FastAPI does check (typed path parameters: an
environment's version) are refused the Kadeploy3 way too:
`invalid_parameter` turns FastAPI's validation error into error 4
(INVALID_OPTION) naming the parameter and the value.

Imports FastAPI and `kadeploy.errors` only.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi

from kadeploy.errors import ErrorCode, KadeployError

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
INTEGER: Schema = {"type": "integer"}
STRINGS: Schema = {"type": "array", "items": STRING}
LEVEL: Schema = {"type": "string", "enum": ["soft", "hard", "very_hard"]}

NODES: Schema = {**STRINGS, "description": "host names or ranges (node-[1-4].site)"}

ENVIRONMENT_DESCRIPTION: Schema = {
    "type": "object",
    "description": "a kaenv3 environment description",
    "properties": {
        "name": STRING, "version": INTEGER, "description": STRING, "author": STRING,
        "visibility": {"type": "string", "enum": ["private", "shared", "public"]},
        "destructive": BOOLEAN, "os": STRING, "arch": STRING, "filesystem": STRING,
        "partition_type": INTEGER, "multipart": BOOLEAN,
        "image": {"type": "object", "properties": {
            "file": STRING, "kind": {"type": "string", "enum": ["tar", "dd", "fsa"]},
            "compression": STRING}},
        "boot": {"type": "object", "properties": {
            "kernel": STRING, "initrd": STRING, "kernel_params": STRING, "hypervisor": STRING,
            "hypervisor_params": STRING, "block_device": STRING, "partition": INTEGER}},
        "preinstall": {"type": "object", "properties": {"archive": STRING, "compression": STRING,
                                                          "script": STRING}},
        "postinstalls": {"type": "array", "items": {"type": "object", "properties": {
            "archive": STRING, "compression": STRING, "script": STRING}}},
    },
}

ENVIRONMENT: Schema = {
    "type": "object",
    "description": "a recorded environment (kind database: user, name, version) or an anonymous description",
    "properties": {**ENVIRONMENT_DESCRIPTION["properties"],
                   "kind": {"type": "string", "enum": ["database", "anonymous"]}, "user": STRING},
}

COMMON: dict[str, Schema] = {
    "nodes": NODES, "verbose_level": INTEGER, "debug": BOOLEAN, "force": BOOLEAN, "breakpoint": STRING,
    "hook": BOOLEAN, "custom_operations": {"type": "object"}, "ssh_authorized_keys": STRING, "vlan": STRING,
    "pxe": {"type": "object", "properties": {"profile": STRING, "singularities": {"type": "object"},
                                             "files": STRINGS}},
    "block_device": STRING, "deploy_partition": INTEGER, "dry_run": BOOLEAN,
}

TIMEOUT: Schema = {"type": "string", "description": "seconds, or an expression of n (the number of nodes)"}


def _body(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    # YAML too: Kadeploy3's clients may send either (server.http.read_params parses both)
    return {"required": True, "content": {"application/json": {"schema": schema},
                                          "application/x-yaml": {"schema": schema}}}


BODIES: dict[tuple[str, str], Schema] = {
    ("post", "/deployment"): _body({
        **COMMON, "environment": ENVIRONMENT, "boot_partition": INTEGER, "timeout_reboot_classical": TIMEOUT,
        "timeout_reboot_kexec": TIMEOUT, "disable_bootloader_install": BOOLEAN,
        "disable_disk_partitioning": BOOLEAN, "disable_kexec": BOOLEAN, "reformat_tmp_partition": STRING,
        "automata": {"type": "object"}, "retry_failed": INTEGER, "min_success": {"type": "number"},
        "resume": STRING}, ("nodes", "environment")),
    ("post", "/reboot"): _body({
        **COMMON, "kind": {"type": "string", "enum": ["simple", "set_pxe", "deploy_env", "recorded_env"]},
        "level": LEVEL, "check_destructive": BOOLEAN, "environment": ENVIRONMENT,
        "timeout_reboot_classical": TIMEOUT}, ("nodes", "kind")),
    ("put", "/power"): _body({**COMMON, "status": {"type": "string", "enum": ["on", "off"]}, "level": LEVEL},
                             ("nodes", "status")),
    ("post", "/console"): _body({"node": STRING, "dry_run": BOOLEAN}, ("node",)),
    ("post", "/environments"): _body({"environment": ENVIRONMENT_DESCRIPTION, "dry_run": BOOLEAN},
                                     ("environment",)),
    ("put", "/environments"): _body({"update_files": {"type": "object", "additionalProperties": STRING},
                                     "dry_run": BOOLEAN}, ("update_files",)),
    ("put", "/environments/{user}"): _body({"update_files": {"type": "object", "additionalProperties": STRING},
                                            "dry_run": BOOLEAN}, ("update_files",)),
    ("post", "/rights"): _body({"username": STRING, "nodes": NODES, "partitions": STRINGS, "overwrite": BOOLEAN,
                                "dry_run": BOOLEAN}, ("username",)),
}
_MODIFY = _body({"visibility": {"type": "string", "enum": ["private", "shared", "public"]},
                 "toggle_destructive": BOOLEAN, "update_image_checksum": BOOLEAN,
                 "update_preinstall_checksum": BOOLEAN, "update_postinstalls_checksum": BOOLEAN,
                 "dry_run": BOOLEAN})
BODIES[("put", "/environments/{user}/{name}")] = _MODIFY
BODIES[("put", "/environments/{user}/{name}/{version}")] = _MODIFY

_STATS: dict[str, Schema] = {
    "kind": {"type": "string", "enum": ["all", "failure_rates", "steps"]}, "nodes": NODES, "wid": STRING,
    "date_min": STRING, "date_max": STRING, "min_retries": INTEGER, "step_retries": {"type": "array",
                                                                                      "items": INTEGER},
    "min_failure_rate": {"type": "number"}, "fields": STRINGS, "sort": STRINGS, "limit": INTEGER,
}
QUERIES: dict[tuple[str, str], dict[str, Schema]] = {
    ("get", "/environments"): {"username": STRING, "name": STRING, "version": INTEGER, "last": BOOLEAN},
    ("get", "/nodes"): {"nodes": NODES, "list": BOOLEAN},
    ("get", "/power"): {"nodes": NODES},
    ("get", "/stats"): _STATS,
    ("get", "/stats/{operation}"): _STATS,
    ("delete", "/environments/{user}/{name}"): {"last": BOOLEAN},
}


def _add_queries(operation: Schema, queries: dict[str, Schema]) -> None:
    parameters = operation.setdefault("parameters", [])
    declared = {parameter["name"] for parameter in parameters}
    for name, schema in queries.items():
        if name in declared:
            continue
        if schema.get("type") == "array":
            parameters.append({"name": name, "in": "query", "required": False, "schema": schema,
                               "style": "form", "explode": True})
        else:
            parameters.append({"name": name, "in": "query", "required": False, "schema": schema})


ERROR_ANSWER: Schema = {
    "description": "Refused: the Kadeploy3 error code and its message (base64) in headers, the message as text",
    "headers": {
        "X-Application-Error-Code": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        "X-Application-Error-Info": {"required": True, "schema": {"type": "string"}},
    },
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def invalid_parameter(exc: RequestValidationError) -> KadeployError:
    """FastAPI's refusal of a typed parameter, as Kadeploy3 refuses a bad option (error 4, named)."""
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        where, name = (location[0], ".".join(location[1:])) if len(location) > 1 else ("request", "".join(location))
        value = error.get("input")
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        problems.append(f"Invalid {where} parameter {name!r}: {error.get('msg', 'invalid value')} (got {shown})")
    return KadeployError(ErrorCode.INVALID_OPTION, "; ".join(problems) or "Invalid request parameters")


def declare_parameters(app: FastAPI) -> None:
    """Make `app.openapi()` declare the bodies and query parameters above (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
        paths = document.get("paths", {})
        for (method, path), body in BODIES.items():
            if method in paths.get(path, {}):
                paths[path][method]["requestBody"] = body
        for (method, path), queries in QUERIES.items():
            if method in paths.get(path, {}):
                _add_queries(paths[path][method], queries)
        for operations in paths.values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)  # never answered: validation errors are Kadeploy3 errors (400)
                responses["400"] = ERROR_ANSWER
        schemas = document.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        if "components" in document and not schemas:
            document["components"].pop("schemas", None)
            if not document["components"]:
                document.pop("components")
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]

"""Schemathesis hooks for test_openapi_fuzzing.py (loaded by `st run` through SCHEMATHESIS_HOOKS).

* `kadeploy3_answers`, a check: every answer is one Kadeploy3 gives (200, a
  400 with `X-Application-Error-Code` and a base64 `X-Application-Error-Info`
  equal to the text body, or a plain protocol refusal), never FastAPI's 422
  nor a Python traceback in a body.
* Workflow ids: those the server answered (launches, listings) replace a
  generated `wid` half of the time, so that the polling, logs, debugs,
  state, status, error and cancel routes meet real workflows.
* Values that reach past the first check: purely random node names, users and
  environment names are refused at once (unknown node), so a generated value
  is, as often as not, swapped for one the server knows (the test's nodes,
  users and recorded environment); the rest of the request stays as generated,
  which is what drives the deeper code (environment descriptions, partitions,
  PXE profiles, timeouts, rights).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

NODES = [f"node-{i}.c1.test" for i in range(1, 5)]
USERS = ["alice", "bob", "root"]
ENV_NAME = "fuzz-env"  # deployed from, never named in a path (a DELETE would remove it mid-run)
SCRATCH_NAME = "fuzz-scratch"  # the recorded environment that the paths modify and delete
ENV_FILE = "server://" + os.environ.get("KADEPLOY_FUZZ_IMAGE", "/nonexistent/fuzz-env.tgz")
ANONYMOUS = {"kind": "anonymous", "name": "anon", "os": "linux", "filesystem": "ext4",
             "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img"},
             "image": {"file": ENV_FILE, "kind": "tar", "compression": "gzip"}}
RECORDED = {"kind": "database", "user": "alice", "name": ENV_NAME}
ALLOWED = {200, 400, 401, 403, 404, 405, 406, 413, 415}

_nodes = st.one_of(st.lists(st.sampled_from(NODES), min_size=1, max_size=4, unique=True),
                   st.just(["node-[1-2].c1.test"]))
_known: dict[str, st.SearchStrategy[Any]] = {
    "nodes": _nodes, "node": st.sampled_from(NODES), "username": st.sampled_from(USERS),
    "user": st.sampled_from(USERS), "name": st.just(SCRATCH_NAME), "version": st.just(1),
    "environment": st.sampled_from([ANONYMOUS, RECORDED]),
    "deploy_partition": st.sampled_from([1, 2, 3]), "cluster": st.just("c1"),
    "partition": st.sampled_from(["*", "/dev/sda3"]),
}


WIDS: list[str] = []  # workflow ids the server answered, so that /<kind>/{wid} reaches real workflows
MAX_WIDS = 64


def _graft(values: Any) -> st.SearchStrategy[Any]:
    """`values` as generated, or with the keys the server knows replaced by known values."""
    if not isinstance(values, dict):
        return st.just(values)
    known_now = dict(_known)
    if WIDS:
        known_now["wid"] = st.sampled_from(list(WIDS))
    keys = [key for key in values if key in known_now]
    if not keys:
        return st.just(values)
    known = st.fixed_dictionaries({key: known_now[key] for key in keys})
    # a named function, not a lambda: Hypothesis parses a lambda's source to describe it, which is not
    # thread-safe under `st run --workers`
    return st.one_of(st.just(values), known.map(functools.partial(_merged, values)))


def _merged(values: dict[str, Any], swapped: dict[str, Any]) -> dict[str, Any]:
    return {**values, **swapped}


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    return _graft(body)


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _graft(path_parameters)


@schemathesis.hook
def flatmap_query(context: Any, query: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _graft(query)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """Remember the workflow and console ids the server hands out (launches and listings)."""
    if response.status_code != 200 or b'"wid"' not in response.content:
        return
    try:
        answer = response.json()
    except ValueError:
        return
    for item in answer if isinstance(answer, list) else [answer]:
        wid = item.get("wid") if isinstance(item, dict) else None
        if isinstance(wid, str) and wid not in WIDS:
            WIDS.append(wid)
            del WIDS[:-MAX_WIDS]


def _header(response: Any, name: str) -> str | None:
    for key, values in response.headers.items():
        if key.lower() == name.lower():
            return values[0] if values else ""
    return None


@schemathesis.check
def kadeploy3_answers(ctx: Any, response: Any, case: Any) -> None:
    """The answer is one of Kadeploy3's: a known status, error headers on a 400, no traceback."""
    status = response.status_code
    text = response.content.decode("utf-8", "replace")
    if "Traceback (most recent call last)" in text:
        raise AssertionError(f"HTTP {status} body holds a Python traceback")
    if status not in ALLOWED:
        raise AssertionError(f"HTTP {status} is not an answer of this API (expected one of {sorted(ALLOWED)})")
    if status == 400:
        code, info = _header(response, "X-Application-Error-Code"), _header(response, "X-Application-Error-Info")
        if code is None or not code.isdigit() or info is None:
            raise AssertionError(f"HTTP 400 without Kadeploy3's error headers (code {code!r}, info {info!r})")
        try:
            message = base64.b64decode(info, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AssertionError(f"X-Application-Error-Info is not base64 of UTF-8: {info[:80]!r}") from None
        if not message.strip():
            raise AssertionError("HTTP 400 with an empty error message")
        if message != text:
            raise AssertionError(f"error message {message[:80]!r} differs from the body {text[:80]!r}")


EXAMPLES: dict[str, list[Any]] = {
    "nodes": [["node-1.c1.test"], ["node-[1-2].c1.test"]], "node": ["node-1.c1.test"], "username": ["alice"],
    "user": ["alice"], "name": [SCRATCH_NAME], "environment": [RECORDED, ANONYMOUS], "cluster": ["c1"],
    "breakpoint": ["BroadcastEnv"], "timeout_reboot_classical": ["300"], "timeout_reboot_kexec": ["300"],
    "deploy_partition": [3], "kind": ["simple"], "status": ["on"], "pxe": [{"profile": "PROMPT 1"}],
    "block_device": ["/dev/sda"],
}


def _add_examples(schema: Any) -> None:
    """Known values as `examples` of the properties and parameters named in EXAMPLES (walks the document)."""
    if isinstance(schema, list):
        for item in schema:
            _add_examples(item)
        return
    if not isinstance(schema, dict):
        return
    for key, value in schema.get("properties", {}).items() if isinstance(schema.get("properties"), dict) else ():
        if key in EXAMPLES and isinstance(value, dict):
            value["examples"] = EXAMPLES[key]
    if schema.get("in") in ("path", "query") and schema.get("name") in EXAMPLES and "schema" in schema:
        schema["schema"]["examples"] = EXAMPLES[schema["name"]]
    for value in schema.values():
        _add_examples(value)


DESCRIPTION = {key: value for key, value in ANONYMOUS.items() if key != "kind"}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/deployment", "post"): {"nodes": ["node-1.c1.test"], "environment": RECORDED},
    ("/reboot", "post"): {"nodes": ["node-1.c1.test"], "kind": "simple"},
    ("/power", "put"): {"nodes": ["node-1.c1.test"], "status": "on"},
    ("/console", "post"): {"node": "node-1.c1.test"},
    ("/environments", "post"): {"environment": {**DESCRIPTION, "name": "fuzz-added"}},
    ("/environments/{user}/{name}", "put"): {"visibility": "shared"},
    ("/environments/{user}/{name}/{version}", "put"): {"visibility": "shared"},
    ("/rights", "post"): {"username": "bob", "nodes": ["node-3.c1.test"], "partitions": ["*"]},
}


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """Examples of known values, and a whole valid body per operation as the base of the coverage phase."""
    _add_examples(raw_schema)
    for (path, method), body in BODIES.items():
        operation = raw_schema.get("paths", {}).get(path, {}).get(method)
        if operation and "requestBody" in operation:
            for media in operation["requestBody"]["content"].values():  # JSON and YAML
                media["examples"] = {"valid": {"value": body}}

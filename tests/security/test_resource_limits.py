"""Issue 16, class 1, against a real kadeploy3d process: oversized requests cost nothing.

The daemon is the testbed's dummy (`kadeploy_testbed.dummy`: the real server,
a runner that touches no node) with 4 nodes. A huge node range is a 400
naming the range, answered about as fast as `/version`, which keeps answering
meanwhile; deep bodies are 400; a 100-digit integer in any parameter of any
route is never a server error; an error listing unknown nodes is bounded; and
the daemon's resident memory grows by less than `MEMORY_GROWTH_BOUND` over a
sequence of oversized requests.
"""

from __future__ import annotations

import base64
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "catalog"))
from kadeploy3d import Kadeploy3d  # noqa: E402

HUGE = "node-[1-1000000000].c1.test"
BIG = "1" + "0" * 99  # 100 digits
MEMORY_GROWTH_BOUND = 32 * 1024 * 1024  # bytes of RSS the whole oversized sequence may leave behind
RELATIVE_BOUND = 50  # a refused huge range costs at most this many /version round trips

#: every route taking `nodes`, with the body or query it needs besides
NODE_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/deployment", {"environment": {"kind": "database", "name": "debian12-min"}}),
    ("POST", "/reboot", {"kind": "set_pxe", "pxe": {"profile": "x"}}),
    ("PUT", "/power", {"status": "on"}),
    ("GET", "/power", {}),
    ("GET", "/nodes", {}),
    ("GET", "/rights", {}),
    ("POST", "/rights", {"username": "bob"}),
    ("DELETE", "/rights/bob", {}),
    ("GET", "/stats", {"kind": "failure_rates"}),
]

#: every parameter name a route reads (grep of the server's `params` keys)
PARAMETERS = ("automata", "block_device", "boot_partition", "breakpoint", "check_destructive", "client",
              "custom_operations", "date_max", "date_min", "debug", "deploy_partition", "environment", "fields",
              "force", "hook", "kind", "last", "level", "limit", "list", "min_failure_rate", "min_retries",
              "min_success", "name", "node", "nodes", "overwrite", "partitions", "pxe", "reformat_tmp_partition",
              "resume", "retry_failed", "sort", "ssh_authorized_keys", "status", "step_retries",
              "timeout_reboot_classical", "timeout_reboot_kexec", "toggle_destructive", "update_files",
              "username", "verbose_level", "version", "visibility", "vlan", "wid")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kadeploy3d]:
    server = Kadeploy3d(tmp_path_factory.mktemp("limits"), delay=0.0)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def root(daemon: Kadeploy3d) -> Iterator[httpx.Client]:
    with daemon.http("root") as client:
        yield client


def send(client: httpx.Client, method: str, path: str, params: dict[str, Any], **extra: Any) -> httpx.Response:
    """GET and DELETE carry their parameters in the query string, the others in a JSON body."""
    if method in ("GET", "DELETE"):
        query = {k: v if isinstance(v, (str, list)) else str(v) for k, v in params.items()}
        return client.request(method, path, params=query, **extra)
    return client.request(method, path, json=params, **extra)


def error_info(response: httpx.Response) -> str:
    return base64.b64decode(response.headers.get("X-Application-Error-Info", "")).decode()


def version_round_trip(client: httpx.Client, times: int = 7) -> float:
    durations = []
    for _ in range(times):
        started = time.perf_counter()
        assert client.get("/version").status_code == 200
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def rss(daemon: Kadeploy3d) -> int:
    assert daemon.process is not None
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- node ranges ------------------------------------------------------------------

def test_a_huge_node_range_is_a_clear_400_as_fast_as_a_few_version_round_trips(root: httpx.Client) -> None:
    version = version_round_trip(root)
    refused = []
    for _ in range(3):
        started = time.perf_counter()
        response = root.post("/deployment", json={"nodes": [HUGE], **NODE_ROUTES[0][2]})
        refused.append(time.perf_counter() - started)
        assert response.status_code == 400
        assert response.headers["X-Application-Error-Code"] == "2"
        assert f"'{HUGE}'" in error_info(response) and "1000000000 nodes" in error_info(response)
    assert min(refused) < RELATIVE_BOUND * version, (min(refused), version)
    assert min(refused) < 1.0


@pytest.mark.parametrize(("method", "path", "extra"), NODE_ROUTES, ids=[f"{m} {p}" for m, p, _ in NODE_ROUTES])
def test_every_route_taking_nodes_refuses_a_huge_range_naming_it(root: httpx.Client, method: str, path: str,
                                                                 extra: dict[str, Any]) -> None:
    response = send(root, method, path, {"nodes": HUGE, **extra}, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 400, response.text
    assert response.headers["X-Application-Error-Code"] == "2"
    assert HUGE in error_info(response)


@pytest.mark.parametrize("path", ["/nodes", "/rights"])
def test_a_range_larger_than_the_site_is_refused_by_the_site_size(root: httpx.Client, path: str) -> None:
    response = root.get(path, params={"nodes": "node-[1-5].c1.test"})
    assert response.status_code == 400
    assert "more than this site has (4)" in error_info(response)


def test_version_keeps_answering_while_huge_ranges_arrive(daemon: Kadeploy3d, root: httpx.Client) -> None:
    idle = version_round_trip(root)
    stop = threading.Event()
    statuses: list[int] = []

    def flood() -> None:
        with daemon.http("root") as client:
            while not stop.is_set():
                for method, path, extra in NODE_ROUTES[:4]:
                    statuses.append(send(client, method, path, {"nodes": HUGE, **extra}).status_code)

    flooders = [threading.Thread(target=flood) for _ in range(4)]
    for thread in flooders:
        thread.start()
    try:
        time.sleep(0.2)
        busy = version_round_trip(root, times=15)
    finally:
        stop.set()
        for thread in flooders:
            thread.join(timeout=30)
    assert statuses and set(statuses) == {400}
    # four clients keep the server busy with refusals: /version waits for a few of them at most
    assert busy < RELATIVE_BOUND * idle, (busy, idle)


# -- bodies ---------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["application/json", "application/x-yaml"])
def test_a_deeply_nested_body_is_a_400(root: httpx.Client, content_type: str) -> None:
    body = '{"nodes": ' + "[" * 5000 + "]" * 5000 + "}"
    response = root.post("/deployment", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.headers["X-Application-Error-Code"] == "4"
    assert "nested deeper than" in error_info(response)


def test_a_yaml_body_with_aliases_is_a_400(root: httpx.Client) -> None:
    body = "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20))
    response = root.post("/environments", content=body, headers={"Content-Type": "application/x-yaml"})
    assert response.status_code == 400 and "aliases" in error_info(response)


def test_a_50_kb_query_string_gets_a_bounded_refusal(root: httpx.Client) -> None:
    response = root.get("/nodes", params={"nodes": ",".join(f"n{i}.c1.test" for i in range(4000))})
    assert response.status_code == 400
    assert len(response.content) < 8192 and len(response.headers["X-Application-Error-Info"]) < 8192
    assert root.get("/version").status_code == 200


# -- integers -------------------------------------------------------------------------

def _operations(client: httpx.Client) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() for method in operations
            if method in ("get", "post", "put", "delete")]


def _filled(path: str) -> str:
    """Every path parameter a 100-digit number."""
    parts = [BIG if part.startswith("{") else part for part in path.split("/")]
    return "/".join(parts)


def test_a_100_digit_integer_in_any_parameter_of_any_route_is_never_a_server_error(root: httpx.Client) -> None:
    failures = []
    operations = _operations(root)
    assert len(operations) > 20
    for method, path in operations:
        if path.startswith("/console") and method == "GET" and "{" not in path:
            continue
        url = _filled(path)
        for name in ("",) + PARAMETERS:
            params: dict[str, Any] = {name: int(BIG)} if name else {}
            response = send(root, method, url, params, headers={"Accept-Encoding": "gzip"})
            if response.status_code >= 500:
                failures.append(f"{method} {url} {name}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize(("method", "path", "params"), [
    ("GET", "/environments", {"version": BIG}),
    ("GET", "/environments", {"version": int(BIG)}),
    ("PUT", f"/environments/root/debian/{BIG}", {"visibility": "public"}),
    ("DELETE", f"/environments/root/debian/{BIG}", {}),
    ("GET", "/stats", {"limit": BIG}),
    ("GET", "/stats", {"min_retries": BIG}),
    ("GET", "/stats", {"date_min": BIG}),
    ("POST", "/deployment", {"nodes": ["node-1.c1.test"], "environment": {"name": "debian", "version": int(BIG)}}),
    ("POST", "/deployment", {"nodes": ["node-1.c1.test"], "environment": {"name": "debian", "version": BIG}}),
    ("POST", "/deployment", {"nodes": ["node-1.c1.test"], "environment": {"name": "debian"},
                             "deploy_partition": int(BIG)}),
    ("POST", "/environments", {"environment": {"name": "big", "version": int(BIG), "os": "linux",
                                               "image": {"file": "/tmp/x.tgz", "kind": "tar", "compression": "gzip"},
                                               "boot": {"kernel": "/vmlinuz"}, "filesystem": "ext4"}}),
    ("POST", "/environments", {"environment": {"name": "big", "version": 2 ** 40, "os": "linux",
                                               "image": {"file": "/tmp/x.tgz", "kind": "tar", "compression": "gzip"},
                                               "boot": {"kernel": "/vmlinuz"}, "filesystem": "ext4"}}),
], ids=lambda value: str(value)[:40] if isinstance(value, str) else None)
def test_integers_read_as_integers_are_refused_with_a_400(root: httpx.Client, method: str, path: str,
                                                          params: dict[str, Any]) -> None:
    response = send(root, method, path, params, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 400, response.text
    assert len(response.headers["X-Application-Error-Info"]) < 1024


# -- error size --------------------------------------------------------------------------

def test_an_error_listing_unknown_nodes_is_bounded(root: httpx.Client) -> None:
    """Below the launch floor (1,024 names) unknown nodes are listed, the first ten and how many more."""
    unknown = [f"stranger-{i}.c1.test" for i in range(1000)]
    response = root.post("/deployment", json={"nodes": unknown, **NODE_ROUTES[0][2]})
    assert response.status_code == 400 and response.headers["X-Application-Error-Code"] == "2"
    assert "stranger-0.c1.test" in error_info(response)
    assert len(response.headers["X-Application-Error-Info"]) < 8192 and len(response.content) < 8192


# -- memory -----------------------------------------------------------------------------

def _oversized(client: httpx.Client) -> None:
    for method, path, extra in NODE_ROUTES:
        send(client, method, path, {"nodes": HUGE, **extra}, headers={"Accept-Encoding": "gzip"})
    big_list = [f"n{i}.c1.test" for i in range(60000)]  # just under 1 MB of JSON
    assert client.post("/deployment", json={"nodes": big_list}).status_code == 400
    deep = "[" * 400000 + "]" * 400000
    assert client.post("/deployment", content=deep, headers={"Content-Type": "application/json"}).status_code == 400
    yaml_body = "nodes:\n" + "".join(f"- n{i}.c1.test\n" for i in range(50000))
    assert client.post("/deployment", content=yaml_body,
                       headers={"Content-Type": "application/x-yaml"}).status_code == 400
    assert client.post("/deployment", content=b"x" * (2 * 1024 * 1024)).status_code == 413
    assert client.get("/environments", params={"version": BIG}).status_code == 400


def test_memory_stays_bounded_over_a_sequence_of_oversized_requests(daemon: Kadeploy3d) -> None:
    with daemon.http("root") as client:
        client.timeout = httpx.Timeout(60)
        _oversized(client)  # warm-up: imports, caches and arenas every path needs once
        before = rss(daemon)
        for _ in range(5):
            _oversized(client)
        after = rss(daemon)
        assert client.get("/version").status_code == 200
    print(f"kadeploy3d RSS: {before >> 20} MB after the warm-up, {after >> 20} MB after 5 oversized sequences")
    assert after - before < MEMORY_GROWTH_BOUND, f"RSS grew from {before >> 20} MB to {after >> 20} MB"

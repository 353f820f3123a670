"""Issue 16, class 1, in process: sizes a request controls are bounded before any work.

A node range is counted without being expanded (and the count agrees with
ClusterShell's expansion), bodies are parsed with a depth bound and no YAML
aliases, integers stay within the database's columns, and error messages
listing nodes stay short.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from ClusterShell.NodeSet import NodeSet, NodeSetParseError
from hypothesis import given, settings
from hypothesis import strategies as st

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import count, expand, expand_all, listed
from kadeploy.server.http import MAX_DEPTH, MAX_ERROR_MESSAGE, as_dict, as_int, check_bounds, error_response, parse_body
from kadeploy.server.nodelists import site_nodes

SITE = {f"node-{i}.c1": "c1" for i in range(1, 5)}

# -- node ranges ---------------------------------------------------------------

# Kadeploy3's host name syntax has no '/': no steps here
_items = st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda t: f"{min(t)}-{max(t)}")
_groups = st.lists(st.one_of(st.integers(0, 99).map(str), _items), min_size=1, max_size=3).map(",".join)
_elements = st.lists(st.one_of(st.sampled_from(["n", "gdx-", "a.b-", "x"]), _groups.map(lambda g: f"[{g}]")),
                     min_size=1, max_size=4).map("".join).filter(lambda e: not e.startswith("["))


@settings(max_examples=300, deadline=None)
@given(st.lists(_elements, min_size=1, max_size=3).map(",".join))
def test_the_count_bounds_clustershells_expansion_without_expanding(pattern: str) -> None:
    try:
        expanded = list(NodeSet(pattern))
    except NodeSetParseError:  # e.g. `n[1][2]`: refused by ours as well, as error 2
        with pytest.raises(KadeployError) as refused:
            expand(pattern)
        assert refused.value.code == ErrorCode.INVALID_NODELIST
        return
    assert count(pattern) >= len(expanded)
    if "[" in pattern:
        assert expand(pattern) == expanded


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10 ** 6), st.integers(0, 10 ** 6), st.integers(1, 9))
def test_a_single_range_is_counted_exactly(first: int, span: int, step: int) -> None:
    pattern = f"node-[{first}-{first + span}/{step}].c1" if step > 1 else f"node-[{first}-{first + span}].c1"
    assert count(pattern) == span // step + 1


def test_a_billion_node_range_is_refused_at_once_naming_it() -> None:
    started = time.monotonic()
    assert len(expand("node-[1-65536].c1")) == 65536  # the reference: the largest range accepted
    expanding = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(KadeployError) as refused:
        expand("node-[1-1000000000].c1")
    refusing = time.monotonic() - started
    assert refusing < expanding, (refusing, expanding)  # counted and refused, never expanded
    assert refused.value.code == ErrorCode.INVALID_NODELIST
    assert "'node-[1-1000000000].c1'" in refused.value.message and "1000000000 nodes" in refused.value.message


def test_a_product_of_ranges_is_refused_too() -> None:
    with pytest.raises(KadeployError, match="names 1000000000000 nodes"):
        expand("n[1-1000000]x[1-1000000]")


def test_many_small_ranges_are_bounded_together() -> None:
    with pytest.raises(KadeployError, match="more than one request may name"):
        expand_all(["n[1-60000]", "m[1-60000]"])
    assert len(expand_all(["n[1-3]", "n[2-4]"], limit=8)) == 4


def test_the_site_bounds_a_request_by_its_node_count() -> None:
    with pytest.raises(KadeployError, match=r"names 5 nodes, more than this site has \(4\)"):
        site_nodes(SITE, ["node-[1-5].c1"])
    assert site_nodes(SITE, ["node-[1-4].c1"]) == list(SITE)


def test_a_bound_with_thousands_of_digits_is_a_clear_error() -> None:
    with pytest.raises(KadeployError, match="too many digits"):
        expand("n[1-" + "9" * 5000 + "]")


def test_unknown_nodes_are_listed_up_to_ten_then_counted() -> None:
    assert listed([f"n{i}" for i in range(25)]) == ", ".join(f"n{i}" for i in range(10)) + " and 15 more"
    with pytest.raises(KadeployError) as refused:
        site_nodes({f"n{i}": "c" for i in range(100000)}, ["x[1-50000]"])
    assert len(refused.value.message) < 200 and "and 49990 more" in refused.value.message


# -- bodies and values ---------------------------------------------------------------

@pytest.mark.parametrize("is_yaml", [False, True])
def test_a_body_nested_deeper_than_the_bound_is_refused(is_yaml: bool) -> None:
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(KadeployError, match="nested deeper"):
        parse_body(deep, is_yaml)
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_body(ok, is_yaml) == json.loads(ok)


def test_a_json_body_deeper_than_the_interpreter_is_a_clear_error() -> None:
    with pytest.raises(KadeployError, match="nested deeper"):
        parse_body("[" * 100000 + "]" * 100000, False)


def test_yaml_aliases_are_refused() -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20))
    with pytest.raises(KadeployError, match="aliases"):
        parse_body(laughs, True)


@pytest.mark.parametrize("body", ['{"a": 1' + "0" * 99 + "}", '{"a": [{"b": -1' + "0" * 30 + "}]}",
                                  '{"a": Infinity}', '{"a": NaN}', '{"a": 1e999}'])
def test_integers_beyond_64_bits_and_non_finite_floats_are_refused(body: str) -> None:
    with pytest.raises(KadeployError) as refused:
        parse_body(body, False)
    assert refused.value.code == ErrorCode.INVALID_OPTION
    assert "/a" in refused.value.message


def test_the_walk_names_where_the_integer_is() -> None:
    with pytest.raises(KadeployError, match="/environment/version"):
        check_bounds({"environment": {"name": "x", "version": 10 ** 30}})


@pytest.mark.parametrize("value", ["1" + "0" * 99, 10 ** 99, -(10 ** 99), 2 ** 31, "1" * 5000, float("inf")])
def test_as_int_keeps_integers_in_the_sql_integer_column(value: object) -> None:
    with pytest.raises(KadeployError) as refused:
        as_int({"limit": value}, "limit", minimum=1)
    assert refused.value.code == ErrorCode.INVALID_OPTION and "'limit'" in refused.value.message
    assert len(refused.value.message) < 200
    assert as_int({"limit": str(2 ** 31 - 1)}, "limit") == 2 ** 31 - 1


def test_a_mapping_in_the_query_string_is_bounded_like_a_body() -> None:
    with pytest.raises(KadeployError, match="nested deeper"):
        as_dict({"pxe": "{\"a\":" * 50 + "1" + "}" * 50}, "pxe")
    with pytest.raises(KadeployError, match="beyond 64 bits"):
        as_dict({"pxe": '{"a": ' + "9" * 100 + "}"}, "pxe")


def test_error_headers_are_cut_to_the_bound() -> None:
    response = error_response(KadeployError(ErrorCode.INVALID_NODELIST, "x" * 10 ** 6))
    info = base64.b64decode(response.headers["X-Application-Error-Info"]).decode()
    assert MAX_ERROR_MESSAGE < len(info) < MAX_ERROR_MESSAGE + 100
    assert info.endswith("(1000000 characters)") and len(response.body) == len(info.encode())


def test_the_md5_memo_of_server_files_is_bounded(tmp_path, monkeypatch) -> None:
    from kadeploy.catalog import files as catalog_files

    monkeypatch.setattr(catalog_files, "MD5_MEMO_SIZE", 3)
    fetcher = catalog_files.FileFetcher(cache_dir=tmp_path / "cache", server_dirs=[tmp_path])
    image = tmp_path / "image.tgz"
    for round_ in range(10):  # each rewrite is a new (inode, size, mtime) key
        image.write_bytes(b"x" * (round_ + 1))
        assert fetcher._server_file(f"server://{image}", "image", None).size == round_ + 1
    assert len(fetcher._md5_memo) <= 3


async def test_finished_workflows_are_bounded_and_drop_their_run(monkeypatch) -> None:
    """Power statuses claim no node: only this bound keeps a flood of them from growing the registry."""
    import asyncio

    from kadeploy.operations import Operation, PowerRequest
    from kadeploy.server import workflows as server_workflows
    from kadeploy.server.metrics import Metrics

    class Database:
        async def run(self, work, dry_run: bool = False):  # noqa: ANN001, ANN202
            return work(None)

    class Runner:
        async def run(self, op, sink):  # noqa: ANN001, ANN202
            sink.set_status_provider(lambda: {"c1": {"loaded": "x" * 1000}})
            sink.debug("node-1.c1", "y" * 100)
            raise KadeployError(ErrorCode.EXECUTE_ERROR, "status failed")

    monkeypatch.setattr(server_workflows, "MAX_FINISHED_WORKFLOWS", 5)
    registry = server_workflows.WorkflowRegistry(Database(), Runner(), Metrics())
    launched = []
    for _ in range(12):
        op = Operation(wid=server_workflows.new_wid("power-status"), kind="power-status", user="bob",
                       nodes={"c1": ["node-1.c1"]}, options=PowerRequest(), debug=True,
                       request={"nodes": ["node-1.c1"], "padding": "p" * 10000})
        workflow = await registry.launch(op)
        await asyncio.wait_for(workflow.task, 5)
        launched.append(workflow)
    assert len(registry.workflows) <= 6  # the bound, and the one just launched
    assert launched[-1].wid in registry.workflows and launched[0].wid not in registry.workflows
    assert all(workflow._status_provider is None and workflow.op.request == {} for workflow in launched)


def test_a_feed_stops_growing_at_its_bound() -> None:
    from kadeploy.server.workflows import _Feed

    feed = _Feed(max_chars=1000)
    for _ in range(100):
        feed.append("node-1", "z" * 100)
    assert feed.chars <= 1000 and feed.truncated
    assert feed.read(None).count("output truncated") == 1

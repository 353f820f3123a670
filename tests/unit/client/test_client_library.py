"""Client library: client.conf, node arguments, log merging, result text, export server, dispatch."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kadeploy.client.config import load_client_config, parse_client_config
from kadeploy.client.errors import ClientError, exit_status_of
from kadeploy.client.export import FileExporter, encode_path, etag_of
from kadeploy.client.multiserver import dispatch
from kadeploy.client.nodes import check_nodes, collect_nodes
from kadeploy.client.output import (
    json_result,
    macro_progress,
    merge_log_lines,
    result_lines,
    status_lines,
)
from kadeploy.client.session import GenericOptions, Session
from kadeploy.errors import ConfigError, ErrorCode, KadeployError


def test_client_conf_defaults_secure_and_picks_named_server(tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    conf.write_text("default: nancy\nservers:\n- {name: lille, hostname: l.fr, port: 25300}\n"
                    "- {name: nancy, hostname: n.fr, port: 443, secure: false, auth_headers_prefix: X-K-}\n")
    config = load_client_config(conf)
    assert config.server().name == "nancy"
    assert config.server().base_url == "http://n.fr:443"
    assert config.server("lille").secure is True
    assert config.server("lille").auth_headers_prefix is None
    with pytest.raises(ConfigError, match="paris server is not defined.*lille, nancy"):
        config.server("paris")


def test_client_conf_errors_name_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[servers/0\]/port"):
        parse_client_config({"servers": [{"name": "a", "hostname": "h", "port": "x"}]}, tmp_path / "c")
    with pytest.raises(ConfigError, match="No server"):
        parse_client_config({"servers": []})
    with pytest.raises(ConfigError, match="File not found"):
        load_client_config(tmp_path / "missing.conf")


def test_nodes_from_ranges_and_files_with_comments(tmp_path: Path) -> None:
    node_file = tmp_path / "nodes"
    node_file.write_text("# my nodes\nnode-5.c1\n\nnode-[1-2].c1  # dup of -m\n")
    nodes = collect_nodes(["node-[1-2].c1"], [str(node_file)])
    assert nodes == ["node-1.c1", "node-2.c1", "node-5.c1"]
    assert collect_nodes(None, ["-"], stdin=io.StringIO("a.c1\nb.c1\n")) == ["a.c1", "b.c1"]


def test_bad_node_name_is_invalid_nodelist() -> None:
    with pytest.raises(KadeployError) as info:
        collect_nodes(["node;rm -rf"], None)
    assert info.value.code == ErrorCode.INVALID_NODELIST


def test_short_names_resolve_to_unique_fqdn_and_unknown_nodes_are_refused() -> None:
    managed = ["node-1.c1.testbed", "node-2.c1.testbed", "node-10.c1.testbed"]
    assert check_nodes(["node-1", "node-2.c1.testbed"], managed, "s") == ["node-1.c1.testbed", "node-2.c1.testbed"]
    with pytest.raises(ClientError, match="node-3") as info:
        check_nodes(["node-3"], managed, "s")
    assert exit_status_of(info.value) == 1  # client.rb `launch`: error("The nodes ... does not belongs ...")


def test_logs_are_merged_by_timestamp_and_debug_tagged() -> None:
    merged = merge_log_lines(["2.0|second\n1.0|first|with pipe\n", "1.5|cluster2\n"], ["1.7|ssh node-1 ok\n"])
    assert merged == ["first|with pipe", "cluster2", "[dbg] ssh node-1 ok", "second"]


def test_result_block_lists_ok_then_ko_with_errors() -> None:
    info = {"nodes": {"ok": ["n1", "n2"], "ko": ["n3"]}}
    states = {"n3": {"error": "BroadcastEnvKascade-send_environment: broken pipe"}}
    assert result_lines("Deployment", info, states) == [
        "The deployment is successful on nodes", "n1", "n2",
        "The deployment failed on nodes", "n3 (BroadcastEnvKascade-send_environment: broken pipe)",
    ]
    assert result_lines("Reboot", {"nodes": {"ok": [], "ko": []}}, {}) == []


def test_status_display_and_progress_counts() -> None:
    status = {"c1": {"SetDeploymentEnvUntrusted": {"wait_reboot": {
        "nodes": {"OK": ["n1"], "KO": ["n4"], "**": ["n2", "n3"]}, "time": 63}}}}
    lines = status_lines("Deployment", status, 70)
    assert lines[1] == "Deployment status (70s):"
    assert "  [SetDeploymentEnvUntrusted-wait_reboot] ~63s (**)" in lines
    assert "     n2" in lines
    counts = macro_progress(status)["SetDeploymentEnvUntrusted"]
    assert (counts.ok, counts.ko, counts.running, counts.time) == (1, 1, 2, 63.0)
    assert status_lines("Deployment", {}, 1)[1] == "Deployment did not start at the moment"


def test_json_result_has_per_node_state_step_and_error() -> None:
    doc = json_result("Deployment", "D-1", "s", {"nodes": {"ok": ["n1"], "ko": ["n2"]}},
                      {"n1": {"macro": "BootNewEnvKexec", "micro": "wait_reboot", "state": "ok"},
                       "n2": {"macro": "SetDeploymentEnvUntrusted", "micro": "reboot", "state": "ko",
                              "error": "x", "durations": [3, 0, 0]}}, 12.5)
    assert doc["nodes"]["n2"] == {"state": "ko", "detail": "ko", "macro": "SetDeploymentEnvUntrusted",
                                  "micro": "reboot", "error": "x", "durations": [3, 0, 0]}
    assert doc["nodes"]["n1"]["micro"] == "wait_reboot"
    json.dumps(doc)


def test_dispatch_sends_each_node_to_its_server() -> None:
    shares = dispatch(["a-1.s1", "b-1.s2", "a-2.s1"], {"s1": ["a-1.s1", "a-2.s1"], "s2": ["b-1.s2"], "s3": ["c"]})
    assert shares == {"s1": ["a-1.s1", "a-2.s1"], "s2": ["b-1.s2"]}
    with pytest.raises(ClientError, match="^The nodes z-1 does not belongs to any server$"):  # client.rb launch
        dispatch(["z-1"], {"s1": ["a-1.s1"]})


def test_export_serves_only_registered_files_with_etag(tmp_path: Path) -> None:
    image = tmp_path / "image.tgz"
    image.write_bytes(b"x" * 1000)
    other = tmp_path / "secret"
    other.write_text("no")
    exporter = FileExporter()
    exporter.add(str(image))
    exporter.start()
    try:
        base = f"http://127.0.0.1:{exporter.port}"
        with urllib.request.urlopen(base + encode_path(image), timeout=5) as response:
            assert response.read() == b"x" * 1000
            assert response.headers["ETag"] == etag_of(image)
            st = image.stat()
            assert response.headers["ETag"] == f'"{st.st_ino:x}-{st.st_size:x}-{int(st.st_mtime):x}"'
        for path in (encode_path(other), "/etc/passwd", "/" + base64.urlsafe_b64encode(b"/etc/passwd").decode()):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(base + path, timeout=5)
            assert info.value.code == 404
        request = urllib.request.Request(base + encode_path(image), headers={"If-None-Match": etag_of(image)})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 304
    finally:
        exporter.stop()


def test_export_over_https_with_generated_certificate(tmp_path: Path) -> None:
    import ssl

    key = tmp_path / "authorized_keys"
    key.write_text("ssh-ed25519 AAAA test\n")
    exporter = FileExporter(secure=True)
    exporter.add(f"local://{key}")
    exporter.start()
    try:
        assert exporter.url("127.0.0.1").startswith("https://127.0.0.1:")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{exporter.port}{encode_path(key)}"
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            assert response.read() == key.read_bytes()
    finally:
        exporter.stop()


def test_unreadable_local_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KadeployError, match="Cannot read file"):
        FileExporter().add(str(tmp_path / "nope"))


def test_server_error_code_becomes_exit_status_and_message(fake_server) -> None:
    fake = fake_server(["n1.c1"], launch_error=(7, "The environment 'nope' does not exist"))
    with Session(GenericOptions()) as session:
        with pytest.raises(ClientError) as info:
            session.primary.post("/deployment", {"nodes": ["n1.c1"]})
    assert info.value.exit_status == 7
    assert "The environment 'nope' does not exist" in info.value.message
    assert fake.requests_to("POST", "/deployment")[0][4]["X-Kadeploy-User"] == "tester"


def test_http_errors_map_as_kadeploy3_and_unreachable_server_is_one_line(fake_server, tmp_path: Path) -> None:
    fake = fake_server(["n1.c1"])
    original = type(fake).route
    fake.route = lambda method, path, query, body: ((409, {}, "busy") if path == "/conflict"
                                                    else original(fake, method, path, query, body))
    with Session(GenericOptions()) as session:
        # common/http.rb: a 404 is `error("Resource not found #{path}")` (exit 1), another status
        # "#{body}\n[HTTP Error ##{code} on #{method} #{path}]" (exit 2)
        with pytest.raises(ClientError) as info:
            session.primary.get("/nothing/here")
        assert info.value.exit_status == 1 and info.value.message == "Resource not found /nothing/here"
        with pytest.raises(ClientError) as info:
            session.primary.get("/conflict")
        assert info.value.exit_status == 2 and info.value.message == "busy\n[HTTP Error #409 on GET /conflict]"
        with pytest.raises(ClientError) as info:  # Net::HTTPRequest#path keeps the query string
            session.primary.get("/conflict", {"user": "a b", "last": "true"})
        assert info.value.message == "busy\n[HTTP Error #409 on GET /conflict?user=a+b&last=true]"
    (tmp_path / "client.conf").write_text("default: x\nservers:\n- {name: x, hostname: 127.0.0.1, port: 1, secure: false}\n")
    with pytest.raises(ClientError, match="Unable to reach the server x") as info:
        Session(GenericOptions()).open()
    assert "\n" not in info.value.message


def test_basic_auth_is_sent_with_password(fake_server) -> None:
    fake = fake_server(["n1.c1"])
    with Session(GenericOptions(password="s3cret")) as session:
        session.primary.get("/nodes", {"list": True})
    expected = "Basic " + base64.b64encode(b"tester:s3cret").decode()
    assert fake.requests_to("GET", "/nodes")[0][4]["Authorization"] == expected

"""karights3 -l, byte for byte as Kadeploy3 3.3.11 prints it for the same rights.

sbin/karights3 `result` (:show): `print_headers`, then `print_rights(user,node,parts)` for each
user and node of the server's answer (server/karights.rb `rights_get`: {user: {node or '*': [parts]}}),
each line `debug sprintf("%-15s %-41s %s\\n", ...)` (client.rb `debug`: `[name] ` with -M).
"""

from __future__ import annotations

import pytest

from kadeploy.cli import karights3
from kadeploy.cli.common import OptionError

RIGHTS = {"alice": {"*": ["*"]},
          "bob": {"node-1.c1.testbed": ["/dev/sda3", "/dev/sda5"], "node-2.c1.testbed": ["*"]}}
LISTING = (
    "User            Node                                      Partitions\n"
    "####            ####                                      ##########\n"
    "alice           *                                         *\n"
    "bob             node-1.c1.testbed                         /dev/sda3,/dev/sda5\n"
    "bob             node-2.c1.testbed                         *\n"
)


def _serve_rights(fake, rights):
    original = type(fake).route
    fake.route = lambda method, path, query, body: (
        (200, {}, rights) if path.startswith("/rights") and method == "GET"
        else original(fake, method, path, query, body))
    return fake


def test_listing_is_print_headers_then_one_sprintf_row_per_user_and_node() -> None:
    # print_headers: sprintf("%-15s %-41s %s\n",'User','Node','Partitions') and the '####' line;
    # print_rights: parts.join(','), in the order the server answered
    assert "".join(line + "\n" for line in karights3.list_lines(RIGHTS)) == LISTING


def test_no_rights_still_prints_the_headers() -> None:
    assert karights3.list_lines({}) == [
        "User            Node                                      Partitions",
        "####            ####                                      ##########"]


def test_long_names_overflow_their_columns_as_sprintf_does() -> None:
    # %-15s pads, never cuts
    assert karights3.list_lines({"a-very-long-user-name": {"n": ["*"]}})[2] == \
        "a-very-long-user-name " + "n" + " " * 40 + " *"


def test_karights3_l_prints_the_table_of_the_servers_answer(fake_server, capsys) -> None:
    _serve_rights(fake_server(["node-1.c1.testbed"]), RIGHTS)
    assert karights3.main(["-l"]) == 0
    assert capsys.readouterr().out == LISTING


def test_multi_server_lines_are_prefixed_with_the_server_name(fake_server, capsys) -> None:
    # client.rb `debug`: sprintf("%-10s%s","[#{@name}] ",line) on each line
    _serve_rights(fake_server(["node-1.c1.testbed"], name="nancy"), {"bob": {"*": ["/dev/sda3"]}})
    _serve_rights(fake_server(["node-1.c2.testbed"], name="grenoble"), {})
    assert karights3.main(["-l", "-M"]) == 0
    assert capsys.readouterr().out == (
        "[nancy]   User            Node                                      Partitions\n"
        "[nancy]   ####            ####                                      ##########\n"
        "[nancy]   bob             *                                         /dev/sda3\n"
        "[grenoble] User            Node                                      Partitions\n"
        "[grenoble] ####            ####                                      ##########\n")


@pytest.mark.parametrize("argv, message", [
    ([], "You must choose an operation"),                     # check_options, first test
    (["-l", "-m", "node-1"], "Node list is useless when showing rights of a specific user"),
    (["-a", "-m", "node-1"], "You must choose a user"),
])
def test_option_errors_are_kadeploy3_messages(argv, message) -> None:
    args = karights3.build_parser().parse_args(argv)
    nodes, parts = karights3.targets(args)
    with pytest.raises(OptionError, match=f"^{message}$"):
        karights3.check_options(args, nodes, parts)


def test_listing_with_the_all_nodes_wildcard_is_not_a_node_list() -> None:
    # sbin/karights3 -m: `load_machine(...) if h != '*'`
    args = karights3.build_parser().parse_args(["-l", "-m", "*"])
    karights3.check_options(args, *karights3.targets(args))


@pytest.mark.parametrize("argv, method, path, sent", [
    # sbin/karights3 `prepare`/`run`: params[:nodes] only `if nodes()`, :partitions only if some were
    # given; server/karights.rb then reads a nil node list as every node
    (["-a", "-u", "bob"], "POST", "/rights", {"username": "bob"}),
    (["-a", "-u", "bob", "-m", "*", "-p", "*"], "POST", "/rights", {"username": "bob"}),
    (["-a", "-u", "bob", "-p", "/dev/sda3"], "POST", "/rights", {"username": "bob", "partitions": ["/dev/sda3"]}),
    (["-d", "-u", "bob"], "DELETE", "/rights/bob", {}),
    (["-d", "-u", "bob", "-m", "node-1.c1.testbed"], "DELETE", "/rights/bob", {"nodes": ["node-1.c1.testbed"]}),
])
def test_add_and_delete_without_nodes_are_about_all_nodes(fake_server, argv, method, path, sent) -> None:
    fake = fake_server(["node-1.c1.testbed"])
    original = type(fake).route
    fake.route = lambda m, p, query, body: ((200, {}, {}) if p.startswith("/rights")
                                            else original(fake, m, p, query, body))
    assert karights3.main(argv) == 0
    [request] = fake.requests_to(method, path)
    received = request[3] if method == "POST" else {key: values if key == "nodes" else values[0]
                                                     for key, values in request[2].items()}
    assert received == sent


def test_listing_rights_that_do_not_exist_is_resource_not_found(fake_server, capsys) -> None:
    # server/karights.rb `rights_get`: `error_not_found! unless res`; common/http.rb on a 404:
    # `error("Resource not found #{request.path.split('?').first}")`, exit status 1 (client.rb `error`)
    fake = fake_server(["node-1.c1.testbed"])
    original = type(fake).route
    fake.route = lambda method, path, query, body: ((404, {}, "Not Found") if path.startswith("/rights")
                                                    else original(fake, method, path, query, body))
    assert karights3.main(["-l", "-u", "nobody"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "Resource not found /rights/nobody\n"

"""kastat3's output, byte for byte as Kadeploy3 3.3.11 prints it for the same answers.

bin/kastat3 `result` (l. 114-123): failure rates as `debug "#{host}: #{rate}"`, anything else as
`debug ret unless ret.empty?` (the server's CSV text, printed as is); lib/kadeploy3/client/client.rb
`debug` (l. 399-413) prefixes every line with sprintf("%-10s%s","[#{@name}] ",line) when the client
is named, which it is in the multi-server mode only (`launch`, l. 820 vs 838).
"""

from __future__ import annotations

import pytest

from kadeploy.cli import kastat3

CSV = ("D-1,alice,node-1.c1.testbed,SetDeploymentEnvUntrusted,BroadcastEnvKascade,BootNewEnvKexec,"
       "200,300,150,0,0,0,1700000000,30,12,25,debian12-min:1,,true,,false,\n"
       "R-2,bob,node-2.c1.testbed,,,,0,0,0,0,0,0,1700000100,0,0,0,,,false,boom,false,\n")


def _answer(fake, answer):
    original = type(fake).route
    fake.route = lambda method, path, query, body: (
        (200, {}, answer) if path.startswith("/stats") else original(fake, method, path, query, body))
    return fake


def test_csv_is_printed_as_the_server_sent_it() -> None:
    assert kastat3.result_text(CSV) == CSV
    assert kastat3.result_text("") == ""                              # `unless ret.empty?`
    assert kastat3.result_text("D-1,alice") == "D-1,alice\n"          # puts adds the missing newline


def test_failure_rates_are_host_colon_ruby_float() -> None:
    # "#{rate}" of a Ruby Float: 1.0 and 1.0e-05 where Python would write 1 or 1e-05
    assert kastat3.result_text({"node-1.c1.testbed": 0.5, "node-2.c1.testbed": 1.0,
                                "node-3.c1.testbed": 1e-05}) == (
        "node-1.c1.testbed: 0.5\nnode-2.c1.testbed: 1.0\nnode-3.c1.testbed: 1.0e-05\n")


def test_multi_server_prefixes_every_line_with_the_server_name(fake_server, capsys) -> None:
    _answer(fake_server(["node-1.c1.testbed"], name="nancy"), CSV)
    _answer(fake_server(["node-1.c2.testbed"], name="grenoble-site"), "")
    assert kastat3.main(["-M", "-a"]) == 0
    assert capsys.readouterr().out == "".join(f"[nancy]   {line}\n" for line in CSV.splitlines())


def test_multi_server_failure_rates_are_prefixed_too(fake_server, capsys) -> None:
    _answer(fake_server(["node-1.c1.testbed"], name="nancy"), {"node-1.c1.testbed": 0.25})
    _answer(fake_server(["node-1.c2.testbed"], name="grenoble-site"), {"node-1.c2.testbed": 1.0})
    assert kastat3.main(["-M", "-b"]) == 0
    assert capsys.readouterr().out == (
        "[nancy]   node-1.c1.testbed: 0.25\n[grenoble-site] node-1.c2.testbed: 1.0\n")


def test_single_server_lines_have_no_prefix(fake_server, capsys) -> None:
    _answer(fake_server(["node-1.c1.testbed"]), CSV)
    assert kastat3.main(["-a"]) == 0
    assert capsys.readouterr().out == CSV


def test_unknown_fields_are_listed_as_check_options_lists_them(capsys) -> None:
    # bin/kastat3 `check_options`: error("Invalid field(s) #{(fields - (FIELDS & fields)).join(', ')}"),
    # before any server is contacted; exit status 1
    assert kastat3.main(["-F", "wid,colour,hostname,size"]) == 1
    assert capsys.readouterr().err == "Invalid field(s) colour, size\n"


@pytest.mark.parametrize("argv, kind, rate", [
    # bin/kastat3: -a and -b each set options[:kind]; the last one given wins; -b's rate is sent when given
    (["-a", "-b"], "failure_rates", None),
    (["-b", "0.5", "-a"], "all", 0.5),
    (["-a", "-b", ".25"], "failure_rates", 0.25),
    ([], "all", None),
])
def test_a_and_b_the_last_given_wins(argv, kind, rate) -> None:
    _, params = kastat3.build_query(kastat3.build_parser().parse_args(argv), [])
    assert params["kind"] == kind and params.get("min_failure_rate") == rate

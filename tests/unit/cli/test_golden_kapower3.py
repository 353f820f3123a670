"""kapower3's output, byte for byte as Kadeploy3 3.3.11 prints it for the same workflow.

bin/kapower3 has no `result` of its own: `--status`, `--on` and `--off` all end with
ClientWorkflow's (lib/kadeploy3/client/client.rb l. 1331-1354), `operation()` 'Power operation'.
The power states themselves are log lines of the server (server/kapower.rb `power_get`, l. 45-51:
`---`, `<node>: <stdout of power_status>` for each successful node, `---`, pushed at level 0), so
they come before `Power operation #<wid> done` (client.rb l. 1306-1318).
"""

from __future__ import annotations

import pytest

from kadeploy.cli import kapower3
from kadeploy.cli.common import OptionError

N1, N2 = "node-1.c1.testbed", "node-2.c1.testbed"


def _status_logs(fake):
    original = type(fake).route

    def route(method, path, query, body):
        if method == "GET" and path.endswith("/logs"):
            flow = fake.workflows[path.strip("/").split("/")[1]]
            if flow["logged"]:
                return 200, {}, ""
            flow["logged"] = True
            return 200, {}, ("1700000001.00000|Launching a power operation on " + ",".join(flow["nodes"]) + "\n"
                             "1700000002.00000|---\n"
                             f"1700000002.00001|{N1}: Chassis Power is on\n"
                             "1700000002.00002|---\n")
        return original(fake, method, path, query, body)

    fake.route = route
    return fake


def test_status_is_the_servers_log_then_the_common_result_block(fake_server, capsys) -> None:
    _status_logs(fake_server([N1, N2], ko_nodes=(N2,)))
    assert kapower3.main(["--status", "-m", N1, "-m", N2]) == 0
    assert capsys.readouterr().out == (
        "Power operation #P-00000001 started\n"
        f"Launching a power operation on {N1},{N2}\n"
        "---\n"
        f"{N1}: Chassis Power is on\n"
        "---\n"
        "Power operation #P-00000001 done\n"
        "\n"
        "The power operation is successful on nodes\n"
        f"{N1}\n"
        "The power operation failed on nodes\n"
        f"{N2} (SetDeploymentEnvUntrusted-reboot: boom)\n")


def test_on_and_off_end_with_the_same_block(fake_server, capsys, tmp_path) -> None:
    fake_server([N1])
    assert kapower3.main(["--off", "-m", N1, "-l", "hard", "-o", str(tmp_path / "ok")]) == 0
    assert capsys.readouterr().out.endswith(
        "Power operation #P-00000001 done\n\nThe power operation is successful on nodes\n"
        f"{N1}\n")
    assert (tmp_path / "ok").read_text() == f"{N1}\n"


@pytest.mark.parametrize("argv, message", [
    (["-m", N1], "No operation is chosen"),                                                # check_options
    (["-m", N1, "--status", "-l", "hard"], "Specifying the level is useless with the status operation"),
])
def test_option_errors_are_kadeploy3_messages(argv, message) -> None:
    with pytest.raises(OptionError, match=f"^{message}$"):
        kapower3.build_request(kapower3.build_parser().parse_args(argv))

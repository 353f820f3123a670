"""kareboot3's output, byte for byte as Kadeploy3 3.3.11 prints it for the same workflow.

bin/kareboot3 keeps ClientWorkflow's `run_workflow` and `result` (lib/kadeploy3/client/client.rb
l. 1262-1354) with `operation()` 'Reboot': `Reboot #<wid> started`, the logs, `Reboot #<wid> done`,
an empty line, `The reboot is successful on nodes` / `The reboot failed on nodes`.
"""

from __future__ import annotations

from pathlib import Path

from kadeploy.cli import kareboot3

N1, N2, N3 = "node-1.c1.testbed", "node-2.c1.testbed", "node-3.c1.testbed"


def test_reboot_result_block_and_files(fake_server, capsys, tmp_path: Path) -> None:
    fake_server([N1, N2, N3], ko_nodes=(N1, N3))
    ok_file, ko_file = tmp_path / "ok", tmp_path / "ko"
    assert kareboot3.main(["-r", "simple", "-m", N1, "-m", N2, "-m", N3, "-V", "4",
                           "-o", str(ok_file), "-n", str(ko_file)]) == 0
    assert capsys.readouterr().out == (
        "Reboot #R-00000001 started\n"
        f"Launching a deployment on {N1},{N2},{N3}\n"
        "Performing a Deploy[SetDeploymentEnvUntrusted] step\n"
        "Reboot #R-00000001 done\n"
        "\n"
        "The reboot is successful on nodes\n"
        f"{N2}\n"
        "The reboot failed on nodes\n"
        f"{N1} (SetDeploymentEnvUntrusted-reboot: boom)\n"       # one `debug` per failed node (l. 1346-1348)
        f"{N3} (SetDeploymentEnvUntrusted-reboot: boom)\n")
    assert ok_file.read_text() == f"{N2}\n"
    assert ko_file.read_text() == f"{N1}\n{N3}\n"


def test_reboot_with_every_node_failed_has_only_the_failed_block(fake_server, capsys) -> None:
    fake_server([N1], ko_nodes=(N1,))
    assert kareboot3.main(["-r", "simple", "-m", N1]) == 0
    assert capsys.readouterr().out.endswith(
        "Reboot #R-00000001 done\n\nThe reboot failed on nodes\n"
        f"{N1} (SetDeploymentEnvUntrusted-reboot: boom)\n")


def test_an_operation_in_error_prints_no_result_block(fake_server, capsys) -> None:
    # l. 1316 `get(api_path('error')) if res['error']` exits with the server's error; l. 1333
    # `unless res['error']`: nothing of the result is printed
    fake_server([N1], error=(2, "Some nodes are not in the database"))
    assert kareboot3.main(["-r", "simple", "-m", N1]) != 0
    captured = capsys.readouterr()
    assert "successful" not in captured.out and "failed on nodes" not in captured.out
    assert "Some nodes are not in the database" in captured.err

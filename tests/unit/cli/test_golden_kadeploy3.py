"""kadeploy3's output, byte for byte as Kadeploy3 3.3.11's client prints it for the same workflow.

lib/kadeploy3/client/client.rb, ClientWorkflow: `run_workflow` (l. 1262-1329: `<Operation> #<wid>
started`, the log lines sorted by their timestamp with it cut off, `<Operation> #<wid> done` and an
empty line) and `result` (l. 1331-1354: ok block, ko block with `node (error)`, -o/-n files written
with `f.puts list.join("\\n")`), every line through `debug` (l. 399-413: `[name] ` padded to 10
columns in the multi-server mode). The fake server logs two lines in reverse time order and fails
the nodes it is told to fail with `SetDeploymentEnvUntrusted-reboot: boom`.
"""

from __future__ import annotations

from pathlib import Path

from kadeploy.cli import kadeploy3

N1, N2 = "node-1.c1.testbed", "node-2.c1.testbed"


def test_successful_and_failed_nodes_follow_the_logs(fake_server, capsys, tmp_path: Path) -> None:
    fake_server([N1, N2], ko_nodes=(N2,))
    ok_file, ko_file = tmp_path / "ok", tmp_path / "ko"
    assert kadeploy3.main(["-e", "debian12-min", "-m", N1, "-m", N2, "-o", str(ok_file), "-n", str(ko_file)]) == 0
    assert capsys.readouterr().out == (
        "Deployment #D-00000001 started\n"                            # l. 1275
        f"Launching a deployment on {N1},{N2}\n"                      # l. 1306-1309, sorted by time
        "Performing a Deploy[SetDeploymentEnvUntrusted] step\n"
        "Deployment #D-00000001 done\n"                               # l. 1318: "... done\n\n"
        "\n"
        "The deployment is successful on nodes\n"                     # l. 1336-1337
        f"{N1}\n"
        "The deployment failed on nodes\n"                            # l. 1345-1348
        f"{N2} (SetDeploymentEnvUntrusted-reboot: boom)\n")
    # l. 1338-1340 and 1349-1351: f.puts list.join("\n")
    assert ok_file.read_text() == f"{N1}\n"
    assert ko_file.read_text() == f"{N2}\n"


def test_all_nodes_ok_prints_no_failed_block_and_leaves_the_ko_file_empty(fake_server, capsys,
                                                                            tmp_path: Path) -> None:
    # -n's file is created at parse time (load_outputfile, l. 147-154) and only written when nodes failed
    fake_server([N1, N2])
    ko_file = tmp_path / "ko"
    assert kadeploy3.main(["-e", "debian12-min", "-m", N1, "-m", N2, "-n", str(ko_file)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(f"done\n\nThe deployment is successful on nodes\n{N1}\n{N2}\n")
    assert "failed" not in out
    assert ko_file.read_text() == ""


def test_a_failed_node_without_state_has_empty_parentheses() -> None:
    # l. 1347: "#{node} (#{states[node]['error'] if states[node]})"
    from kadeploy.client.output import result_lines

    assert result_lines("Deployment", {"nodes": {"ok": [], "ko": [N1, N2]}}, {N1: {"state": "ko"}}) == [
        "The deployment failed on nodes", f"{N1} ()", f"{N2} ()"]


def test_no_wait_prints_the_workflow_id_and_its_resource(fake_server, capsys) -> None:
    # l. 1326: debug "#{@wid} #{@resources['resource']}\n"
    fake_server([N1])
    assert kadeploy3.main(["-e", "debian12-min", "-m", N1, "--no-wait"]) == 0
    assert capsys.readouterr().out == "D-00000001 /deployment/D-00000001\n"


def test_script_lines_after_the_result(fake_server, capsys, tmp_path: Path) -> None:
    # client.rb l. 891-898: $stdout.puts "\nRunning #{script}\n", then "\nSuccess !" or "\nFail !"
    fake_server([N1])
    script = tmp_path / "after.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    assert kadeploy3.main(["-e", "debian12-min", "-m", N1, "-s", str(script)]) == 0
    assert capsys.readouterr().out.endswith(
        f"The deployment is successful on nodes\n{N1}\n\nRunning {script}\n\nSuccess !\n")


def test_multi_server_each_line_is_prefixed_by_its_server(fake_server, capsys) -> None:
    # debug: sprintf("%-10s%s","[#{@name}] ",line) for each line, the empty one after `done` too;
    # the two servers' lines interleave as their threads run, each server's in its own order
    fake_server([N1], name="nancy")
    fake_server(["node-1.c2.testbed"], name="grenoble-site", ko_nodes=("node-1.c2.testbed",))
    assert kadeploy3.main(["-M", "-e", "debian12-min", "-m", N1, "-m", "node-1.c2.testbed"]) == 0
    lines = capsys.readouterr().out.splitlines(keepends=True)
    assert [line for line in lines if line.startswith("[nancy]")] == [
        "[nancy]   Deployment #D-00000001 started\n",
        f"[nancy]   Launching a deployment on {N1}\n",
        "[nancy]   Performing a Deploy[SetDeploymentEnvUntrusted] step\n",
        "[nancy]   Deployment #D-00000001 done\n",
        "[nancy]   \n",
        "[nancy]   The deployment is successful on nodes\n",
        f"[nancy]   {N1}\n"]
    assert [line for line in lines if line.startswith("[grenoble-site]")] == [
        "[grenoble-site] Deployment #D-00000001 started\n",
        "[grenoble-site] Launching a deployment on node-1.c2.testbed\n",
        "[grenoble-site] Performing a Deploy[SetDeploymentEnvUntrusted] step\n",
        "[grenoble-site] Deployment #D-00000001 done\n",
        "[grenoble-site] \n",
        "[grenoble-site] The deployment failed on nodes\n",
        "[grenoble-site] node-1.c2.testbed (SetDeploymentEnvUntrusted-reboot: boom)\n"]
    assert len(lines) == 14


def test_multi_server_results_come_as_each_server_finishes(fake_server, capsys, tmp_path: Path,
                                                           monkeypatch) -> None:
    # client.rb `launch` l. 850-856: one thread per server runs `client.run` then `client.result` at
    # once, so a server that finishes first prints its result block (and appends its -o/-n lines,
    # 'a+') while the other still polls; the files were emptied at parse time (load_outputfile)
    from kadeploy.client import workflow as workflow_module

    monkeypatch.setattr(workflow_module, "POLL_INTERVAL", 0.05)
    fake_server([N1], name="nancy", polls_before_done=40)
    fake_server(["node-1.c2.testbed"], name="rennes", polls_before_done=1)
    ok_file = tmp_path / "ok"
    ok_file.write_text("stale\n")
    assert kadeploy3.main(["-M", "-e", "debian12-min", "-m", N1, "-m", "node-1.c2.testbed",
                           "-o", str(ok_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rennes_result = lines.index("[rennes]  node-1.c2.testbed")
    nancy_done = lines.index("[nancy]   Deployment #D-00000001 done")
    assert rennes_result < nancy_done
    assert lines[-1] == f"[nancy]   {N1}"
    assert ok_file.read_text() == f"node-1.c2.testbed\n{N1}\n"


def test_multi_server_an_error_on_one_server_ends_the_whole_run(fake_server, capsys, monkeypatch) -> None:
    # client.rb `error` l. 70-78 (via common/http.rb on the 400 of GET .../error): the message, prefixed
    # by `debug`, then `Client.kill` (every thread killed, every client's workflow DELETEd, l. 953-959)
    # and `exit!(code)`: the other server prints nothing more and no result block
    from kadeploy.client import workflow as workflow_module

    monkeypatch.setattr(workflow_module, "POLL_INTERVAL", 0.05)
    slow = fake_server([N1], name="nancy", polls_before_done=400)
    fake_server(["node-1.c2.testbed"], name="rennes", polls_before_done=1, error=(5, "Unable to grab the image"))
    assert kadeploy3.main(["-M", "-e", "debian12-min", "-m", N1, "-m", "node-1.c2.testbed"]) == 5
    captured = capsys.readouterr()
    assert captured.err == "[rennes]  Unable to grab the image\n[rennes]  [Kadeploy Error #5]\n"
    assert "successful" not in captured.out and "cancelled" not in captured.out
    assert slow.deleted == ["D-00000001"]


def test_a_server_error_is_its_message_then_the_code_line(fake_server, capsys, monkeypatch) -> None:
    # common/http.rb on a 400 with X-Application-Error-Code:
    # error("#{body.strip}\n[Kadeploy Error ##{code}]", code); the exit status is the code
    from kadeploy.client import workflow as workflow_module

    monkeypatch.setattr(workflow_module, "POLL_INTERVAL", 0.05)
    fake_server([N1], polls_before_done=1, error=(5, "Unable to grab the image"))
    assert kadeploy3.main(["-e", "debian12-min", "-m", N1]) == 5
    assert capsys.readouterr().err == "Unable to grab the image\n[Kadeploy Error #5]\n"

"""The user tools: options → request bodies, Kadeploy3's rules and messages, exit statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from kadeploy.cli import kadeploy3, kaenv3, kapower3, kareboot3, karights3, kastat3
from kadeploy.cli.common import OptionError
from kadeploy.client import workflow as workflow_module
from kadeploy.errors import KadeployError
from tests.requirements import require


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow_module, "POLL_INTERVAL", 0.05)


def deploy_body(argv: list[str]) -> dict:
    args = kadeploy3.build_parser().parse_args(argv)
    return kadeploy3.build_request(args).params


def test_kadeploy3_options_build_the_deployment_body(tmp_path: Path) -> None:
    profile = tmp_path / "pxe"
    profile.write_text("DEFAULT linux\n")
    pattern = tmp_path / "pattern"
    pattern.write_text("node-1,10\nnode-2, 20\n")
    body = deploy_body(["-m", "n", "-e", "debian12", "-u", "root", "--env-version", "3", "-b", "/dev/sdb",
                        "-p", "3", "-c", "0", "-r", "ext4", "--vlan", "12", "-w", str(profile),
                        "--set-pxe-pattern", str(pattern), "-x", "http://h/f1,server:///f2", "--no-kexec",
                        "--disable-bootloader-install", "--disable-disk-partitioning",
                        "--reboot-classical-timeout", "200+n", "--reboot-kexec-timeout", "60", "--force",
                        "--breakpoint", "BroadcastEnv:send_environment", "-V", "4", "-d", "--hook",
                        "--retry-failed", "2", "--min-success", "0.9", "--resume", "D-1"])
    assert body == {
        "environment": {"kind": "database", "name": "debian12", "user": "root", "version": 3},
        "block_device": "/dev/sdb", "deploy_partition": 3, "boot_partition": 0, "reformat_tmp_partition": "ext4",
        "vlan": "12", "pxe": {"profile": "DEFAULT linux\n", "singularities": {"node-1": "10", "node-2": "20"},
                              "files": ["http://h/f1", "server:///f2"]},
        "disable_kexec": True, "disable_bootloader_install": True, "disable_disk_partitioning": True,
        "timeout_reboot_classical": "200+n", "timeout_reboot_kexec": "60", "force": True,
        "breakpoint": "BroadcastEnv:send_environment", "verbose_level": 4, "debug": True, "hook": True,
        "retry_failed": 2, "min_success": 0.9, "resume": "D-1",
    }


def test_force_steps_follow_kadeploy3_syntax() -> None:
    automata = kadeploy3.parse_force_steps(
        "SetDeploymentEnv|SetDeploymentEnvUntrusted:1:300&BroadcastEnv|BroadcastEnvKastafior:1:200"
        "&BootNewEnv|BootNewEnvClassical:1:200,BootNewEnvHardReboot:1:200")
    assert automata["BootNewEnv"] == [{"name": "BootNewEnvClassical", "retries": 1, "timeout": 200},
                                      {"name": "BootNewEnvHardReboot", "retries": 1, "timeout": 200}]
    with pytest.raises(OptionError, match="Invalid macrostep kind 'Foo'"):
        kadeploy3.parse_force_steps("Foo|FooBar:1:2")
    with pytest.raises(OptionError, match="Invalid macrostep instance 'BroadcastEnvX'"):
        kadeploy3.parse_force_steps("SetDeploymentEnv|BroadcastEnvX:1:2")
    with pytest.raises(OptionError, match="Invalid --force-steps"):
        kadeploy3.parse_force_steps("SetDeploymentEnv|SetDeploymentEnvUntrusted:x:2")


def test_anonymous_env_file_is_validated_and_local_files_exported(tmp_path: Path, monkeypatch) -> None:
    image = tmp_path / "img.tgz"
    image.write_bytes(b"tar")
    monkeypatch.chdir(tmp_path)
    env = tmp_path / "env.yaml"
    env.write_text("name: mine\nos: linux\nimage: {file: img.tgz, kind: tar, compression: gzip}\n"
                   "boot: {kernel: /vmlinuz}\nfilesystem: ext4\n"
                   "postinstalls: [{archive: 'http://srv/p.tgz', compression: gzip, script: none}]\n")
    request = kadeploy3.build_request(kadeploy3.build_parser().parse_args(["-m", "n", "-a", str(env)]))
    assert request.params["environment"]["kind"] == "anonymous"
    assert request.params["environment"]["image"]["file"] == str(image)
    assert request.local_files == [str(image)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nos: linux\nimage: {file: img.tgz, kind: tar}\n")
    with pytest.raises(KadeployError, match="kernel"):
        kadeploy3.build_request(kadeploy3.build_parser().parse_args(["-m", "n", "-a", str(bad)]))


def test_key_defaults_to_authorized_keys(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAA")
    request = kadeploy3.build_request(kadeploy3.build_parser().parse_args(["-m", "n", "-e", "d", "-k"]))
    assert request.params["ssh_authorized_keys"] == str(tmp_path / ".ssh" / "authorized_keys")
    assert request.local_files == [str(tmp_path / ".ssh" / "authorized_keys")]


def test_custom_steps_file_becomes_custom_operations(tmp_path: Path) -> None:
    script = tmp_path / "part.sh"
    script.write_text("#!/bin/sh\n")
    steps = tmp_path / "steps.yaml"
    steps.write_text(f"SetDeploymentEnvUntrusted:\n  create_partition_table:\n    substitute:\n"
                     f"    - {{action: run, name: p, file: {script}}}\n")
    request = kadeploy3.build_request(kadeploy3.build_parser().parse_args(
        ["-m", "n", "-e", "d", "--custom-steps", str(steps)]))
    ops = request.params["custom_operations"]["SetDeploymentEnvUntrusted"]["create_partition_table"]
    assert ops["substitute"][0]["file"] == str(script)
    assert request.local_files == [str(script)]


@pytest.mark.parametrize("argv, message", [
    (["-e", "d"], "No node is chosen"),
    (["-m", "n"], "You must choose an environment"),
    (["-m", "n", "-e", "d", "-o", "f", "-n", "f"], "cannot be the same"),
    (["-m", "n", "-e", "d", "-o", "f", "--no-wait"], "cannot be used with --no-wait"),
    (["-m", "n", "-e", "d", "-V", "0"], "Invalid verbose level"),
    (["-m", "n", "-e", "d", "--breakpoint", "a:b:c"], "invalid argument"),
    (["-m", "n", "-e", "d", "--bogus"], "Option parsing error"),
    (["-m", "bad;name", "-e", "d"], "Invalid node name"),
])
def test_kadeploy3_user_errors_are_one_line_with_exit_status(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status = kadeploy3.main(argv)
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert status == (2 if "node name" in message else 1)


def test_kadeploy3_runs_against_a_server_and_unknown_nodes_exit_1(fake_server, capsys, tmp_path) -> None:
    fake = fake_server(["node-1.c1.testbed", "node-2.c1.testbed"])
    assert kadeploy3.main(["-m", "node-[1-2].c1.testbed", "-e", "d", "--json", str(tmp_path / "r.json")]) == 0
    assert "The deployment is successful on nodes\nnode-1.c1.testbed\nnode-2.c1.testbed\n" in capsys.readouterr().out
    assert (tmp_path / "r.json").exists() and fake.deleted
    # client.rb `launch`: error("The nodes #{...} does not belongs to any server"), exit status 1
    assert kadeploy3.main(["-m", "node-7.c1.testbed", "-e", "d"]) == 1
    assert capsys.readouterr().err == "The nodes node-7.c1.testbed does not belongs to any server\n"


def test_kadeploy3_server_error_code_is_the_exit_status(fake_server, capsys) -> None:
    fake_server(["n1.c1"], launch_error=(6, "You do not have sufficient rights to perform the operation"))
    assert kadeploy3.main(["-m", "n1.c1", "-e", "d"]) == 6
    # common/http.rb: "#{body.strip}\n[Kadeploy Error ##{code}]"
    err = capsys.readouterr().err
    assert "You do not have sufficient rights" in err and err.endswith("\n[Kadeploy Error #6]\n")


def test_version_and_completion(fake_server, capsys) -> None:
    fake_server(["n1.c1"])
    assert kadeploy3.main(["-v"]) == 0
    assert capsys.readouterr().out == "Kadeploy version: 3.3.11.stable\n"
    assert kadeploy3.main(["--completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "complete -o default -F _kadeploy3 kadeploy3" in script and "--force-steps" in script


def reboot_args(argv: list[str]):
    return kareboot3.build_parser().parse_args(["-m", "n"] + argv)


@pytest.mark.parametrize("argv, message", [
    (["-r", "set_pxe"], "-w"),
    (["-r", "recorded_env", "-p", "2"], "-e"),
    (["-r", "recorded_env", "-e", "prod"], "-p"),
    (["-k"], "deploy_env"),
    (["-e", "prod"], "recorded_env"),
])
def test_kareboot3_rules(argv, message) -> None:
    with pytest.raises(OptionError, match=message):
        kareboot3.build_request(reboot_args(argv))


def test_kareboot3_recorded_env_body() -> None:
    request = kareboot3.build_request(reboot_args(["-r", "recorded_env", "-e", "prod", "-p", "2", "-c",
                                                   "-l", "hard", "-u", "root"]))
    assert (request.method, request.path) == ("POST", "/reboot")
    assert request.params == {"kind": "recorded_env", "level": "hard", "check_destructive": True,
                              "environment": {"kind": "database", "name": "prod", "user": "root"},
                              "deploy_partition": 2}


def test_kapower3_on_off_status(fake_server, capsys) -> None:
    args = kapower3.build_parser().parse_args(["-m", "n", "--off", "-l", "hard"])
    request = kapower3.build_request(args)
    assert (request.method, request.params) == ("PUT", {"status": "off", "level": "hard"})
    with pytest.raises(OptionError, match="No operation is chosen"):
        kapower3.build_request(kapower3.build_parser().parse_args(["-m", "n"]))
    fake = fake_server(["n1.c1", "n2.c1"], ko_nodes=("n2.c1",))
    assert kapower3.main(["-m", "n1.c1", "-m", "n2.c1", "--status"]) == 0
    out = capsys.readouterr().out
    assert "The power operation is successful on nodes\nn1.c1\n" in out
    assert fake.requests_to("GET", "/power")[0][2]["nodes"] == ["n1.c1", "n2.c1"]


def test_kaenv3_listing_columns_and_rules() -> None:
    lines = kaenv3.list_lines([{"name": "debian12-min", "version": 2, "user": "root",
                                "description": "A very long description that goes beyond 35 chars"}])
    assert lines[0] == "Name                  Version User        Description"
    assert lines[1] == "####                  ####### ####        ###########"
    assert lines[2] == "debian12-min          2       root        A very long description that goes b..."
    assert kaenv3.list_lines([]) == ["No environment has been found"]
    args = kaenv3.build_parser().parse_args(["--set-visibility-tag", "env"])
    with pytest.raises(OptionError, match="visibility value"):
        kaenv3.check_options(args, *kaenv3.operation_of(args))
    assert kaenv3.parse_files_to_move("a::b,c::d") == {"a": "b", "c": "d"}
    with pytest.raises(OptionError, match="files to move"):
        kaenv3.parse_files_to_move("nodelimiter")


def test_kaenv3_delete_sends_last_unless_all_versions(fake_server) -> None:
    fake = fake_server(["n1"])
    fake.route = lambda method, path, query, body: (200, {}, {"ok": True}) if path.startswith("/environments") \
        else type(fake).route(fake, method, path, query, body)
    assert kaenv3.main(["-d", "debian"]) == 0
    assert kaenv3.main(["-d", "debian", "-s"]) == 0
    deletes = fake.requests_to("DELETE", "/environments/tester/debian")
    assert deletes[0][2] == {"last": ["true"]} and deletes[1][2] == {}


def test_kastat3_query_and_unsupported_options() -> None:
    parser = kastat3.build_parser()
    path, params = kastat3.build_query(parser.parse_args(["-o", "deploy", "-b", "0.25", "-F", "wid,hostname",
                                                          "-r", "2", "-s", "1,3", "--limit", "5",
                                                          "-x", "Tue, 14 Nov 2023 22:13:20 GMT"]), ["n1"])
    assert path == "/stats/deploy"
    assert params["kind"] == "failure_rates" and params["min_failure_rate"] == 0.25
    assert params["fields"] == ["wid", "hostname"] and params["step_retries"] == [1, 3]
    assert params["date_min"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert kastat3.build_query(parser.parse_args(["--plot", "x.png", "-o", "deploy"]), []) == \
        ("/stats/deploy", {"kind": "steps"})
    with pytest.raises(OptionError, match="cannot be used with"):
        kastat3.build_query(parser.parse_args(["--steps", "-F", "wid"]), [])
    with pytest.raises(OptionError, match=r"^Invalid field\(s\) bogus$"):  # bin/kastat3 check_options
        kastat3.build_query(parser.parse_args(["-F", "bogus"]), [])
    assert kastat3.failure_rate_lines({"n7": 0.125}) == ["n7: 0.125"]


def test_karights3_add_and_list(fake_server, capsys) -> None:
    fake = fake_server(["n1.c1"])
    original = type(fake).route
    fake.route = lambda method, path, query, body: (
        (200, {}, {"bob": {"*": ["*"], "n1.c1": ["/dev/sda3"]}}) if path.startswith("/rights") and method == "GET"
        else (200, {}, {}) if path.startswith("/rights") else original(fake, method, path, query, body))
    assert karights3.main(["-a", "-u", "bob", "-m", "*", "-p", "*", "-o"]) == 0
    # sbin/karights3: `-m '*'` and `-p '*'` add nothing, so neither is sent
    assert fake.requests_to("POST", "/rights")[0][3] == {"username": "bob", "overwrite": True}
    assert karights3.main(["-l", "-u", "bob"]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [f"{'bob':<15} {'*':<41} *",
                                                        f"{'bob':<15} {'n1.c1':<41} /dev/sda3"]
    assert karights3.main(["-a", "-m", "n1.c1"]) == 1


def test_kaconsole3_escape_is_four_esc_even_across_reads() -> None:
    from kadeploy.cli.kaconsole3 import EscapeDetector, parse_console_uri

    detector = EscapeDetector()
    assert detector.feed(b"ls\r") == (b"ls\r", False)
    assert detector.feed(b"a\x1b\x1b") == (b"a\x1b\x1b", False)
    assert detector.feed(b"\x1b\x1bzz")[1] is True
    assert EscapeDetector().feed(b"ab\x1b\x1b\x1b\x1b") == (b"ab", True)
    assert parse_console_uri("tcp://server:4242") == ("server", 4242)


def test_progress_table_counts_nodes_per_macro_step() -> None:
    import io

    from rich.console import Console

    from kadeploy.client.progress import ProgressDisplay

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    display = ProgressDisplay("Deployment", console)
    display.update("site1", {"c1": {"BroadcastEnvKascade": {"send_environment": {
        "nodes": {"OK": ["a", "b"], "KO": ["c"], "**": ["d"]}, "time": 12}}}}, 30)
    console.print(display.render())
    text = console.file.getvalue()
    assert "BroadcastEnvKascade" in text and "12s" in text and "30s" in text


def test_kastat3_step_table_and_plot(tmp_path) -> None:
    from kadeploy.cli.stepstats import plot_steps, step_table

    stats = {"macro": {"SetDeploymentEnvUntrusted": {"count": 3, "median": 120.0, "p90": 130.5, "max": 131.0}},
             "micro": {"SetDeploymentEnvUntrusted/reboot": {"count": 3, "median": 2.0, "p90": 3.0, "max": 3.0}}}
    lines = step_table(stats)
    assert lines[0].split() == ["Macro-step", "count", "median", "p90", "max"]
    assert lines[1].split() == ["SetDeploymentEnvUntrusted", "3", "120s", "130.5s", "131s"]
    assert lines[2] == "" and lines[4].split() == ["SetDeploymentEnvUntrusted/reboot", "3", "2s", "3s", "3s"]
    assert step_table({}) == ["No statistics have been found"]
    require("matplotlib")
    plot_steps(stats, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OptionError, match="nothing to plot"):
        plot_steps({}, tmp_path / "empty.png")

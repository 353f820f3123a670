"""Every option of Kadeploy3's option tables parses, by its short and its long name (issue 20, point 2).

The tables are Kadeploy3 3.3.11's `add_opt` calls: lib/kadeploy3/client/client.rb
(`global_parse_options` lines 689-741 for the generic options, `ClientWorkflow.global_parse_options`
lines 1165-1185 and the `parse_*` helpers lines 262-301 and 995-1146 for the workflow ones) and
`parse_options` of bin/kadeploy3, bin/kareboot3, bin/kapower3, bin/kaconsole3, bin/kanodes3,
bin/kaenv3, bin/kastat3 and sbin/karights3. Style: N no argument, R required (`--file FILE`),
P placed optional (`--key [FILE]`); `--[no-]x` is both `--x` and `--no-x`.
"""

from __future__ import annotations

import importlib

import pytest

from kadeploy.cli.optionparser import BEYOND_KADEPLOY3

Entry = tuple[str | None, str, str, str]   # short, long, style, example argument

GENERIC: list[Entry] = [
    ("-v", "--version", "N", ""), ("-I", "--server-info", "N", ""), ("-M", "--multi-server", "N", ""),
    ("-H", "--[no-]debug-http", "N", ""), ("-S", "--server", "R", "site2"), (None, "--[no-]dry-run", "N", ""),
    (None, "--password", "P", "secret"),
]
WORKFLOW: list[Entry] = [
    ("-d", "--[no-]debug-mode", "N", ""), ("-f", "--file", "R", "nodes.txt"), ("-m", "--machine", "R", "n-1"),
    ("-n", "--output-ko-nodes", "R", "ko.txt"), ("-o", "--output-ok-nodes", "R", "ok.txt"),
    ("-s", "--script", "R", "run.sh"), ("-V", "--verbose-level", "R", "3"),
    (None, "--write-workflow-id", "R", "wid.txt"), (None, "--[no-]wait", "N", ""), (None, "--[no-]force", "N", ""),
    (None, "--breakpoint", "R", "BroadcastEnv:send"), (None, "--custom-steps", "R", "ops.yaml"),
    (None, "--[no-]hook", "N", ""),
]
REBOOT_AND_DEPLOY: list[Entry] = [
    ("-b", "--block-device", "R", "/dev/sdb"), ("-e", "--env-name", "R", "debian12"), ("-k", "--key", "P", "id.pub"),
    ("-p", "--partition-number", "R", "3"), ("-u", "--env-user", "R", "alice"), (None, "--vlan", "R", "100"),
    ("-w", "--set-pxe-profile", "R", "profile"), (None, "--set-pxe-pattern", "R", "pattern"),
    ("-x", "--upload-pxe-files", "R", "a,b"), (None, "--env-version", "R", "2"),
    (None, "--reboot-classical-timeout", "R", "300"), (None, "--[no-]secure", "N", ""),
]
TABLES: dict[str, list[Entry]] = {
    "kadeploy3": GENERIC + WORKFLOW + REBOOT_AND_DEPLOY + [
        ("-a", "--env-file", "R", "env.yaml"), ("-c", "--boot-partition", "R", "1"),
        ("-r", "--reformat-tmp", "R", "ext4"), (None, "--no-kexec", "N", ""),
        (None, "--disable-bootloader-install", "N", ""), (None, "--disable-disk-partitioning", "N", ""),
        (None, "--reboot-kexec-timeout", "R", "120"),
        (None, "--force-steps", "R", "SetDeploymentEnv|SetDeploymentEnvUntrusted:1:100&BroadcastEnv|"
                                     "BroadcastEnvKascade:1:100&BootNewEnv|BootNewEnvKexec:1:100"),
    ],
    "kareboot3": GENERIC + WORKFLOW + REBOOT_AND_DEPLOY + [
        ("-c", "--check-destructive-tag", "N", ""), ("-l", "--op-level", "R", "hard"),
        ("-r", "--reboot-kind", "R", "deploy_env"),
    ],
    "kapower3": GENERIC + WORKFLOW + [
        ("-l", "--op-level", "R", "very_hard"), (None, "--off", "N", ""), (None, "--on", "N", ""),
        (None, "--status", "N", ""),
    ],
    "kaconsole3": GENERIC + [("-m", "--machine", "R", "n-1")],
    "kanodes3": GENERIC + [
        ("-s", "--get-nodes-state", "N", ""), ("-d", "--get-deployments-status", "N", ""),
        ("-r", "--get-reboots-status", "N", ""), ("-p", "--get-powers-status", "N", ""),
        ("-c", "--get-consoles-status", "N", ""), ("-a", "--get-all-status", "N", ""),
        ("-f", "--file", "R", "nodes.txt"), ("-m", "--machine", "R", "n-1"), ("-w", "--workflow-id", "R", "D-1"),
    ],
    "kaenv3": GENERIC + [
        ("-a", "--add", "R", "env.yaml"), ("-d", "--delete", "R", "debian12"), ("-l", "--list", "P", "deb%"),
        ("-m", "--files-to-move", "R", "a::b"), ("-p", "--print", "R", "debian12"),
        ("-s", "--all-versions", "N", ""), ("-t", "--visibility-tag", "R", "shared"),
        ("-u", "--env-user", "R", "alice"), (None, "--env-version", "R", "2"),
        (None, "--toggle-destructive-tag", "R", "debian12"), (None, "--set-visibility-tag", "R", "debian12"),
        (None, "--update-image-checksum", "R", "debian12"), (None, "--update-preinstall-checksum", "R", "debian12"),
        (None, "--update-postinstalls-checksum", "R", "debian12"), (None, "--move-files", "N", ""),
        (None, "--[no-]secure", "N", ""),
    ],
    "kastat3": GENERIC + [
        ("-a", "--all", "N", ""), ("-b", "--failure-rate", "P", "0.5"), ("-f", "--file", "R", "nodes.txt"),
        ("-F", "--fields", "R", "wid,user"), ("-m", "--machine", "R", "n-1"), ("-o", "--operation", "R", "reboot"),
        ("-r", "--min-retries", "R", "2"), ("-s", "--retry-steps", "R", "1,2"), ("-w", "--workflow-id", "R", "D-1"),
        ("-x", "--date-min", "R", "2024-01-01"), ("-y", "--date-max", "R", "2024-02-01"),
        (None, "--limit", "R", "4"), (None, "--sort", "R", "start"),
    ],
    "karights3": GENERIC + [
        ("-a", "--add", "N", ""), ("-d", "--delete", "N", ""), ("-f", "--file", "R", "nodes.txt"),
        ("-l", "--list", "N", ""), ("-m", "--machine", "R", "n-1"), ("-o", "--overwrite-rights", "N", ""),
        ("-p", "--part", "R", "sda3"), ("-u", "--user", "R", "alice"),
    ],
}


def parse(tool: str, argv: list[str]) -> dict:
    return vars(importlib.import_module(f"kadeploy.cli.{tool}").build_parser().parse_args(argv))


def spellings(entry: Entry) -> list[str]:
    short, long, _, _ = entry
    names = [long.replace("[no-]", ""), long.replace("[no-]", "no-")] if "[no-]" in long else [long]
    return names + ([short] if short else [])


CASES = [(tool, entry) for tool, table in TABLES.items() for entry in table]


@pytest.mark.parametrize("tool, entry", CASES, ids=[f"{tool}{entry[1]}" for tool, entry in CASES])
def test_every_kadeploy3_option_parses_by_its_short_and_long_name(tool: str, entry: Entry) -> None:
    short, long, style, example = entry
    default = parse(tool, [])
    name = long.replace("[no-]", "")
    if style == "N":
        by_long = parse(tool, [name])
        if "[no-]" in long:
            assert parse(tool, [long.replace("[no-]", "no-")]) != by_long
        else:
            assert by_long != default
    elif style == "R":
        by_long = parse(tool, [name, example])
        assert by_long != default
        assert parse(tool, [f"{name}={example}"]) == by_long
    else:  # placed: an argument only when attached or not looking like an option
        by_long = parse(tool, [name, example])
        assert by_long != default and parse(tool, [f"{name}={example}"]) == by_long
        assert parse(tool, [name]) != by_long
    if short:
        if style == "N":
            assert parse(tool, [short]) == by_long
        else:
            assert parse(tool, [short, example]) == by_long
            assert parse(tool, [short + example]) == by_long


@pytest.mark.parametrize("tool", TABLES)
def test_our_options_are_kadeploy3_ones_plus_the_declared_additions(tool: str) -> None:
    parser = importlib.import_module(f"kadeploy.cli.{tool}").build_parser()
    ours = {option for action in parser._actions for option in action.option_strings}
    theirs = {"-h", "--help"} | {name for entry in TABLES[tool] for name in spellings(entry)}
    declared = BEYOND_KADEPLOY3["*"] | BEYOND_KADEPLOY3.get(tool, frozenset())
    assert theirs <= ours
    assert ours - theirs == declared & ours
    assert not declared & theirs

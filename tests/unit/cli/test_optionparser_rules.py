"""The command line is read as Ruby's OptionParser reads it (optparse.rb, `parse_in_order` and
`Completion`), with its error words and Kadeploy3's `Option parsing error: ...`, exit 1 (client.rb l. 741-746)."""

from __future__ import annotations

import importlib

import pytest

from kadeploy.cli.common import OptionError


def parse(tool: str, argv: list[str]):
    return importlib.import_module(f"kadeploy.cli.{tool}").build_parser().parse_args(argv)


def error_of(tool: str, argv: list[str]) -> str:
    with pytest.raises(OptionError) as raised:
        parse(tool, argv)
    return str(raised.value)


def test_a_short_option_that_does_not_exist_completes_against_the_long_options() -> None:
    assert parse("kastat3", ["-l", "1"]).limit == "1"        # kastat3 has no -l: --limit
    assert parse("kastat3", ["-l7"]).limit == "7"
    assert parse("kadeploy3", ["-j", "out.json"]).json_file == "out.json"


def test_long_options_complete_word_by_word() -> None:
    args = parse("kaenv3", ["--update-postinstall-checksum", "debian12"])
    assert args.update_postinstalls_checksum == "debian12"
    assert parse("kaenv3", ["--upd-pre-c", "e"]).update_preinstall_checksum == "e"
    assert parse("kaenv3", ["--tog", "e"]).toggle_destructive_tag == "e"
    assert parse("kadeploy3", ["--disable-boot", "--dis-disk"]).disable_disk_partitioning
    assert parse("kadeploy3", ["--ENV_VERSION", "3"]).env_version == "3"   # case aside, `_` read as `-`


def test_the_shortest_candidate_wins_when_it_is_a_prefix_of_the_others() -> None:
    args = parse("kadeploy3", ["--fo"])          # --force beside --force-steps
    assert args.force and args.force_steps is None
    assert parse("kadeploy3", ["--no-w"]).wait is False


def test_ambiguous_options_are_refused_in_optionparser_words() -> None:
    assert error_of("kaenv3", ["--up", "x"]) == "Option parsing error: ambiguous option: --up"
    assert error_of("kaenv3", ["-e", "x"]) == "Option parsing error: ambiguous option: -e"  # --env-user, --env-version
    assert error_of("kadeploy3", ["--ver"]) == "Option parsing error: ambiguous option: --ver"
    assert error_of("kadeploy3", ["--env=x"]) == "Option parsing error: ambiguous option: --env=x"


@pytest.mark.parametrize("tool, argv, message", [
    ("kastat3", ["-z"], "invalid option: -z"),
    ("kastat3", ["-zq"], "invalid option: -zq"),
    ("kadeploy3", ["--bogus=1"], "invalid option: --bogus=1"),
    ("kadeploy3", ["--kexec"], "invalid option: --kexec"),       # only --no-kexec exists
    ("kastat3", ["--file"], "missing argument: --file"),
    ("kastat3", ["-f"], "missing argument: -f"),
    ("kastat3", ["--fil"], "missing argument: --fil"),
    ("kastat3", ["--fi", "x"], "ambiguous option: --fi"),          # --file, --fields
    ("kastat3", ["--all=1"], "needless argument: --all=1"),
    ("kastat3", ["-a=1"], "needless argument: -a=1"),
    ("kareboot3", ["-r", "foo"], "invalid argument: -r foo"),
    ("kareboot3", ["-rfoo"], "invalid argument: -rfoo"),
    ("kareboot3", ["--reboot-kind=foo"], "invalid argument: --reboot-kind=foo"),
    ("kareboot3", ["-r", "s"], "ambiguous argument: -r s"),       # set_pxe, simple
])
def test_errors_name_the_word_as_optionparser_does(tool: str, argv: list[str], message: str) -> None:
    assert error_of(tool, argv) == f"Option parsing error: {message}"


def test_option_errors_are_one_line_and_exit_1(capsys) -> None:
    from kadeploy.cli import kastat3

    assert kastat3.main(["-z"]) == 1
    assert capsys.readouterr().err == "Option parsing error: invalid option: -z\n"


def test_short_options_bundle_and_take_attached_arguments() -> None:
    args = parse("kadeploy3", ["-dk", "-fnodes", "-mnode-1"])
    assert args.debug_mode and args.key == "" and args.node_files == ["nodes"] and args.machines == ["node-1"]


def test_a_required_argument_is_the_next_word_whatever_it_looks_like() -> None:
    assert parse("kadeploy3", ["-f", "-"]).node_files == ["-"]
    assert parse("kadeploy3", ["-e", "-m"]).env_name == "-m"


def test_an_optional_argument_is_taken_unless_the_next_word_is_an_option() -> None:
    assert parse("kadeploy3", ["-k", "id.pub"]).key == "id.pub"
    args = parse("kadeploy3", ["-k", "-e", "debian12"])
    assert args.key == "" and args.env_name == "debian12"
    assert parse("kaenv3", ["-l"]).list == "" and parse("kaenv3", ["-l", "deb%"]).list == "deb%"


def test_fixed_values_complete_as_optionparser_completes_them() -> None:
    assert parse("kareboot3", ["-r", "simp"]).reboot_kind == "simple"
    assert parse("kareboot3", ["--reboot-kind", "rec"]).reboot_kind == "recorded_env"
    assert parse("kapower3", ["-l", "very"]).op_level == "very_hard"
    assert parse("kaenv3", ["-t", "pub"]).visibility_tag == "public"
    assert parse("kastat3", ["-o", "dep"]).operation == "deploy"


def test_words_that_are_not_options_are_ignored_and_double_dash_ends_the_options() -> None:
    args = parse("kastat3", ["stray", "--limit", "2", "--", "--sort", "x"])
    assert args.limit == "2" and args.sort is None


def test_posixly_correct_stops_at_the_first_word_that_is_not_an_option(monkeypatch) -> None:
    monkeypatch.setenv("POSIXLY_CORRECT", "1")
    assert parse("kastat3", ["stray", "--limit", "2"]).limit is None


def test_our_additions_never_change_what_a_kadeploy3_abbreviation_means() -> None:
    # Kadeploy3's --c is --custom-steps; our --completion is looked up after Kadeploy3's options
    assert parse("kadeploy3", ["--c", "ops.yaml"]).custom_steps == "ops.yaml"
    assert parse("kadeploy3", ["--comp", "bash"]).completion == "bash"
    assert parse("kaenv3", ["--us", "bob"]).env_user == "bob"      # ours: --user, after Kadeploy3's

"""Option arguments checked as Kadeploy3's OptionParser checks them, with its words and exit status.

Kadeploy3 declares a pattern or a class on some options (`add_opt(opt, "-V", "--verbose-level
VALUE", /^[0-5]$/, ...)`, kastat3's `-x ... Time`); OptionParser refuses a value that does not
fit with `invalid argument: <the words typed>`, and the client exits 1 on `Option parsing error:
...` (client.rb `global_parse_options`). When `ruby` is installed, Ruby's own OptionParser
and Time are asked for the same values.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime

import pytest

from kadeploy.cli import kadeploy3, kaenv3, kareboot3, karights3, kastat3, rubytime
from kadeploy.cli.optionparser import ruby_pattern
from tests.requirements import requires

needs_ruby = requires("ruby")  # installed by scripts/install.sh: the oracle runs in CI


@pytest.mark.parametrize("tool, argv, words", [
    # client.rb parse_verbose /^[0-5]$/, typed short, long, abbreviated and attached
    (kadeploy3, ["-m", "n", "-e", "d", "-V", "9"], "-V 9"),
    (kadeploy3, ["-m", "n", "-e", "d", "--verbose-level", "x"], "--verbose-level x"),
    (kadeploy3, ["-m", "n", "-e", "d", "--verb", "12"], "--verb 12"),
    (kadeploy3, ["-m", "n", "-e", "d", "-V9"], "-V9"),
    (kadeploy3, ["-m", "n", "-e", "d", "--verbose-level=6"], "--verbose-level=6"),
    # parse_env_user /^\w+$/, parse_env_version /^\d+$/, parse_block_device, bin/kadeploy3 -c
    (kadeploy3, ["-m", "n", "-e", "d", "-u", "a.b"], "-u a.b"),
    (kadeploy3, ["-m", "n", "-e", "d", "--env-version", "v2"], "--env-version v2"),
    (kadeploy3, ["-m", "n", "-e", "d", "-b", "/dev/sd-a"], "-b /dev/sd-a"),
    (kadeploy3, ["-m", "n", "-e", "d", "-c", "1a"], "-c 1a"),
    (kadeploy3, ["-m", "n", "-e", "d", "-p", "x"], "-p x"),
    (kadeploy3, ["-m", "n", "-e", "d", "--breakpoint", "a:b:c"], "--breakpoint a:b:c"),
    (kadeploy3, ["-m", "n", "-e", "d", "--force-steps", "BootNewEnv|BootNewEnvKexec:1:2"],
     "--force-steps BootNewEnv|BootNewEnvKexec:1:2"),
    (kareboot3, ["-m", "n", "-r", "recorded_env", "-e", "d", "-p", "2", "--env-version", "-1"],
     "--env-version -1"),
    (kaenv3, ["-l", "-u", "*"], "-u *"),
    (karights3, ["-l", "-u", "bob.smith"], "-u bob.smith"),
    # bin/kastat3: -b /^0?\.\d+|1(?:\.0)?$/, -r and --limit /^\d+$/, -x/-y Time
    (kastat3, ["-b", "2"], "-b 2"),
    (kastat3, ["-b", "0.5x"], "-b 0.5x"),
    (kastat3, ["-r", "-1"], "-r -1"),
    (kastat3, ["--limit", "ten"], "--limit ten"),
    (kastat3, ["-l", "ten"], "-l ten"),                     # -l completes to --limit, the words stay as typed
    (kastat3, ["-x", "1700000000"], "-x 1700000000"),       # an epoch is no Time.parse date
    (kastat3, ["-y", "2016-13-01"], "-y 2016-13-01"),
])
def test_a_value_off_kadeploy3s_pattern_is_optionparsers_invalid_argument(tool, argv, words, capsys) -> None:
    assert tool.main(argv) == 1
    assert capsys.readouterr().err == f"Option parsing error: invalid argument: {words}\n"


@pytest.mark.parametrize("tool, argv", [
    (kadeploy3, ["-V", "4", "-u", "alice_2", "--env-version", "3", "-b", "/dev/sda", "-c", "0", "-p", "",
                 "--breakpoint", "SetDeploymentEnv:format_deploy_part"]),
    (kastat3, ["-b", ".5", "-r", "0", "--limit", "10", "-x", "2016-08-18 13:46:21", "-y", "2016-08-18"]),
    (kastat3, ["-b", "1.0"]),
    (kastat3, ["-b"]),
])
def test_values_that_fit_the_patterns_parse(tool, argv) -> None:
    tool.build_parser().parse_args(argv)


def test_kastat3_sends_the_dates_as_time_httpdate() -> None:
    # bin/kastat3 `prepare`: params[:date_min] = options[:date_min].httpdate
    parser = kastat3.build_parser()
    _, params = kastat3.build_query(parser.parse_args(["-x", "2016-08-18 13:46:21 +0200",
                                                       "-y", "Thu, 18 Aug 2016 20:00:00 GMT"]), [])
    assert params["date_min"] == "Thu, 18 Aug 2016 11:46:21 GMT"
    assert params["date_max"] == "Thu, 18 Aug 2016 20:00:00 GMT"


def test_a_time_alone_is_today_and_a_missing_zone_is_local(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        now = datetime(2026, 12, 7, 9, 0)
        assert rubytime.parse_time("13:46", now).isoformat() == "2026-12-07T12:46:00+00:00"
        assert rubytime.parse_time("2016-08-18 13:46:21", now).isoformat() == "2016-08-18T11:46:21+00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


PATTERNS = [r"^[0-5]$", r"^\w+$", r"^\d+$", r"^\d*$", r"^[\w/]+$", r"^\w+(?::\w+)?$", r"^0?\.\d+|1(?:\.0)?$"]
VALUES = ["", "0", "5", "6", "12", "a", "a_b", "a.b", "é", "/dev/sda", "0.5", ".5", "1", "1.0", "1.5", "0.5x",
          "x1", "10", "a:b", "a:b:c", "5\n", "a\nb", " 1", "-1"]


@needs_ruby
def test_ruby_optionparser_accepts_and_refuses_the_same_values(tmp_path) -> None:
    script = tmp_path / "patterns.rb"
    script.write_text(
        "require 'optparse'; require 'json'\n"
        "patterns, values = JSON.parse(File.read(ARGV[0]))\n"
        "out = patterns.map { |p| values.map { |v|\n"
        "  o = OptionParser.new; o.on('-x VALUE', Regexp.new(p)) {}\n"
        "  begin; o.parse(['-x', v]); true; rescue OptionParser::InvalidArgument; false; end } }\n"
        "puts JSON.dump(out)\n")
    data = tmp_path / "data.json"
    data.write_text(json.dumps([PATTERNS, VALUES]))
    ruby = subprocess.run(["ruby", str(script), str(data)], capture_output=True, text=True, check=True, timeout=60)
    expected = json.loads(ruby.stdout)

    def accepted(pattern: str, value: str) -> bool:
        try:
            ruby_pattern(pattern)(value)
        except ValueError:
            return False
        return True

    assert [[accepted(p, v) for v in VALUES] for p in PATTERNS] == expected


DATES = ["2016-08-18 13:46:21", "2016-08-18", "2016-08-18T13:46:21", "2016-8-1 1:2:3", "2016/08/18 13:46",
         "2016-08-18 13", "2016-08-18 13:46:21.5", " 2016-08-18 ", "20160818", "20160818134621", "20160818T134621",
         "2016-08-18 13:46:21 +0200", "2016-08-18T13:46:21+02:00", "2016-08-18 13:46:21 -0700",
         "2016-08-18 13:46:21 +05:30", "2016-08-18 13:46:21 +02", "2016-08-18T13:46:21Z", "2016-08-18 13:46:21 UTC",
         "2016-08-18 00:00:00 GMT", "2016-08-18t13:46:21z",
         "Thu, 18 Aug 2016 13:46:21 GMT", "thu, 18 aug 2016 13:46:21 gmt", "Thursday, 18-Aug-16 13:46:21 GMT",
         "Sun Nov  6 08:49:37 1994",
         # Time.local's carry, its range checks and the DST days of Europe/Paris
         "2016-02-30", "2016-02-31 10:00", "2015-02-29", "2016-06-31 12:00", "2016-08-18 23:59:60",
         "2016-08-18 24:00", "2016-08-18 24:30", "2016-13-01", "2016-12-32", "2016-08-18 13:60",
         "2016-03-27 02:30:00", "2016-10-30 02:30:00", "2016-10-30 01:59:59", "2016-03-27 03:00:00",
         # refused by both
         "1700000000", "abc", "", "2016"]


@needs_ruby
@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York"])
def test_ruby_time_reads_the_dates_as_we_do(tmp_path, monkeypatch, zone) -> None:
    script = tmp_path / "dates.rb"
    script.write_text(
        "require 'optparse'; require 'optparse/time'; require 'json'\n"
        "out = JSON.parse(File.read(ARGV[0])).map { |v|\n"
        "  d = nil; o = OptionParser.new; o.on('-x TIME', Time) { |t| d = t }\n"
        "  begin; o.parse(['-x', v]); d.httpdate; rescue OptionParser::InvalidArgument; nil; end }\n"
        "puts JSON.dump(out)\n")
    data = tmp_path / "dates.json"
    data.write_text(json.dumps(DATES))
    ruby = subprocess.run(["ruby", str(script), str(data)], capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, "TZ": zone})
    expected = json.loads(ruby.stdout)
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        ours = []
        for value in DATES:
            try:
                ours.append(rubytime.http_date(value))
            except ValueError:
                ours.append(None)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert dict(zip(DATES, ours)) == dict(zip(DATES, expected))

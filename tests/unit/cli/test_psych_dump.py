"""Ruby's `to_yaml` as Kadeploy3's tools print it (kadeploy.psych).

Each expected text of the `Libyaml.V0_2_5` tests is what `ruby -ryaml -e 'puts x.to_yaml'`
prints with Psych 4.0.3 on libyaml 0.2.5 (Ruby 3.1, Debian 12). When `ruby` is installed, the
oracle test also asks Ruby itself for a few hundred values and compares byte for byte.

The default writer is the libyaml of Kadeploy3's Ruby 2.x (0.1.x to 0.2.2), which no longer
ships anywhere we can run it: its two differences are derived from its emitter.c and checked
as a transformation of the oracle's text (test_legacy_libyaml_differs_from_ruby_3_by_the_two_documented_points).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.requirements import requires

from kadeploy import psych
from kadeploy.psych import Libyaml, Symbol


@pytest.mark.parametrize("value, text", [
    ("debian12-min", "--- debian12-min\n"),
    ("3", "--- '3'\n"),                      # would read back as an Integer
    ("1.5", "--- '1.5'\n"),                  # a Float
    ("true", "--- 'true'\n"),                # a boolean
    ("off", "--- 'off'\n"),
    ("", "--- ''\n"),                        # nil
    ("~", "--- \"~\"\n"),                    # starts with a non-word character
    ("/dev/sda", "--- \"/dev/sda\"\n"),
    (":wid", "--- \":wid\"\n"),
    ("2016-08-18", "--- '2016-08-18'\n"),    # a Date
    ("12:30", "--- '12:30'\n"),              # sexagesimal
    ("089", "--- '089'\n"),
    ("y", "--- \"y\"\n"),
    ("a: b", "--- 'a: b'\n"),                # libyaml refuses ': ' in a plain scalar
    ("Debian 12: minimal", "--- 'Debian 12: minimal'\n"),
    ("server:///images/x.tgz", "--- server:///images/x.tgz\n"),
    ("line1\nline2", "--- |-\n  line1\n  line2\n"),
    ("<<", "--- !!str '<<'\n"),
])
def test_strings_are_quoted_as_psych_quotes_them(value: str, text: str) -> None:
    assert psych.dump(value, Libyaml.V0_2_5) == text


def test_symbol_keys_nil_empty_collections_and_floats() -> None:
    value = {Symbol("wid"): "D-1", Symbol("nodes"): {Symbol("ok"): [], Symbol("ko"): ["n-1"]},
             "none": None, "empty": {}, "floats": [1.0, 0.333, 1e-05, 1e15, 1e16, 123456789012345.67]}
    assert psych.dump(value, Libyaml.V0_2_5) == (
        "---\n:wid: D-1\n:nodes:\n  :ok: []\n  :ko:\n  - n-1\nnone:\nempty: {}\n"
        "floats:\n- 1.0\n- 0.333\n- 1.0e-05\n- 1.0e+15\n- 1.0e+16\n- 123456789012345.67\n")


def test_long_plain_strings_fold_at_80_columns_as_libyaml() -> None:
    text = " ".join(["word"] * 30)
    assert psych.dump({"description": text}) == (
        "---\ndescription: word word word word word word word word word word word word word word\n"
        "  word word word word word word word word word word word word word word word word\n")


def test_symbolize_keys_turns_every_mapping_key_into_a_symbol() -> None:
    value = psych.symbolize_keys([{"wid": "P-1", "environment": {"name": "e"}, "nodes": ["node-1"]}])
    assert psych.dump(value) == "---\n- :wid: P-1\n  :environment:\n    :name: e\n  :nodes:\n  - node-1\n"


@requires("ruby")  # installed by scripts/install.sh: the oracle runs in CI
def test_ruby_itself_agrees(tmp_path) -> None:
    strings = ["", "a", "3", "0x1F", "012", "1_000", "1,000", ".5", "5.", "+1", "-1", ".inf", "-.inf", ".NaN",
               "NULL", "Null", "yes", "No", "ON", "n", "N", "-", "- a", "-a", "? x", "?x", "#a", "a #b", "a#b",
               "'q'", '"q"', "@x", "`x", "!x", "&x", "*x", "%x", "|", ">", "[x]", "{x}", ",x", " lead",
               "trail ", "tab\there", "end\n", "multi\nline\n", "ünïcödé", "10.0.0.1", "1.2.3", "1e3", "1.0e3",
               "2016-13-45", "2016-08-18 13:46:21", "1:60", "---", "...", "x" * 81 + " y", "NaN", "Infinity",
               "console=tty0 console=ttyS0,115200n8", "D-9bf30f46-16a8-4f33-b0c0-80b0b7bc2a7d"]
    values = [s for s in strings] + [{"k": s} for s in strings] + [[s] for s in strings]
    values += [{s: 1} for s in strings if s and "\n" not in s]
    values += [[0.1 + 0.2, 2.5e-07, 1e100, -0.0, 1032050905083866.4, 9007199254740993.0, True, None, 10 ** 20]]
    source = tmp_path / "values.json"
    source.write_text(json.dumps(values))
    ruby = subprocess.run(["ruby", "-rjson", "-ryaml", "-e",
                           'JSON.parse(File.read(ARGV[0])).each { |v| print v.to_yaml, "\\0" }', str(source)],
                          capture_output=True, text=True, check=True, timeout=60)
    expected = ruby.stdout.split("\0")[:-1]
    assert [psych.dump(value, Libyaml.V0_2_5) for value in values] == expected
    # The default (Kadeploy3's Ruby 2.x) differs only by the separator space before an empty scalar
    # and the `...` after a root plain scalar; no other line of a document ends with a space.
    legacy = [_as_libyaml_0_2_5(psych.dump(value)) for value in values]
    assert legacy == expected


def _as_libyaml_0_2_5(text: str) -> str:
    """The two points where libyaml 0.2.5 changed the text (yaml/libyaml pull request 186, and the
    open-ended root scalar), undone."""
    if text.endswith("\n...\n"):
        text = text[: -len("...\n")]
    return "\n".join(line[:-1] if line.endswith((": ", "- ", "--- ")) else line for line in text.split("\n"))


@pytest.mark.parametrize("value, text", [
    # emitter.c (0.1.4-0.2.2) yaml_emitter_write_plain_scalar: `if (!emitter->whitespace) PUT(' ')`
    # comes before the length is looked at, so a nil after `:`, `-` or `---` keeps its space
    ({Symbol("a"): None, "b": [None, 1]}, "---\n:a: \nb:\n- \n- 1\n"),
    ([[None]], "---\n- - \n"),
    ({"x": {"y": None}}, "---\nx:\n  \"y\": \n"),
    # write_plain_scalar at the root sets open_ended; the stream end then writes `...`
    (None, "--- \n...\n"),
    ("debian12-min", "--- debian12-min\n...\n"),
    (3, "--- 3\n...\n"),
    # a quoted scalar or a collection is not open-ended, an empty string is quoted
    ("3", "--- '3'\n"),
    ({"e": ""}, "---\ne: ''\n"),
    ([], "--- []\n"),
])
def test_kadeploy3s_ruby_2_libyaml_keeps_the_space_before_nil_and_ends_root_scalars(value, text) -> None:
    assert psych.KADEPLOY3_LIBYAML is Libyaml.BEFORE_0_2_5
    assert psych.dump(value) == text

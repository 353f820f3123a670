"""Command lines read as Kadeploy3's Ruby OptionParser reads them, for every tool.

CLI room; imports only the standard library. Kadeploy3's tools parse their
command line with Ruby's OptionParser (`optparse.rb` of Ruby 2.x: `parse!`,
`parse_in_order`, `Completion`), and users' scripts rely on what it accepts
and argparse does not:

- a long option may be shortened word by word: each dash-separated word typed
  is a prefix of the option's word (`--upd-postinstall-check` is
  `--update-postinstalls-checksum`), case aside, `_` read as `-`; when several
  options match, the shortest wins if it is a prefix of all the others
  (`--force` beside `--force-steps`), else the option is ambiguous;
- a short option that does not exist completes against the long options
  (`kastat3 -l 1` is `--limit 1` since kastat3 has no `-l`);
- short options bundle (`-dk`) and take an attached argument (`-fnodes`);
- a required argument is the next word whatever it looks like (`-f -`);
  an optional one (`-k [FILE]`) only if that word does not start with `-`;
- the argument of an option with a fixed set of values completes among them
  (`kareboot3 -r simp` is `simple`);
- an argument that Kadeploy3 declares with a pattern (`add_opt(opt, "-V",
  "--verbose-level VALUE", /^[0-5]$/, ...)`) or a class (`Time`) is checked
  while the command line is read, as OptionParser's `parse_arg`/`accept` do:
  declared once beside the option with `accept(action, ruby_pattern(...))`;
- words that are not options are ignored, `--` ends the options, and
  `POSIXLY_CORRECT` stops at the first non-option word.

Errors are OptionParser's words (`invalid option: -z`, `ambiguous option:
--env`, `missing argument: --file`, `needless argument: --all=1`, `invalid
argument: -r foo`, `ambiguous argument: -r s`). The tools keep declaring their
options with argparse: `normalize` reads the command line with these rules and
rewrites it into one where every option is spelled in full and every argument
attached with `=`, so that argparse only stores values.

Options we add to Kadeploy3's tables (`BEYOND_KADEPLOY3`) are looked up after
Kadeploy3's own, as OptionParser looks up a lower list of its stack: every
abbreviation Kadeploy3 accepts means the same thing here.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

# Per tool (`prog`), the option strings that are ours and not Kadeploy3's; "*" for every tool.
BEYOND_KADEPLOY3: dict[str, frozenset[str]] = {
    "*": frozenset({"--completion", "--json", "--fail-on-ko", "--progress", "--no-progress",
                    "--set-custom-operations"}),
    "kadeploy3": frozenset({"--resume", "--retry-failed", "--min-success"}),
    "kaenv3": frozenset({"--user", "--show-all-versions"}),
    "kastat3": frozenset({"--steps", "--plot"}),
    "karights3": frozenset({"--show-rights"}),
}


class OptionParseError(Exception):
    """An OptionParser error: its reason and the words it names (`invalid option: -z`)."""

    def __init__(self, reason: str, words: Sequence[str]) -> None:
        super().__init__(f"{reason}: {' '.join(words)}")
        self.reason = reason
        self.words = list(words)


class Style(Enum):
    """OptionParser's argument styles: `--all`, `--file FILE`, `--key [FILE]` (PlacedArgument)."""

    NONE = "none"
    REQUIRED = "required"
    PLACED = "placed"


#: OptionParser's conversion of an argument: the value handed on, or ValueError ("invalid argument").
Acceptor = Callable[[str], str]


def ruby_pattern(regexp: str) -> Acceptor:
    """An argument pattern as OptionParser applies it (`Switch#parse_arg`): Ruby's leftmost match must
    start the argument and cover all of it. Ruby's `^`/`$` are line anchors and `\\w`, `\\d` ASCII."""
    compiled = re.compile(regexp, re.MULTILINE | re.ASCII)

    def check(value: str) -> str:
        match = compiled.search(value)
        if match is None or match.start() != 0 or match.end() != len(value):
            raise ValueError(value)
        return value

    check.__doc__ = f"Kadeploy3's pattern /{regexp}/"
    return check


def accept(action: argparse.Action, acceptor: Acceptor) -> argparse.Action:
    """Declare the check Kadeploy3's OptionParser makes on this option's argument (read by `normalize`)."""
    action.kadeploy3_accept = acceptor  # type: ignore[attr-defined]
    return action


@dataclass(eq=False)
class Switch:
    """One option as OptionParser holds it; aliases share one (never ambiguous with each other)."""

    spelling: str                       # the option string handed to argparse
    style: Style
    choices: tuple[str, ...] | None = None
    is_help: bool = False
    acceptor: Acceptor | None = None    # the argument's pattern or class check (`accept`)


@dataclass
class OptionList:
    """One list of OptionParser's stack: short options by letter, long ones by name (no dashes)."""

    short: dict[str, Switch] = field(default_factory=dict)
    long: dict[str, Switch] = field(default_factory=dict)


class _Ambiguous(Exception):
    pass


T = TypeVar("T")


def completion_pattern(key: str, ignore_case: bool) -> re.Pattern[str]:
    """OptionParser's `Completion.regexp`: every word of `key` may be followed by more word characters."""
    escaped = re.sub(r"\w+\b", lambda word: word.group(0) + r"\w*", re.escape(key), flags=re.ASCII)
    return re.compile(r"\A" + escaped, re.ASCII | (re.IGNORECASE if ignore_case else 0))


def complete(key: str, entries: Iterable[tuple[str, T]], ignore_case: bool) -> T | None:
    """OptionParser's `Completion#complete`: the entry `key` abbreviates, None if none; `_Ambiguous` if several.

    Candidates are taken shortest first; the shortest stands if it is a prefix
    of every other one (or they are the same switch), as `--force` beside
    `--force-steps`.
    """
    pattern = completion_pattern(key, ignore_case)
    candidates = sorted(((name, value) for name, value in entries if pattern.match(name)),
                        key=lambda candidate: len(candidate[0]))
    if not candidates:
        return None
    chosen_name, chosen = candidates[0]
    for name, value in candidates[1:]:
        if value is chosen:
            continue
        if chosen_name.startswith(name):
            chosen_name, chosen = name, value
        elif not name.startswith(chosen_name):
            raise _Ambiguous(key)
    return chosen


def option_lists(parser: argparse.ArgumentParser) -> tuple[OptionList, OptionList]:
    """Kadeploy3's options, then ours, from the parser's argparse actions."""
    ours = BEYOND_KADEPLOY3["*"] | BEYOND_KADEPLOY3.get(parser.prog, frozenset())
    kadeploy3, beyond = OptionList(), OptionList()
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public listing
        if not action.option_strings:
            continue
        style = _style_of(action)
        choices = tuple(str(choice) for choice in action.choices) if action.choices else None
        is_help = isinstance(action, argparse._HelpAction)  # noqa: SLF001
        longs = [option for option in action.option_strings if option.startswith("--")]
        negative = isinstance(action, argparse.BooleanOptionalAction)
        positive_longs = [option for option in longs if not (negative and option.startswith("--no-"))]
        spelling = (positive_longs or action.option_strings)[0]
        switch = Switch(spelling, style, choices, is_help, getattr(action, "kadeploy3_accept", None))
        for option in action.option_strings:
            target = beyond if option in ours else kadeploy3
            if option.startswith("--"):
                if negative and option.startswith("--no-"):
                    target.long[option[2:]] = Switch(option, Style.NONE)
                else:
                    target.long[option[2:]] = switch
            else:
                target.short[option[1:]] = switch
    return kadeploy3, beyond


def _style_of(action: argparse.Action) -> Style:
    if action.nargs == 0:
        return Style.NONE
    if action.nargs == argparse.OPTIONAL:
        return Style.PLACED
    return Style.REQUIRED


def normalize(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """The command line as OptionParser reads it, rewritten for argparse (options in full, arguments attached)."""
    return _Reader(option_lists(parser), any(not action.option_strings for action in parser._actions)).read(argv)  # noqa: SLF001


class _Reader:
    """OptionParser's `parse_in_order` over one command line."""

    def __init__(self, lists: Sequence[OptionList], keeps_operands: bool) -> None:
        self.lists = lists
        self.keeps_operands = keeps_operands

    def read(self, argv: Sequence[str]) -> list[str]:
        words = list(argv)
        options: list[str] = []
        operands: list[str] = []
        in_order = "POSIXLY_CORRECT" in os.environ
        while words:
            word = words.pop(0)
            if word.startswith("--"):
                if word == "--":
                    operands += words
                    break
                done = self._long(word, words, options)
            elif word.startswith("-") and len(word) > 1:
                done = self._short(word, words, options)
            else:
                operands.append(word)
                if in_order:
                    operands += words
                    break
                continue
            if done:  # --help: OptionParser prints the help there and exits
                return ["--help"]
        # Kadeploy3 leaves the operands in ARGV and never looks at them
        return options + (["--", *operands] if self.keeps_operands and operands else [])

    # -- lookups -------------------------------------------------------------------------

    def _find_long(self, name: str, word: str, ignore_case: bool) -> Switch:
        for option_list in self.lists:
            if name in option_list.long:
                return option_list.long[name]
        for option_list in self.lists:
            try:
                found = complete(name, option_list.long.items(), ignore_case)
            except _Ambiguous:
                raise OptionParseError("ambiguous option", [word]) from None
            if found is not None:
                return found
        raise OptionParseError("invalid option", [word])

    def _find_short(self, letter: str) -> Switch | None:
        for option_list in self.lists:
            if letter in option_list.short:
                return option_list.short[letter]
        return None

    # -- one option word -----------------------------------------------------------------

    def _long(self, word: str, words: list[str], options: list[str]) -> bool:
        name, equals, attached = word[2:].partition("=")
        value: str | None = attached if equals else None
        if not name:  # `--=x`: OptionParser's `--` given an argument
            raise OptionParseError("needless argument", [word])
        switch = self._find_long(name.replace("_", "-"), word, ignore_case=True)
        if switch.is_help:
            return True
        if switch.style is Style.NONE:
            if value is not None:
                raise OptionParseError("needless argument", [word])
            options.append(switch.spelling)
            return False
        options.append(self._with_value(switch, *self._argument(switch, value, word, words)))
        return False

    def _short(self, word: str, words: list[str], options: list[str]) -> bool:
        letter, rest = word[1], word[2:] or None
        attached_with_equals = rest is not None and rest.startswith("=")
        switch = self._find_short(letter)
        if switch is None:
            switch = self._find_long(letter, word, ignore_case=False)
            if rest is None:
                attached_with_equals = True
        if switch.is_help:
            return True
        if switch.style is Style.NONE:
            options.append(switch.spelling)
            if rest is not None:
                if attached_with_equals:
                    raise OptionParseError("needless argument", [word])
                bundled = "-" + rest.lstrip("-")
                if bundled != "-":  # `-dk`: the rest is the next short option
                    words.insert(0, bundled)
            return False
        options.append(self._with_value(switch, *self._argument(switch, rest, word, words)))
        return False

    @staticmethod
    def _argument(switch: Switch, value: str | None, word: str, words: list[str]) -> tuple[str | None, list[str]]:
        """The option's argument and the words an error names: attached, else the next word.

        A required argument takes the next word whatever it is; an optional one
        only a word that does not start with `-` (OptionParser's rules).
        """
        if value is not None:
            return value, [word]
        if switch.style is Style.REQUIRED:
            if not words:
                raise OptionParseError("missing argument", [word])
        elif not words or words[0].startswith("-"):
            return None, [word]
        value = words.pop(0)
        return value, [word, value]

    @staticmethod
    def _with_value(switch: Switch, value: str | None, context: list[str]) -> str:
        if value is None:
            return switch.spelling
        if switch.choices is not None and value not in switch.choices:
            try:
                chosen = complete(value, ((choice, choice) for choice in switch.choices), ignore_case=False)
            except _Ambiguous:
                raise OptionParseError("ambiguous argument", context) from None
            if chosen is None:
                raise OptionParseError("invalid argument", context)
            value = chosen
        if switch.acceptor is not None:
            try:
                value = switch.acceptor(value)
            except ValueError:
                raise OptionParseError("invalid argument", context) from None
        return f"{switch.spelling}={value}"

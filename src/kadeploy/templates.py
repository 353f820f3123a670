"""Filling the administrator's command templates in one pass (imports only the standard library).

Kadeploy3 fills its placeholders (`HOSTNAME_FQDN`, `VLAN_ID`, `USER`,
`ENVFILE`, `FILES_PREFIX`...) with a chain of `gsub`s: a value substituted
first that happens to contain a later placeholder is filled again, so a user
who controls one value (a VLAN id, a user name, a file name) could plant text
that a later substitution turns into something else. `fill` scans the
template once with one regular expression (an alternation of the placeholder
names, longest first, so `HOSTNAME_FQDN` is never read as a shorter name):
every placeholder is found in the administrator's text only, never in a
substituted value.

Values are given in two groups: `quoted` ones are user-controlled words,
inserted `shlex.quote`d so that the shell reads each as one word whatever it
holds; `raw` ones are inserted as they are because they are command fragments
the administrator or the server wrote (`DEFAULT_CONNECTOR`, `DECOMPRESS`) or
values already validated to need no quoting (host names: administrators'
templates may put them inside their own quotes).
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterable, Mapping

__all__ = ["QUOTED_PLACEHOLDERS", "check_template", "fill", "unsafe_placeholders"]


@functools.lru_cache(maxsize=64)
def _pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(name) for name in sorted(names, key=len, reverse=True)))


def fill(template: str, *, quoted: Mapping[str, str] | None = None, raw: Mapping[str, str] | None = None) -> str:
    """`template` with every placeholder of `quoted` (shell-quoted) and `raw` (as is) replaced, in one pass."""
    values = {name: shlex.quote(value) for name, value in (quoted or {}).items()}
    values.update(raw or {})
    if not values:
        return template
    return _pattern(tuple(sorted(values))).sub(lambda match: values[match.group(0)], template)


#: commands that read their arguments as shell text again, where one level of quoting no longer holds
_REPARSING = re.compile(r"\s*(?:\w+=\S*\s+)*(?:(?:sudo|env|exec|command)(?:\s+-\S+)*\s+)*(?:\S*/)?"
                        r"(?:eval|ssh|su\s.*-c|(?:ba|da|z|k)?sh(?:\s+-\S+)*\s+-[^\s-]*c\S*)(?:\s|$)")
_SEPARATORS = ";&|\n"


def unsafe_placeholders(template: str, names: Iterable[str]) -> list[tuple[str, str]]:
    """(placeholder, why) for each of `names` that `fill` would quote where the shell would not read
    the quoting as quoting: inside the administrator's own single or double quotes (the value's
    quotes become literal characters there, and a double-quoted `$(...)` in it runs), right after
    a backslash, or in the arguments of a command that parses them as shell again (eval, ssh,
    sh -c, su -c), which strips our quotes before reading the value.

    A scan of the template as the shell reads it: quotes, escapes, `$( )` and backquotes (whose
    insides are new, unquoted contexts) and command separators. `kadeploy3d --check-config`
    refuses such a template, naming the placeholder.
    """
    wanted = tuple(sorted(set(names)))
    if not wanted:
        return []
    pattern = _pattern(wanted)
    found: list[tuple[str, str]] = []
    stack = ["top"]          # top, ', ", $(, `
    segment = 0              # where the current simple command starts, for the re-parsing commands
    outer: list[tuple[int, int]] = []   # the enclosing commands (start, where the substitution opens)
    i = 0
    while i < len(template):
        context, char = stack[-1], template[i]
        match = pattern.match(template, i)
        if match:
            name = match.group(0)
            if context == "'":
                found.append((name, "inside single quotes of the template"))
            elif context == '"':
                found.append((name, "inside double quotes of the template"))
            elif _REPARSING.match(template, segment, i) or any(_REPARSING.match(template, start, end)
                                                               for start, end in outer):
                found.append((name, "in the arguments of a command that reads them as shell again "
                                    "(eval, ssh, sh -c, su -c)"))
            i = match.end()
            continue
        if context == "'":
            if char == "'":
                stack.pop()
            i += 1
            continue
        if char == "\\":
            escaped = pattern.match(template, i + 1)
            if escaped:
                found.append((escaped.group(0), "right after a backslash"))
                i = escaped.end()
            else:
                i += 2
            continue
        if context == '"' and char == '"':
            stack.pop()
        elif (context == "`" and char == "`") or (context == "$(" and char == ")"):
            stack.pop()
            segment = outer.pop()[0]
        elif template.startswith("$(", i) or char == "`":
            stack.append("$(" if char == "$" else "`")
            outer.append((segment, i))
            i += 2 if char == "$" else 1
            segment = i
            continue
        elif context != '"' and char in "'\"":
            stack.append(char)
        elif context != '"' and char in _SEPARATORS:
            segment = i + 1
        i += 1
    return found


#: the user-controlled placeholders (filled `quoted`) of the administrator's templates, by configuration key
QUOTED_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "network/vlan/set_cmd": ("VLAN_ID", "USER"),
    "localops/broadcastenv/cmd": ("ENVFILE", "NODEFILE"),
    "hooks": ("WORKFLOW_ID",),
}


def check_template(template: str, key: str) -> str:
    """`template` if the user values `key`'s template receives are all where our quoting holds; else
    ValueError naming the first placeholder, where it is and what to write instead (--check-config)."""
    problems = unsafe_placeholders(template, QUOTED_PLACEHOLDERS[key])
    if problems:
        name, where = problems[0]
        raise ValueError(f"the placeholder {name} is {where}: kadeploy3d inserts it shell-quoted, and that "
                         f"quoting does not hold there; write {name} as a word of its own, unquoted")
    return template

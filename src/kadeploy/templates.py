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
from collections.abc import Mapping

__all__ = ["fill"]


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

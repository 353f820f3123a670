"""Ruby's `obj.to_yaml` (Psych) for the plain data Kadeploy3's tools and server print.

Shared by the CLI and the server; imports only PyYAML. Kadeploy3's tools
print YAML that Ruby wrote: `kanodes3` prints what its server dumped
(`Hash#to_yaml`, symbol keys such as `:wid:`), `kaenv3 -p` dumps the
environment it received. Scripts parse that text, so it must be Ruby's, not
PyYAML's: symbols are written `:name`, strings are quoted by Psych's rules
(`YAMLTree#visit_String` with its `ScalarScanner`: a string that would read
back as something else, such as `'3'`, `'true'` or `''`, is single-quoted;
one that starts with a non-word character, such as `"/dev/sda"`, is
double-quoted), floats are Ruby's `Float#to_s` (`1.0e-05`), nil is an empty
plain scalar, and the rest is libyaml's emitter, of which PyYAML's emitter is
a port (indentation, line folding at 80 columns, the indicators that force
quotes).

Two libyaml generations write nil and root scalars differently, and only
those two points differ (`Libyaml`):

- Kadeploy3 3.3.11 was released for and run on Ruby 2.x (Debian 8 to 10:
  libyaml 0.1.6, 0.1.7, 0.2.1/0.2.2). That emitter writes the separator space
  before an empty scalar, so a nil value leaves a trailing space (`key: `,
  `- `, `--- `), and it ends a document whose root is a plain scalar with
  `...` (`"x".to_yaml` is `"--- x\n...\n"`). This is the default
  (`KADEPLOY3_LIBYAML`): it is what the scripts written against Kadeploy3
  saw.
- libyaml 0.2.5 (2020, Ruby 3.x, Debian 11 and later) stopped both
  (yaml/libyaml pull request 186 for the space): `key:`, `-`, `--- x`.
  `Libyaml.V0_2_5` writes that; tests compare it byte for byte with the
  installed Ruby (Psych 4 on libyaml 0.2.5, Debian 12).
"""

from __future__ import annotations

import decimal
import enum
import math
import re
from typing import Any

import yaml
from yaml.emitter import Emitter
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)


class Symbol(str):
    """A Ruby symbol (`:wid`): Kadeploy3's server builds its answers with symbol keys."""


def symbolize_keys(value: Any) -> Any:
    """Every mapping key of `value` turned into a Symbol, as in a hash the server built with `:key =>`."""
    if isinstance(value, dict):
        return {Symbol(key): symbolize_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [symbolize_keys(item) for item in value]
    return value


class Libyaml(enum.Enum):
    """The libyaml generation whose emitter writes the text (see the module's docstring)."""

    BEFORE_0_2_5 = "0.1.x to 0.2.2"  # Ruby 2.x: `key: ` for nil, `...` after a root plain scalar
    V0_2_5 = "0.2.5"  # Ruby 3.x: `key:`, no `...`


KADEPLOY3_LIBYAML = Libyaml.BEFORE_0_2_5


def symbol_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """`mapping` with its own keys (not the nested ones) as Symbols: a hash built `{ :wid => ..., ... }`."""
    return {Symbol(key): item for key, item in mapping.items()}


def dump(value: Any, libyaml: Libyaml = KADEPLOY3_LIBYAML) -> str:
    """The text of Ruby's `value.to_yaml` (a document with `---`, ending with a newline)."""
    events: list[Event] = [StreamStartEvent(encoding="utf-8"), DocumentStartEvent(explicit=True)]
    _events(value, events)
    events += [DocumentEndEvent(explicit=False), StreamEndEvent()]
    # yaml.emit only feeds events to its Dumper: an Emitter is all it needs (no serializer, representer, resolver)
    emitter = _PsychEmitter if libyaml is Libyaml.V0_2_5 else _LegacyPsychEmitter
    return yaml.emit(events, Dumper=emitter, allow_unicode=True, width=80, indent=2)


def ruby_float(number: float) -> str:
    """Ruby's `Float#to_s`: shortest digits, fixed from 0.0001 to below 1e15 (or 1e16 with decimals), else `1.0e-05`."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    sign, digit_tuple, exponent = decimal.Decimal(repr(float(number))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    point = len(digit_tuple) + int(exponent)  # where the decimal point falls after the first digit's place
    if digits == "0":
        point = 1
    head = "-" if sign else ""
    if 0 < point < 16 or (point == 16 and len(digits) > point):  # Ruby: 1.0e+15, but 1032050905083866.4
        whole = digits[:point].ljust(point, "0")
        return f"{head}{whole}.{digits[point:] or '0'}"
    if -4 < point <= 0:
        return f"{head}0.{'0' * -point}{digits}"
    return f"{head}{digits[0]}.{digits[1:] or '0'}e{'+' if point - 1 >= 0 else '-'}{abs(point - 1):02d}"


# -- Psych's representer (YAMLTree) ---------------------------------------------------

_PLAIN = None
_SINGLE = "'"
_DOUBLE = '"'
_LITERAL = "|"


def _events(value: Any, events: list[Event]) -> None:
    if isinstance(value, dict):
        events.append(MappingStartEvent(anchor=None, tag=None, implicit=True, flow_style=False))
        for key, item in value.items():
            _events(key, events)
            _events(item, events)
        events.append(MappingEndEvent())
    elif isinstance(value, (list, tuple)):
        events.append(SequenceStartEvent(anchor=None, tag=None, implicit=True, flow_style=False))
        for item in value:
            _events(item, events)
        events.append(SequenceEndEvent())
    else:
        events.append(_scalar(value))


def _scalar(value: Any) -> ScalarEvent:
    if value is None:  # visit_NilClass
        return ScalarEvent(None, "tag:yaml.org,2002:null", (True, False), "", style=_PLAIN)
    if isinstance(value, Symbol):  # visit_Symbol
        if not value:
            return ScalarEvent(None, "!ruby/symbol", (False, False), "", style=_PLAIN)
        return ScalarEvent(None, None, (True, False), f":{value}", style=_PLAIN)
    if isinstance(value, bool):  # visit_TrueClass / visit_FalseClass
        return ScalarEvent(None, None, (True, False), "true" if value else "false", style=_PLAIN)
    if isinstance(value, int):  # visit_Integer
        return ScalarEvent(None, None, (True, False), str(value), style=_PLAIN)
    if isinstance(value, float):  # visit_Float
        if math.isnan(value):
            text = ".nan"
        elif math.isinf(value):
            text = ".inf" if value > 0 else "-.inf"
        else:
            text = ruby_float(value)
        return ScalarEvent(None, None, (True, False), text, style=_PLAIN)
    return _string(str(value))


def _string(text: str) -> ScalarEvent:
    """visit_String: the style Psych asks for; libyaml may still quote a plain one it cannot write."""
    tag = None
    plain = quote = True
    style: str | None = _PLAIN
    if re.search(r"\n(?!\Z)", text):  # Ruby's /\n(?!\Z)/: a newline that is not the last character
        style = _LITERAL
    elif text == "<<":
        style, tag, plain, quote = _SINGLE, "tag:yaml.org,2002:str", False, False
    elif text in ("y", "n"):
        style = _DOUBLE
    elif re.search(r'^[^\w][^"]*$', text, re.MULTILINE):  # /^[^[:word:]][^"]*$/
        style = _DOUBLE
    elif not isinstance(tokenize(text), str) or re.match(r"0[0-7]*[89]", text):
        style = _SINGLE
    return ScalarEvent(None, tag, (plain, quote), text, style=style)


# Psych::ScalarScanner's patterns; Ruby's ^ and $ are line anchors, hence MULTILINE.
_TIME = re.compile(r"^-?\d{4}-\d{1,2}-\d{1,2}(?:[Tt]|\s+)\d{1,2}:\d\d:\d\d(?:\.\d*)?(?:\s*(?:Z|[-+]\d{1,2}:?(?:\d\d)?))?$",
                   re.MULTILINE)
_DATE = re.compile(r"^\d{4}-(?:1[012]|0\d|\d)-(?:[12]\d|3[01]|0\d|\d)$", re.MULTILINE)
_FLOAT = re.compile(r"^(?:[-+]?([0-9][0-9_,]*)?\.[0-9]*([eE][-+][0-9]+)?)$", re.MULTILINE)
_INTEGER = re.compile(r"^(?:[-+]?0b[0-1_,]+|[-+]?0[0-7_,]+|[-+]?(?:0|[1-9](?:[0-9]|,[0-9]|_[0-9])*)"
                      r"|[-+]?0x[0-9a-fA-F_,]+)$", re.MULTILINE)
_WORDY = re.compile(r"^[^\d.:-]?(?:[^\W\d_]|[_\s!@#$%^&*(){}<>|/\\~;=])+", re.MULTILINE)


class _NotString:
    """What ScalarScanner#tokenize returns for a string that reads back as another type."""


_OTHER = _NotString()


def tokenize(text: str) -> Any:
    """What Psych would read `text` back as: the text itself when it stays a string, else a marker."""
    if not text:
        return None
    if _WORDY.search(text) or "\n" in text:
        if len(text) > 5:
            return text
        if re.search(r"^[^ytonf~]", text, re.MULTILINE | re.IGNORECASE):
            return text
        if text == "~" or re.search(r"^null$", text, re.MULTILINE | re.IGNORECASE):
            return None
        if re.search(r"^(yes|true|on|no|false|off)$", text, re.MULTILINE | re.IGNORECASE):
            return _OTHER
        return text
    if _TIME.search(text):
        return _OTHER if _valid_time(text) else text
    if _DATE.search(text):
        return _OTHER if _valid_date(text) else text
    if re.search(r"^(\+?\.inf|-\.inf|\.nan)$", text, re.MULTILINE | re.IGNORECASE):
        return _OTHER
    if re.search(r"^:.", text, re.MULTILINE):
        return _OTHER  # a symbol
    if re.search(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9]){1,2}(\.[0-9_]*)?$", text, re.MULTILINE):
        return _OTHER  # sexagesimal
    if _FLOAT.search(text):
        if re.fullmatch(r"[-+]?\.\n?", text):
            return text
        return _OTHER if _valid_float(text) else text
    if _INTEGER.search(text):
        return _OTHER if _valid_integer(text) else text
    return text


def _valid_time(text: str) -> bool:
    match = re.match(r"(-?\d{4})-(\d{1,2})-(\d{1,2})", text)
    if not match:
        return False
    _, month, day = (int(part) for part in match.groups())
    return 1 <= month <= 12 and 1 <= day <= 31


def _valid_date(text: str) -> bool:
    import datetime

    try:
        datetime.date(*(int(part) for part in text.strip().split("-")))
    except ValueError:
        return False
    return True


def _valid_float(text: str) -> bool:
    """Ruby's Float() of the text without `,`/`_` and a dot before the exponent or the end."""
    cleaned = re.sub(r"[,_]|\.([Ee]|$)", r"\1", text)
    return re.fullmatch(r"\s*[-+]?(\d+(_\d+)*)?(\.\d+(_\d+)*)?([eE][-+]?\d+)?\s*", cleaned) is not None \
        and re.search(r"\d", cleaned) is not None and not cleaned.strip().startswith((".", "-.", "+."))


def _valid_integer(text: str) -> bool:
    """Ruby's Integer() of the text without `,` and `_`."""
    cleaned = re.sub(r"[,_]", "", text)
    return re.fullmatch(r"[-+]?(0b[01]+|0x[0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", cleaned) is not None


# -- libyaml's emitter --------------------------------------------------------------------


class _PsychEmitter(Emitter):
    """PyYAML's emitter, which ports libyaml's; libyaml 0.2.5 ends a root plain scalar without `...`."""

    def process_scalar(self) -> None:
        super().process_scalar()
        self.open_ended = False


class _LegacyPsychEmitter(Emitter):
    """libyaml before 0.2.5: `yaml_emitter_write_plain_scalar` writes the separator space even for an
    empty scalar (`if (!emitter->whitespace) PUT(' ')`), where PyYAML's `write_plain` returns first;
    a root plain scalar leaves the document open-ended (`...`), as PyYAML's port does."""

    def write_plain(self, text: str, split: bool = True) -> None:
        if not text and not self.whitespace and not self.flow_level:
            data: Any = " "
            self.column += 1
            self.whitespace = True
            if self.encoding:
                data = data.encode(self.encoding)
            self.stream.write(data)
        super().write_plain(text, split)

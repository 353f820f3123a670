"""Shared machinery of the config room: YAML loading, strict models, messages.

Every configuration file (and the environment descriptions of the catalog
room) is validated by a pydantic model derived from `ConfigModel`. This module
turns pydantic's errors into one-line messages a site administrator can act on
(`clusters.conf: clusters[1].nodes[0].address: expected a string, got 12`) and
collects unknown keys as warnings, as Kadeploy3's parser did ("Unused field").

Key paths: mapping keys are joined with `/` (Kadeploy3's own notation, e.g.
`partitioning/block_device`), list items are written `[i]` and a key below a
list item follows a `.`: `remoteops/reboot[0].cmd`.

Imports nothing from other rooms except `kadeploy.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from kadeploy.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)

#: How many pydantic errors one message reports before "... and N more".
MAX_REPORTED_ERRORS = 5


class ConfigModel(BaseModel):
    """Base of every configuration model: strict types, unknown keys kept aside.

    `strict=True` because Kadeploy3 refused `"200"` where an integer is
    expected; `extra="allow"` so that unknown keys can be reported as
    warnings instead of failing the load (see `unknown_keys`).
    """

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)

    #: Keys Kadeploy3 reads here that this implementation does not honour, with
    #: why: written in a file, such a key is an error naming it, never a value
    #: parsed and then ignored.
    unsupported_keys: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in cls.unsupported_keys.items():
                if key in data:
                    raise UnsupportedKey(key, why)
        return data


class UnsupportedKey(ValueError):
    """A key Kadeploy3 reads and this implementation refuses; the message names the key's full path."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"not supported by this Kadeploy ({why}); remove this key")
        self.key = key


def format_path(loc: Iterable[str | int]) -> str:
    """Write a pydantic location as a Kadeploy key path (`a/b[0].c`)."""
    text = ""
    for item in loc:
        if isinstance(item, int):
            text += f"[{item}]"
        elif not text:
            text = str(item)
        elif text.endswith("]"):
            text += f".{item}"
        else:
            text += f"/{item}"
    return text


def join_path(prefix: str, key: str | int) -> str:
    """Append one key or list index to an already formatted path."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if not prefix:
        return key
    return f"{prefix}.{key}" if prefix.endswith("]") else f"{prefix}/{key}"


def describe_value(value: Any) -> str:
    """Show an offending value the way it looks in YAML, short."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f'"{shown}"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected a boolean (true or false)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
}


def describe_error(error: dict[str, Any]) -> str:
    """The part of the message after the key path, for one pydantic error."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "mandatory field is missing"
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {describe_value(value)}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {choices} (got {describe_value(value)})"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "")
        return f"must be {sign} {bound} (got {describe_value(value)})"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(error.get("msg", kind))


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    """One line per error, each naming the file and the key path."""
    lines = []
    errors = exc.errors()
    for error in errors[:MAX_REPORTED_ERRORS]:
        refused = (error.get("ctx") or {}).get("error")
        loc = (*error["loc"], refused.key) if isinstance(refused, UnsupportedKey) else error["loc"]
        path = format_path(loc)
        if prefix:
            path = f"{prefix}{'/' if path and not path.startswith('[') else ''}{path}"
        where = f"{source}: {path}" if path else source
        lines.append(f"{where}: {describe_error(error)}")
    if len(errors) > MAX_REPORTED_ERRORS:
        lines.append(f"{source}: ... and {len(errors) - MAX_REPORTED_ERRORS} more errors")
    return "\n".join(lines)


def unknown_keys(value: Any, path: str = "") -> list[str]:
    """Paths of the keys no model declared, found anywhere below `value`."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        for key in value.model_extra or {}:
            found.append(join_path(path, str(key)))
        for name, field in type(value).model_fields.items():
            if field.exclude:
                continue
            key = field.alias or name
            found.extend(unknown_keys(getattr(value, name), join_path(path, key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.extend(unknown_keys(item, join_path(path, index)))
    elif isinstance(value, dict):
        for key, item in value.items():
            found.extend(unknown_keys(item, join_path(path, str(key))))
    return found


def validate_model(
    model: type[ModelT],
    data: Any,
    source: str,
    *,
    context: dict[str, Any] | None = None,
    error: Callable[[str], Exception] = ConfigError,
) -> tuple[ModelT, list[str]]:
    """Validate `data` (parsed YAML) into `model`; return it with its warnings.

    Raises `error(message)` (ConfigError by default) naming `source`, the key
    path and what was expected.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping at the top level, got {describe_value(data)}")
    try:
        result = model.model_validate(data, context=context)
    except ValidationError as exc:
        raise error(format_validation_error(exc, source)) from None
    warnings = [f"{source}: {path}: unknown key, ignored" for path in unknown_keys(result)]
    return result, warnings


def yaml_error_message(exc: yaml.YAMLError, source: str) -> str:
    """`<source>: invalid YAML (line L, column C): <problem>`."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{source}: invalid YAML{where}: {exc.problem or exc}"
    return f"{source}: invalid YAML: {exc}"


def parse_yaml(text: str, source: str, *, error: Callable[[str], Exception] = ConfigError) -> Any:
    """Parse one YAML document; syntax errors name the file, line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(yaml_error_message(exc, source)) from None


def read_yaml_file(path: Path, source: str | None = None) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError."""
    name = source or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path} is not UTF-8 text") from None
    return parse_yaml(text, name)


def config_dir_of(info: ValidationInfo) -> Path:
    """The configuration directory relative paths are resolved against."""
    context = info.context or {}
    directory = context.get("config_dir")
    return Path(directory) if directory is not None else Path.cwd()


def resolve_path(value: str, info: ValidationInfo) -> Path:
    """Resolve a path of a configuration file: absolute, or relative to the config dir."""
    path = Path(value)
    return path if path.is_absolute() else config_dir_of(info) / path


def read_text_file(value: str, info: ValidationInfo) -> tuple[Path, str]:
    """Read a file named in a configuration file (script, group file).

    Raises ValueError so that pydantic attaches the key path to the message.
    """
    path = resolve_path(value, info)
    try:
        return path, path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def split_list(value: Any) -> Any:
    """Accept `"a, b,c"` (Kadeploy3's comma lists) as well as a YAML list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value

"""What Kadeploy3's tools write with Ruby's `puts` and their `Client#debug` (client.rb).

CLI room; pure functions returning text. In the multi-server mode every
client is named after its server and `debug` prefixes each line with
`sprintf("%-10s%s", "[name] ", line)`; `puts` adds a newline unless the text
already ends with one. Scripts read these lines, so they are reproduced as is.
"""

from __future__ import annotations


def puts(text: str) -> str:
    """Ruby's `$stdout.puts text`: the text and a newline unless it already ends with one."""
    return text if text.endswith("\n") else text + "\n"


def debug(text: str, name: str | None = None) -> str:
    """`Client#debug text`: each line prefixed `[name] ` padded to 10 columns when named, then `puts`."""
    if name:
        head = f"[{name}] "
        text = "".join(f"{head:<10}{line}" for line in text.splitlines(keepends=True))
    return puts(text)


def ruby_to_s(value: object) -> str:
    """Ruby's `"#{value}"` of a JSON scalar: floats as `Float#to_s` (`1.0e-05`, not Python's `1e-05`), nil as ``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        mantissa, sep, exponent = text.partition("e")
        if sep and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
        return text
    return str(value)

"""Write a section-1 (or 8) manual page from a command's own --help, as help2man does.

    manpage.py OUT_FILE SECTION VERSION NAME MODULE FUNCTION SITE_DIR...

Runs `MODULE.FUNCTION()` with argv `NAME --help`, the staged SITE_DIRs first on
sys.path (the build's virtual environment cannot run in place: its
interpreter link is relative to its installed path), and wraps the text in a
minimal man page: NAME (the first line of the parser's description, or
Kadeploy's generic line), then the help verbatim. The help is the one
reference of a command's options, so the page cannot drift from it.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import sys
from pathlib import Path

SUMMARIES = {
    "kadeploy3d": "Kadeploy deployment server",
    "kadeploy3": "deploy an environment on nodes",
    "kareboot3": "reboot nodes, optionally into an environment",
    "kapower3": "power nodes on or off, or get their power status",
    "kaconsole3": "open the console of a node",
    "kanodes3": "show the deployment state of nodes",
    "kaenv3": "manage the environments of Kadeploy",
    "kastat3": "show the statistics of Kadeploy",
    "karights3": "manage the deployment rights of users",
    "kadeploy-capture": "capture a node's system as a new environment",
    "kadeploy-testbed": "virtual clusters for testing Kadeploy",
}


def help_text(name: str, module: str, function: str) -> str:
    """What `NAME --help` prints (argparse exits 0 after printing)."""
    main = getattr(importlib.import_module(module), function)
    out = io.StringIO()
    sys.argv = [name, "--help"]
    with contextlib.redirect_stdout(out):
        try:
            main(["--help"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"{name} --help exited {exc.code}") from None
    text = out.getvalue()
    if not text.strip():
        raise RuntimeError(f"{name} --help printed nothing")
    return text


def escape(line: str) -> str:
    """roff: backslashes doubled, a leading dot or quote protected."""
    line = line.replace("\\", "\\e")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def page(name: str, section: str, version: str, text: str) -> str:
    summary = SUMMARIES.get(name, "part of Kadeploy in Python")
    body = "\n".join(escape(line) for line in text.rstrip("\n").splitlines())
    return (f'.TH {name.upper()} {section} "" "Kadeploy {version}" "Kadeploy in Python"\n'
            f".SH NAME\n{escape(name)} \\- {summary}\n"
            f".SH DESCRIPTION\nThe options, as `{escape(name)} --help' prints them:\n"
            f".PP\n.nf\n{body}\n.fi\n"
            f".SH SEE ALSO\n/usr/share/doc/kadeploy3-common/README.md.gz\n")


def main(argv: list[str]) -> int:
    out_file, section, version, name, module, function, *sites = argv
    sys.path[:0] = sites
    content = page(name, section, version, help_text(name, module, function))
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(content.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

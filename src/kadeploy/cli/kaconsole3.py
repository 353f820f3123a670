"""kaconsole3: attach the terminal to a node's console (reference 2.9, 6.4).

CLI room. `POST /console {node}` opens a console workflow whose answer names a
`tcp://host:port` stream and (our addition) a one-time `token`, sent as the
first line so that the port alone is no longer a secret worth stealing. The
terminal goes to raw mode; four ESC in a row detach; the workflow is then
deleted (which kills the console command on the server).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import termios
import tty
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from kadeploy.cli.common import (
    OptionError,
    add_generic_options,
    new_parser,
    open_session,
    parse_or_finish,
    run_tool,
    with_dry_run,
)
from kadeploy.client.errors import ClientError
from kadeploy.client.nodes import collect_nodes

ESCAPE = b"\x1b\x1b\x1b\x1b"
CONNECT_TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("kaconsole3", "Open the console of a node")
    add_generic_options(parser)
    group = parser.add_argument_group("kaconsole3 options")
    group.add_argument("-m", "--machine", action="append", dest="machines", metavar="MACHINE",
                       help="The node to open the console of")
    return parser


class EscapeDetector:
    """Spots four consecutive ESC bytes across reads (the detach sequence)."""

    def __init__(self) -> None:
        self.count = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Bytes to forward, and whether the escape sequence is complete."""
        for index, byte in enumerate(data):
            self.count = self.count + 1 if byte == 0x1B else 0
            if self.count == len(ESCAPE):
                return data[: index + 1 - len(ESCAPE) if index + 1 >= len(ESCAPE) else 0], True
        return data, False


def parse_console_uri(uri: str) -> tuple[str, int]:
    parts = urlsplit(uri)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        raise ClientError(f"Invalid console address from the server: {uri!r}")
    return parts.hostname, parts.port


def bridge(sock: socket.socket, stdin_fd: int, stdout_fd: int) -> None:
    """Copy bytes both ways until the node side closes or the user types the escape sequence."""
    detector = EscapeDetector()
    while True:
        readable, _, _ = select.select([sock, stdin_fd], [], [], 1.0)
        if sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            os.write(stdout_fd, data)
        if stdin_fd in readable:
            data = os.read(stdin_fd, 4096)
            if not data:
                return
            forward, escaped = detector.feed(data)
            if forward:
                sock.sendall(forward)
            if escaped:
                return


def attach(answer: dict[str, Any], stdin_fd: int, stdout_fd: int) -> None:
    resources = answer.get("resources") or {}
    host, port = parse_console_uri(str(resources.get("console") or answer.get("console") or ""))
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise ClientError(f"Cannot connect to the console at {host}:{port}: {exc.strerror or exc}") from None
    with sock:
        sock.settimeout(None)
        token = answer.get("token")
        if token:
            sock.sendall(f"{token}\n".encode())
        saved = termios.tcgetattr(stdin_fd) if os.isatty(stdin_fd) else None
        try:
            if saved is not None:
                tty.setraw(stdin_fd)
            bridge(sock, stdin_fd, stdout_fd)
        finally:
            if saved is not None:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)


def body(argv: Sequence[str]) -> int:
    parsed = parse_or_finish(build_parser(), argv)
    if parsed is None:
        return 0
    args, generic = parsed
    nodes = collect_nodes(args.machines, None)
    if len(nodes) != 1:
        raise OptionError("You must choose exactly one node (-m)")
    if not sys.stdin.isatty() and not generic.dry_run:  # a dry run attaches nothing
        raise OptionError("STDIN must be a TTY")
    with open_session(generic) as session:
        (connection, share), = session.dispatch_nodes(nodes)
        answer = connection.post("/console", with_dry_run({"node": share[0]}, generic))
        if generic.dry_run:
            # the server checked the node, the rights and the console command, and opened nothing
            return 0
        if not isinstance(answer, dict) or "resources" not in answer:
            raise ClientError(f"Invalid answer from the server to POST /console: {answer!r}")
        resource = answer["resources"].get("resource") or f"/console/{answer.get('wid')}"
        try:
            attach(answer, sys.stdin.fileno(), sys.stdout.fileno())
        finally:
            try:
                connection.delete(resource, timeout=10.0)
            except ClientError:
                pass
    sys.stdout.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())

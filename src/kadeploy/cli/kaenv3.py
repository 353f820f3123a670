"""kaenv3: the environment catalogue (reference 2.4, 1.4 `/environments`).

CLI room. List (`-l`), print (`-p`), add (`-a`), delete (`-d`), tag
(visibility, destructive), checksum updates and `--move-files`. Listing
columns and YAML printing follow Kadeploy3's kaenv3.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from kadeploy import psych
from kadeploy.cli import printing
from kadeploy.cli.common import (
    NUMBER,
    USER_NAME,
    OptionError,
    add_generic_options,
    new_parser,
    open_session,
    parse_or_finish,
    run_tool,
    with_dry_run,
)
from kadeploy.cli.optionparser import accept
from kadeploy.client.export import FileExporter
from kadeploy.client.http import Connection
from kadeploy.client.session import GenericOptions

CHECKSUM_PARAMS = {
    "update_image_checksum": "update_image_checksum",
    "update_preinstall_checksum": "update_preinstall_checksum",
    "update_postinstalls_checksum": "update_postinstalls_checksum",
}


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("kaenv3", "Manage the environment catalogue")
    add_generic_options(parser)
    ops = parser.add_argument_group("General options")
    ops.add_argument("-a", "--add", metavar="ENVFILE", help="Add an environment")
    ops.add_argument("-d", "--delete", metavar="ENVNAME", help="Delete an environment")
    ops.add_argument("-l", "--list", nargs="?", const="", default=None, metavar="PATTERN",
                     help="List environments (%% is a wildcard)")
    ops.add_argument("-p", "--print", metavar="ENVNAME", dest="print_env", help="Print an environment")
    ops.add_argument("-s", "--all-versions", "--show-all-versions", action="store_true",
                     help="Apply to or show all versions of an environment")
    ops.add_argument("-t", "--visibility-tag", metavar="TAG", choices=("public", "private", "shared"),
                     help="Visibility tag (private, shared, public)")
    accept(ops.add_argument("-u", "--env-user", "--user", metavar="USERNAME", help="Owner of the environment"),
           USER_NAME)
    accept(ops.add_argument("--env-version", metavar="NUMBER", help="Version of the environment"), NUMBER)
    ops.add_argument("-m", "--files-to-move", metavar="FILES", help="Files to move (src1::dst1,src2::dst2,...)")
    adv = parser.add_argument_group("Advanced options")
    adv.add_argument("--toggle-destructive-tag", metavar="ENVNAME", help="Toggle the destructive tag")
    adv.add_argument("--set-visibility-tag", metavar="ENVNAME", help="Set the visibility tag (needs -t)")
    adv.add_argument("--update-image-checksum", metavar="ENVNAME", help="Update the checksum of the image")
    adv.add_argument("--update-preinstall-checksum", metavar="ENVNAME", help="Update the preinstall checksum")
    adv.add_argument("--update-postinstalls-checksum", metavar="ENVNAME", help="Update the postinstalls checksums")
    adv.add_argument("--move-files", action="store_true", help="Move the files of the environments (admins)")
    adv.add_argument("--secure", action=argparse.BooleanOptionalAction, default=False,
                     help="Use a secure connection to export files to the server")
    return parser


OPERATIONS = (
    ("add", "add"), ("delete", "delete"), ("list", "list"), ("print_env", "print"),
    ("toggle_destructive_tag", "toggle-destructive-tag"), ("set_visibility_tag", "set-visibility-tag"),
    ("update_image_checksum", "update-image-checksum"),
    ("update_preinstall_checksum", "update-preinstall-checksum"),
    ("update_postinstalls_checksum", "update-postinstalls-checksum"),
)


def operation_of(args: argparse.Namespace) -> tuple[str, str | None]:
    """The single operation asked for and its argument (env name or file)."""
    chosen = [(name, getattr(args, attr)) for attr, name in OPERATIONS if getattr(args, attr) is not None]
    if args.move_files:
        chosen.append(("move-files", None))
    if not chosen:
        raise OptionError("You must choose an operation")
    if len(chosen) > 1:
        raise OptionError(f"Only one operation at a time: {', '.join(name for name, _ in chosen)}")
    return chosen[0]


def check_options(args: argparse.Namespace, operation: str, argument: str | None) -> None:
    if args.visibility_tag is not None and args.visibility_tag not in ("private", "shared", "public"):
        raise OptionError("Invalid visibility tag")
    if operation in ("delete", "print", "toggle-destructive-tag", "set-visibility-tag") or \
            operation.startswith("update-"):
        if not argument:
            raise OptionError("You must choose an environment")
    if operation == "set-visibility-tag" and not args.visibility_tag:
        raise OptionError("You must define the visibility value")
    if operation == "move-files" and not args.files_to_move:
        raise OptionError("You must define some files to move")


def parse_files_to_move(text: str) -> dict[str, str]:
    if not re.fullmatch(r".+::.+(,.+::.+)*", text):
        raise OptionError("Invalid synthax for files to move")
    moves: dict[str, str] = {}
    for pair in text.split(","):
        source, _, destination = pair.partition("::")
        moves[source] = destination
    return moves


def env_path(user: str, name: str, version: str | None) -> str:
    path = f"/environments/{quote(user, safe='')}/{quote(name, safe='')}"
    return path + (f"/{version}" if version else "")


def list_lines(environments: list[dict[str, Any]]) -> list[str]:
    """Kadeploy3's listing (bin/kaenv3 `print_headers`, `print_short`), column widths and cut included."""
    if not environments:
        return ["No environment has been found"]
    lines = [
        f"{'Name':<21} {'Version':<7} {'User':<11} Description",
        f"{'####':<21} {'#######':<7} {'####':<11} ###########",
    ]
    return lines + [short_line(env) for env in environments]


def short_line(env: dict[str, Any]) -> str:
    """bin/kaenv3 `print_short`: a long name eats into the version column, the line stays within 80.

    `tot` counts the columns used before the description; a description longer than `80 - tot`
    is cut to `80 - tot - 3` characters and `...`. With a name of 28 characters or more, Kadeploy3
    counts `env['version'].size`, which for a Ruby Integer is its size in bytes: 8.
    """
    name, version, user = str(env.get("name")), env.get("version"), str(env.get("user"))
    description = str(env.get("description") or "")
    tot = max(len(name), 21)
    line = f"{name:<21} "
    extra = len(name) - 21
    if extra > 0:
        if extra < 7:
            line += f"{_ruby_to_s(version):<{7 - extra}} "
            tot += 7 - extra
        else:
            line += f"{_ruby_to_s(version)} "
            tot += 8 if isinstance(version, int) else len(_ruby_to_s(version))
    else:
        line += f"{_ruby_to_s(version):<7} "
        tot += 7
    line += f"{user:<11} "
    tot += max(len(user), 11) + 3
    if len(description) > 80 - tot:
        return line + description[:max(80 - tot - 3, 0)] + "..."
    return line + description[:max(80 - tot, 0)]


def _ruby_to_s(value: Any) -> str:
    return "" if value is None else str(value)


def print_lines_yaml(environments: list[dict[str, Any]], asked_user: str | None, me: str) -> str:
    """`kaenv3 -p` (bin/kaenv3 `result`, `print_full`): each environment's Ruby `to_yaml`, `user` removed.

    Without `-u`, the user's own environments are printed if any matched, else all of them.
    """
    if not environments:
        return "No environment has been found\n"
    chosen = environments
    if asked_user is None:
        chosen = [env for env in environments if env.get("user") == me] or environments
    return "".join(printing.puts(psych.dump({key: value for key, value in env.items() if key != "user"}))
                   for env in chosen)


def run_operation(connection: Connection, args: argparse.Namespace, operation: str, argument: str | None,
                  generic: GenericOptions) -> str:
    """Perform the operation on one server; returns the text to print (none for a dry run, as Kadeploy3)."""
    user = args.env_user or connection.user
    if operation == "list":
        params: dict[str, Any] = {"username": args.env_user, "version": args.env_version}
        if argument:
            params["name"] = argument
        if not args.all_versions and args.env_version is None:
            params["last"] = True
        environments = connection.get("/environments", with_dry_run(params, generic)) or []
        return "" if generic.dry_run else "\n".join(list_lines(environments)) + "\n"
    if operation == "print":
        # as Kadeploy3, only -u names a user: the server answers every visible match (bin/kaenv3 `run`)
        params = {"username": args.env_user or None, "name": argument, "version": args.env_version}
        if not args.all_versions and args.env_version is None:
            params["last"] = True
        environments = connection.get("/environments", with_dry_run(params, generic)) or []
        return "" if generic.dry_run else print_lines_yaml(environments, args.env_user, connection.user)
    if operation == "add":
        from kadeploy.cli.kadeploy3 import load_env_file

        description, local_files = load_env_file(argument or "")
        if args.env_user:
            description["user"] = args.env_user
        return _with_export(connection, args, local_files, lambda extra: connection.post(
            "/environments", with_dry_run({"environment": description, **extra}, generic)))
    if operation == "delete":
        params = {} if args.all_versions or args.env_version else {"last": True}
        connection.delete(env_path(user, argument or "", args.env_version), with_dry_run(params, generic))
        return ""
    if operation == "move-files":
        moves = parse_files_to_move(args.files_to_move)
        path = "/environments" + (f"/{quote(args.env_user, safe='')}" if args.env_user else "")
        answer = connection.put(path, with_dry_run({"update_files": moves}, generic))
        if generic.dry_run:
            return ""
        return "".join(f"{env.get('name')} v{env.get('version')}\n" for env in answer or [] if isinstance(env, dict))
    body: dict[str, Any] = {}
    if operation == "set-visibility-tag":
        body["visibility"] = args.visibility_tag
    elif operation == "toggle-destructive-tag":
        body["toggle_destructive"] = True
    else:
        body[operation.replace("-", "_")] = True
    if not args.all_versions and args.env_version is None:
        body["last"] = True
    body = with_dry_run(body, generic)
    path = env_path(user, argument or "", args.env_version)
    if operation.startswith("update-"):
        local_files = _local_files_of(connection, user, argument or "", args.env_version)
        _with_export(connection, args, local_files, lambda extra: connection.put(path, {**body, **extra}))
    else:
        connection.put(path, body)
    return ""


def _local_files_of(connection: Connection, user: str, name: str, version: str | None) -> list[str]:
    """Checksum updates of an environment made of client-local files need those files exported."""
    params: dict[str, Any] = {"username": user, "name": name, "version": version}
    if version is None:
        params["last"] = True
    environments = connection.get("/environments", params) or []
    files: list[str] = []
    for env in environments[:1]:
        candidates = [(env.get("image") or {}).get("file"), (env.get("preinstall") or {}).get("archive")]
        candidates += [post.get("archive") for post in env.get("postinstalls") or [] if isinstance(post, dict)]
        files += [str(c) for c in candidates if isinstance(c, str) and c.startswith("/")]
    return files


def _with_export(connection: Connection, args: argparse.Namespace, local_files: list[str], send: Any) -> str:
    if not local_files:
        send({})
        return ""
    exporter = FileExporter(secure=args.secure)
    for reference in local_files:
        exporter.add(reference)
    exporter.start()
    try:
        send({"client": exporter.url(connection.server.hostname)})
    finally:
        exporter.stop()
    return ""


def body(argv: Sequence[str]) -> int:
    parsed = parse_or_finish(build_parser(), argv)
    if parsed is None:
        return 0
    args, generic = parsed
    operation, argument = operation_of(args)
    check_options(args, operation, argument)
    with open_session(generic) as session:
        for connection in session.connections:
            text = run_operation(connection, args, operation, argument, generic)
            if text:
                print(printing.debug(text, connection.server.name if session.multi else None), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())

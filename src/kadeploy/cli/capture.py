"""kadeploy-capture: make an environment from a customised node (what Grid'5000's tgz-g5k does).

CLI room. A user deploys an environment, customises the node, then runs
`kadeploy-capture -m node -o ~/myenv.tzst`: the node's root filesystem is
archived over SSH (as root, with the user's key) into a tgz or tzst image,
and an environment description is written beside it (`~/myenv.yaml`),
derived from the one the node was deployed with (asked from kadeploy3d:
`GET /nodes/<node>` then `GET /environments`), ready for `kaenv3 -a`.

The archive is made the way tgz-g5k makes it, on the node:
* the root filesystem is bind-mounted (non-recursively) on a temporary
  directory and archived from there, so that mounted subtrees (/proc, /sys,
  /dev, /run, tmpfs, NFS homes) are not in the image while the static content
  beneath them (the /dev nodes of the root filesystem) is;
* `tar --numeric-owner --one-file-system --xattrs --acls --sparse`: owners by
  number (the image is unpacked in the deployment environment, whose
  /etc/passwd differs), one filesystem only;
* udev's persistent network rules are left out (they would pin the NIC names
  to this node's MAC addresses on every other node);
* compression on the node (`gzip -c`, or `zstd -c -T0`), the stream saved
  locally.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kadeploy.cli.common import (
    OptionError,
    add_generic_options,
    generic_from_args,
    new_parser,
    open_session,
    parse_or_finish,
    run_tool,
)

COMPRESSORS = {"gzip": "gzip -c", "zstd": "zstd -q -c -T0"}
SUFFIXES = {".tgz": "gzip", ".tar.gz": "gzip", ".tzst": "zstd", ".tar.zst": "zstd"}
EXCLUDES = (
    "./etc/udev/rules.d/70-persistent-net.rules",
    "./etc/udev/rules.d/75-persistent-net-generator.rules",
    "./etc/udev/rules.d/z25_persistent-net.rules",
    "./var/lib/dhcp/*.leases",
)
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15", "-o", "LogLevel=ERROR")


def compression_of(output: Path, asked: str | None) -> str:
    """gzip or zstd: as asked, else from the file name (.tgz, .tzst)."""
    if asked:
        return asked
    name = output.name
    for suffix, compression in SUFFIXES.items():
        if name.endswith(suffix):
            return compression
    raise OptionError(f"Cannot tell the compression from {output.name}: name it .tgz or .tzst, or give -z")


def capture_script(compression: str, root: str = "/", excludes: Sequence[str] = EXCLUDES) -> str:
    """The shell script run on the node; it writes the compressed tar stream on stdout."""
    if compression not in COMPRESSORS:
        raise OptionError(f"Invalid compression {compression!r} (gzip, zstd)")
    exclude_args = " ".join(f"--exclude={shlex.quote(pattern)}" for pattern in excludes)
    return (
        "set -e; "
        "snapshot=$(mktemp -d /tmp/kadeploy-capture.XXXXXX); "
        "trap 'umount \"$snapshot\" 2>/dev/null; rmdir \"$snapshot\"' EXIT; "
        f"mount --bind {shlex.quote(root)} \"$snapshot\"; "
        "tar --numeric-owner --one-file-system --xattrs --acls --sparse "
        f"{exclude_args} -C \"$snapshot\" -cf - . | {COMPRESSORS[compression]}"
    )


def ssh_command(node: str, script: str, *, user: str = "root", identity: Path | None = None,
                port: int = 22) -> list[str]:
    """`ssh ... root@node 'sh -c <script>'` (the script quoted once for the remote shell)."""
    command = ["ssh", *SSH_OPTIONS, "-p", str(port), "-l", user]
    if identity is not None:
        command += ["-i", str(identity)]
    return command + [node, f"sh -c {shlex.quote(script)}"]


def run_capture(command: Sequence[str], output: Path, timeout: float) -> int:
    """Stream the archive into `output` (written as `<output>.part`, renamed when complete); its size."""
    partial = output.with_name(output.name + ".part")
    try:
        with partial.open("wb") as handle:
            done = subprocess.run(list(command), stdout=handle, stderr=subprocess.PIPE, timeout=timeout, check=False)
        if done.returncode != 0:
            reason = done.stderr.decode(errors="replace").strip().splitlines()
            raise OptionError(f"The capture failed (exit status {done.returncode}): "
                              f"{reason[-1] if reason else 'no message'}")
        partial.replace(output)
        return output.stat().st_size
    except subprocess.TimeoutExpired:
        raise OptionError(f"The capture did not finish within {int(timeout)} s") from None
    finally:
        partial.unlink(missing_ok=True)


def derived_description(base: dict[str, Any], *, image_uri: str, compression: str, name: str | None,
                        node: str, author: str) -> dict[str, Any]:
    """The description of the captured image: the deployed one's boot and filesystem, our image, private."""
    env = {key: value for key, value in base.items() if key not in ("id", "user", "image", "visibility")}
    env["name"] = name or f"{base.get('name', 'captured')}-captured"
    env["version"] = 1 if name else int(base.get("version") or 0) + 1
    env["description"] = f"Captured from {node} on {time.strftime('%Y-%m-%d %H:%M')}" + (
        f" (based on {base.get('name')} version {base.get('version')} of {base.get('user')})" if base.get("name") else "")
    env["author"] = author
    env["visibility"] = "private"
    env["image"] = {"file": image_uri, "kind": "tar", "compression": compression}
    env.setdefault("os", "linux")
    env.pop("preinstall", None)  # already applied on the captured system
    env.pop("postinstalls", None)
    return env


def deployed_environment(args: argparse.Namespace, node: str) -> dict[str, Any]:
    """The description of the environment last deployed on `node`, from the server."""
    generic = generic_from_args(args)
    with open_session(generic) as session:
        connection = session.connections[0]
        state = (connection.get(f"/nodes/{node}") or {}).get(node)
        env = (state or {}).get("environment") if isinstance(state, dict) else None
        if not env or not env.get("name"):
            raise OptionError(f"The server does not know which environment {node} runs: "
                              "give its description with --env-file")
        found = connection.get("/environments", {"username": env.get("user"), "name": env["name"],
                                                 "version": env.get("version")}) or []
        if not found:
            raise OptionError(f"The environment {env['name']} version {env.get('version')} of {env.get('user')} "
                              "is no longer in the catalogue: give its description with --env-file")
        return dict(found[0])


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("kadeploy-capture", "Archive a deployed node's system into an image and a description")
    add_generic_options(parser)
    group = parser.add_argument_group("capture options")
    group.add_argument("-m", "--machine", help="The node to capture (required)")
    group.add_argument("-o", "--output", type=Path, help="Image file to write, .tgz or .tzst (required)")
    group.add_argument("-z", "--compression", choices=sorted(COMPRESSORS), help="gzip or zstd (default: from -o)")
    group.add_argument("-n", "--name", help="Name of the new environment (default: <deployed name>-captured)")
    group.add_argument("-d", "--description-file", type=Path, help="Where to write the description "
                                                                  "(default: the image name with .yaml)")
    group.add_argument("-e", "--env-file", type=Path, help="Derive from this description instead of asking the server")
    group.add_argument("--image-uri", help="The image reference written in the description "
                                           "(default: the absolute path of -o; e.g. http://... or server://...)")
    group.add_argument("-k", "--identity", type=Path, help="SSH private key for root on the node")
    group.add_argument("--ssh-user", default="root", help="SSH user on the node (default root)")
    group.add_argument("--ssh-port", type=int, default=22, help="SSH port of the node (default 22)")
    group.add_argument("--timeout", type=float, default=3600.0, help="Give up after this many seconds (3600)")
    return parser


def body(argv: Sequence[str]) -> int:
    parsed = parse_or_finish(build_parser(), argv)
    if parsed is None:  # --completion, -v or -I answered (they need no node)
        return 0
    args, _ = parsed
    missing = [option for option, value in (("-m/--machine", args.machine), ("-o/--output", args.output)) if not value]
    if missing:
        raise OptionError(f"the following arguments are required: {', '.join(missing)}")
    output = args.output.expanduser().resolve()
    compression = compression_of(output, args.compression)
    if args.env_file is not None:
        try:
            base = yaml.safe_load(args.env_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise OptionError(f"Cannot read the description {args.env_file}: {exc}") from None
        if not isinstance(base, dict):
            raise OptionError(f"{args.env_file}: not an environment description")
    else:
        base = deployed_environment(args, args.machine)
    script = capture_script(compression)
    size = run_capture(ssh_command(args.machine, script, user=args.ssh_user, identity=args.identity,
                                   port=args.ssh_port), output, args.timeout)
    env = derived_description(base, image_uri=args.image_uri or str(output), compression=compression,
                              name=args.name, node=args.machine, author=os.environ.get("USER") or getpass.getuser())
    target = args.description_file or output.with_name(output.name.split(".")[0] + ".yaml")
    target.write_text(yaml.safe_dump(env, sort_keys=False, default_flow_style=False, explicit_start=True))
    print(f"Captured {args.machine} into {output} ({size} bytes); description in {target} (kaenv3 -a {target})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""testbed room: the `kadeploy-testbed` console script.

Subcommands: up, down, status, power, fault, vlan (usable as the server's
`network/vlan/set_cmd`), console (the cluster's console command) and
`image build` (delegated to `images`). `up`/`down` drive `hostsetup` and start
or stop the daemon; the others are requests to the running daemon over its
control socket. User errors print one line and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed import hostsetup
from kadeploy_testbed.configdir import DEPLOY_INITRD, DEPLOY_KERNEL, POWER_METHODS, redfish_tls_paths, write_config
from kadeploy_testbed.layout import DEFAULT_DIR, NODES_PER_OUTLET, PDU_PORT, REDFISH_PORT, SERVER_IP, build_layout
from kadeploy_testbed.state import FAULT_KINDS, TestbedState, control_socket, disk_path, load_state, node_run_dir

DAEMON_START_TIMEOUT = 60.0
CONTROL_TIMEOUT = 60.0
DEPLOY_KERNEL_MARKER = b"kadeploy-testbed deployment kernel (the firmware boots the deploy rootfs for it)\n"
DEPLOY_INITRD_MARKER = b"kadeploy-testbed deployment initrd\n"


def require_root() -> None:
    if os.geteuid() != 0:
        raise KadeployError(ErrorCode.INVALID_RIGHTS,
                            "kadeploy-testbed needs root (network namespaces, bridges, loop devices, port 623)")


def control(directory: Path, request: dict[str, Any], timeout: float = CONTROL_TIMEOUT) -> dict[str, Any]:
    """One request to the daemon; a dead daemon or an error answer is a KadeployError."""
    path = control_socket(directory)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, socket.timeout) as exc:
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            f"testbed daemon not answering on {path} ({exc}); is the testbed up?") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise KadeployError(ErrorCode.EXECUTE_ERROR, f"testbed daemon: garbled answer {data[:200]!r}") from None
    if not answer.get("ok"):
        raise KadeployError(ErrorCode.INVALID_OPTION, str(answer.get("error")))
    return answer


def write_tftpboot(directory: Path) -> None:
    """PXE repository skeleton; the deploy kernel is a marker the firmware recognises by content."""
    root = directory / "tftpboot"
    for sub in ("kernels", "pxelinux.cfg", "userfiles"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / DEPLOY_KERNEL).write_bytes(DEPLOY_KERNEL_MARKER)
    (root / DEPLOY_INITRD).write_bytes(DEPLOY_INITRD_MARKER)
    for nbp in ("pxelinux.0", "chain.c32", "mboot.c32"):
        (root / nbp).write_bytes(f"kadeploy-testbed {nbp}\n".encode())


def start_daemon(directory: Path) -> int:
    log = open(directory / "daemon.log", "ab")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "kadeploy_testbed.daemon", "--dir", str(directory)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (directory / "daemon.log").read_text(errors="replace")[-1500:]
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"testbed daemon exited at start:\n{tail}")
        if control_socket(directory).exists():
            try:
                control(directory, {"op": "status"}, timeout=5)
                return proc.pid
            except KadeployError:
                pass
        time.sleep(0.2)
    raise KadeployError(ErrorCode.EXECUTE_ERROR, f"testbed daemon not ready after {DAEMON_START_TIMEOUT}s")


def _qemu_dir(args: argparse.Namespace) -> Path | None:
    """The QEMU testbed directory when this command is for QEMU mode (`--mode qemu` or its state file)."""
    from kadeploy_testbed.qemu import cli as qemu_cli
    from kadeploy_testbed.qemu import state as qemu_state
    directory = qemu_cli.resolve_dir(args.dir, DEFAULT_DIR) if getattr(args, "mode", "netns") == "qemu" else args.dir
    return directory if getattr(args, "mode", "netns") == "qemu" or qemu_state.is_qemu_testbed(directory) else None


FAKE_DIR = Path("/var/lib/kadeploy-testbed-fake")


def _fake_dir(args: argparse.Namespace) -> Path | None:
    """The fake testbed directory when this command is for fake mode (`--mode fake` or its settings file)."""
    from kadeploy_testbed.fake.settings import is_fake

    if getattr(args, "mode", "netns") == "fake":
        return FAKE_DIR if args.dir == DEFAULT_DIR else args.dir
    return args.dir if is_fake(args.dir) else None


def cmd_up(args: argparse.Namespace) -> int:
    if args.power_method != "ipmi" and args.mode == "fake":  # QEMU mode checks its own (qemu.configdir)
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"--power-method {args.power_method}: fake mode has no Redfish service nor PDU (ipmi only)")
    if args.mode == "fake":  # in-process SSH nodes on loopback: no root needed
        from kadeploy_testbed.fake import cli as fake_cli
        args.dir = _fake_dir(args)
        return fake_cli.up(args)
    if args.mode == "qemu":
        from kadeploy_testbed.qemu import cli as qemu_cli
        from kadeploy_testbed.qemu.configdir import check_power_method
        check_power_method(args.power_method)  # refused before anything else, root or not
        require_root()
        args.dir = _qemu_dir(args)
        return qemu_cli.cmd_up(args)
    require_root()
    directory: Path = args.dir
    hostsetup.refuse_existing(directory)
    layout = build_layout(args.nodes, args.clusters)
    if args.deploy_rootfs:
        deploy_rootfs = args.deploy_rootfs.resolve()
        if not (deploy_rootfs / "usr" / "sbin" / "sshd").exists():
            raise KadeployError(ErrorCode.INVALID_FILE, f"--deploy-rootfs {deploy_rootfs}: no usr/sbin/sshd there")
    else:
        from kadeploy_testbed import images
        deploy_rootfs = images.ensure_deploy_rootfs()
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    state = TestbedState(directory=str(directory), nodes=args.nodes, clusters=args.clusters,
                         disk_size=args.disk_size, firmware_delay=args.firmware_delay,
                         boot_failure_rate=args.boot_failure_rate, seed=args.seed, deploy_rootfs=str(deploy_rootfs))
    state.save()  # first: `down` works from here on, whatever happens next
    try:
        paths = write_config(directory, layout, state.bmc_user, state.bmc_password, power_method=args.power_method)
        write_tftpboot(directory)
        hostsetup.prepare_node_dirs(directory, layout, Path(__file__).with_name("wrapper.sh"))
        hostsetup.create_network(layout)
        for node in layout.nodes:
            hostsetup.attach_disk(state, str(node.index), disk_path(directory, node))
            state.save()
        hostsetup.write_hosts_block(layout)
        state.tftpd_pid = hostsetup.start_tftpd(directory)
        state.save()
        state.daemon_pid = start_daemon(directory)
    except BaseException:
        hostsetup.teardown(directory, load_state(directory))
        raise
    print(f"testbed up: {len(layout.nodes)} nodes in {len(layout.clusters)} cluster(s) "
          f"in {time.monotonic() - started:.1f}s (all powered off)")
    print(f"  configuration: {paths.etc}")
    print(f"  node file:     {paths.nodes_file}")
    print(f"  deploy key:    {paths.private_key}")
    print(f"  PXE repository:{paths.tftpboot} (tftp://{SERVER_IP}, http://{SERVER_IP}:8069)")
    print(f"  BMCs:          ipmitool -I lanplus -H node-<k>-bmc.<cluster>.testbed -U {state.bmc_user} "
          f"-P {state.bmc_password} chassis power on|off|cycle|reset|status")
    print(f"  Redfish:       https://{SERVER_IP}:{REDFISH_PORT}/redfish/v1/Systems/node-<k> "
          f"(user {state.bmc_user}, CA {redfish_tls_paths(directory)[0]}); clusters powered by {args.power_method}")
    print(f"  PDU:           SNMP v2c {SERVER_IP}:{PDU_PORT}, {NODES_PER_OUTLET} nodes per outlet "
          f"(APC sPDUOutletCtl; communities public, private)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    fake_dir = _fake_dir(args)
    if fake_dir is not None:
        from kadeploy_testbed.fake import cli as fake_cli
        args.dir = fake_dir
        return fake_cli.down(args)
    require_root()
    qemu_dir = _qemu_dir(args)
    if qemu_dir is not None:
        from kadeploy_testbed.qemu import cli as qemu_cli
        return qemu_cli.cmd_down(qemu_dir)
    directory: Path = args.dir
    try:
        state: TestbedState | None = load_state(directory)
    except KadeployError:
        state = None
    started = time.monotonic()
    if state is not None and control_socket(directory).exists():
        try:  # a clean power-off of every node first; the scans below catch the rest
            control(directory, {"op": "stop"}, timeout=10)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and control_socket(directory).exists():
                time.sleep(0.1)
        except KadeployError:
            pass
    removed = hostsetup.teardown(directory, state)
    print(f"testbed down in {time.monotonic() - started:.1f}s: removed {len(removed)} resource(s)"
          + (f" ({', '.join(removed[:8])}{'...' if len(removed) > 8 else ''})" if removed else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    qemu_dir = _qemu_dir(args)
    if qemu_dir is not None:
        from kadeploy_testbed.qemu import cli as qemu_cli
        return qemu_cli.cmd_status(qemu_dir)
    answer = control(args.dir, {"op": "status"})
    vlans = answer.get("vlans", {})
    faults = answer.get("faults", {})
    if args.json:
        for entry in answer["nodes"]:
            index = entry["node"].split(".")[0].split("-")[1]
            entry["vlan"] = vlans.get(index)
            entry["faults"] = faults.get(index, {})
        print(json.dumps(answer["nodes"], indent=2))
        return 0
    for entry in answer["nodes"]:
        index = entry["node"].split(".")[0].split("-")[1]
        extra = []
        if index in vlans:
            extra.append(f"vlan {vlans[index]}")
        if index in faults:
            extra.append("faults " + ",".join(f"{k}={v}" for k, v in faults[index].items()))
        detail = f" ({entry['detail']})" if entry["detail"] else ""
        boots = f", boot #{entry['boot_count']}" if "boot_count" in entry else ""
        print(f"{entry['node']:<24} {entry['power']:<4} {entry['state']}{detail} since {entry['since']}s{boots}"
              + (f"  [{'; '.join(extra)}]" if extra else ""))
    return 0


def cmd_power(args: argparse.Namespace) -> int:
    qemu_dir = _qemu_dir(args)
    if qemu_dir is not None:
        from kadeploy_testbed.qemu import cli as qemu_cli
        return qemu_cli.cmd_power(qemu_dir, args.action, args.nodes)
    for node in args.nodes:
        control(args.dir, {"op": "power", "node": node, "action": args.action})
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    control(args.dir, {"op": "fault", "node": args.node, "kind": args.kind, "value": args.value})
    return 0


def cmd_vlan(args: argparse.Namespace) -> int:
    nodes = list(args.nodes) + list(args.machine or [])
    if not nodes:
        raise KadeployError(ErrorCode.INVALID_NODELIST, "vlan: no node given (positional or -m HOST)")
    control(args.dir, {"op": "vlan", "vlan": args.vlan, "nodes": nodes})
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    """Attach to a node's serial console (read-only log of what it prints), Ctrl-C to leave."""
    state = load_state(args.dir)
    node = state.layout().find(args.node)
    path = node_run_dir(args.dir, node) / "console.log"
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            elif args.no_follow:
                return 0
            else:
                time.sleep(0.2)


def cmd_image(args: argparse.Namespace) -> int:
    if not args.rest or args.rest[0] != "build":
        raise KadeployError(ErrorCode.INVALID_OPTION, "usage: kadeploy-testbed image build [--cache DIR] [--only deploy|user]")
    from kadeploy_testbed import images
    return images.main_build(args.rest[1:])


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kadeploy-testbed", description="netns virtual cluster for Kadeploy")
    top.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"testbed directory (default {DEFAULT_DIR})")
    subs = top.add_subparsers(dest="command", required=True)

    def sub(name: str, help: str) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=help)
        p.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    up = sub("up", "create the testbed")
    up.add_argument("--nodes", type=int, required=True)
    up.add_argument("--mode", choices=("netns", "qemu", "fake"), default="netns",
                    help="netns (default); qemu: real VMs, firmware and kernels (dir /var/lib/kadeploy-testbed-qemu); "
                         "fake: thousands of in-process SSH nodes on loopback (dir /var/lib/kadeploy-testbed-fake)")
    up.add_argument("--pxe-method", default="PXElinux", help="qemu mode: PXElinux, IPXE or GrubPXE")
    up.add_argument("--accel", default="auto", help="qemu mode: kvm, tcg or auto")
    up.add_argument("--qemu-disk-size", default="6G", help="qemu mode: size of each VM's sparse disk")
    up.add_argument("--clusters", type=int, default=1)
    up.add_argument("--disk-size", default="4G")
    up.add_argument("--firmware-delay", type=float, default=2.0)
    up.add_argument("--boot-failure-rate", type=float, default=0.0)
    up.add_argument("--seed", type=int, default=None)
    up.add_argument("--power-method", choices=POWER_METHODS, default="ipmi",
                    help="how the cluster files power the nodes: ipmi (ipmitool), redfish "
                         "(the redfish driver against a sushy-tools Redfish service: the daemon's in netns mode, "
                         "one in front of the VMs' ipmi_sim BMCs in qemu mode; very_hard stays IPMI) "
                         "or pdu (netns mode only: IPMI, and the PDU's outlets by snmpset as grouped very_hard "
                         "commands); fake mode: ipmi only")
    up.add_argument("--deploy-rootfs", type=Path, default=None,
                    help="use this deployment rootfs instead of building one (images.ensure_deploy_rootfs)")
    from kadeploy_testbed.fake import cli as fake_cli

    fake_cli.add_up_options(up)
    up.set_defaults(func=cmd_up)
    down = sub("down", "remove everything the testbed made")
    down.add_argument("--mode", choices=("netns", "qemu", "fake"), default="netns")
    down.set_defaults(func=cmd_down)
    status = sub("status", "power state and what each node booted")
    status.add_argument("--mode", choices=("netns", "qemu"), default="netns")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    power = sub("power", "power action on nodes (what the BMC does)")
    power.add_argument("action", choices=("on", "off", "cycle", "reset"))
    power.add_argument("nodes", nargs="+")
    power.add_argument("--mode", choices=("netns", "qemu"), default="netns")
    power.set_defaults(func=cmd_power)
    fault = sub("fault", "inject or clear a fault on a node (value off clears)")
    fault.add_argument("node")
    fault.add_argument("kind", choices=FAULT_KINDS)
    fault.add_argument("value")
    fault.set_defaults(func=cmd_fault)
    vlan = sub("vlan", "move nodes into a VLAN (DEFAULT: back); usable as network/vlan/set_cmd")
    vlan.add_argument("--vlan", "-i", required=True)
    vlan.add_argument("-m", dest="machine", action="append", help="node (repeatable, as kavlan's NODES)")
    vlan.add_argument("-s", action="store_true", help=argparse.SUPPRESS)  # kavlan compatibility, ignored
    vlan.add_argument("-u", dest="user", help=argparse.SUPPRESS)
    vlan.add_argument("nodes", nargs="*")
    vlan.set_defaults(func=cmd_vlan)
    console = sub("console", "attach to a node's serial console")
    console.add_argument("node")
    console.add_argument("--no-follow", action="store_true")
    console.set_defaults(func=cmd_console)
    image = sub("image", "build the testbed images (image build [--cache DIR] [--only deploy|user])")
    image.add_argument("rest", nargs=argparse.REMAINDER)
    image.set_defaults(func=cmd_image)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.dir = args.dir.resolve()
    try:
        return int(args.func(args))
    except KadeployError as exc:
        print(f"kadeploy-testbed {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

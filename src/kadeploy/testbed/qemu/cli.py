"""testbed/qemu room: `kadeploy-testbed up --mode qemu`, and down/status/power of a QEMU testbed.

`kadeploy.testbed.cli` dispatches here; these functions take its parsed
arguments. User errors are KadeployError (printed in one line by the CLI).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.testbed.configdir import DEPLOY_INITRD, DEPLOY_KERNEL
from kadeploy.testbed.qemu import host
from kadeploy.testbed.qemu.configdir import PXE_METHODS, write_config
from kadeploy.testbed.qemu.deployimage import (
    ensure_deploy_kernel,
    install_deploy_kernel,
)
from kadeploy.testbed.qemu.layout import (
    DEFAULT_DIR,
    HTTP_PORT,
    SERVER_IP,
    build_layout,
    qmp_socket,
    run_dir,
)
from kadeploy.testbed.qemu.state import QemuState, load_state
from kadeploy.testbed.qemu.vm import QemuPower, qemu_command, wait_for_socket

QEMU_START_TIMEOUT = 30.0
BMCD_START_TIMEOUT = 30.0


def resolve_dir(directory: Path, netns_default: Path) -> Path:
    """The netns default --dir means "not given": QEMU mode then uses its own directory."""
    return DEFAULT_DIR if directory == netns_default.resolve() else directory


def _start_vm(state: QemuState, node_index: int) -> int:
    node = state.layout().nodes[node_index - 1]
    log = run_dir(state.path, node) / "qemu.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen(qemu_command(state.path, node, state.accel), stdin=subprocess.DEVNULL,
                                stdout=handle, stderr=handle, start_new_session=True)
    state.pids[node.short_name] = proc.pid
    state.save()
    try:
        wait_for_socket(qmp_socket(state.path, node), QEMU_START_TIMEOUT)
    except KadeployError:
        raise KadeployError(ErrorCode.EXECUTE_ERROR, f"QEMU of {node.hostname} did not start: "
                            f"{log.read_text(errors='replace')[-800:]}") from None
    return proc.pid


def _start_bmcd(state: QemuState) -> int:
    log = state.path / "bmcd.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "kadeploy.testbed.qemu.bmcd", "--dir", str(state.path) + "/"],
                                stdin=subprocess.DEVNULL, stdout=handle, stderr=handle, start_new_session=True)
    state.pids["bmcd"] = proc.pid
    state.save()
    deadline = time.monotonic() + BMCD_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"BMC daemon exited: {log.read_text(errors='replace')[-800:]}")
        if "listening" in log.read_text(errors="replace"):
            return proc.pid
        time.sleep(0.2)
    raise KadeployError(ErrorCode.EXECUTE_ERROR, f"BMC daemon not ready after {BMCD_START_TIMEOUT:.0f}s (see {log})")


def cmd_up(args: argparse.Namespace) -> int:
    """Build (or reuse) the deploy kernel, then bridge, dnsmasq, HTTP, VMs (powered off) and BMCs."""
    directory: Path = args.dir
    method = getattr(args, "pxe_method", "PXElinux")
    if method not in PXE_METHODS:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"--pxe-method {method}: expected one of {', '.join(PXE_METHODS)}")
    layout = build_layout(args.nodes)
    host.require_tools()
    host.refuse_existing(directory)
    started = time.monotonic()
    kernel = ensure_deploy_kernel()
    state = QemuState(directory=str(directory), nodes=args.nodes, method=method,
                      disk_size=getattr(args, "qemu_disk_size", "6G"), accel=getattr(args, "accel", "auto"))
    state.save()  # first: `down` works from here on
    try:
        paths = write_config(directory, layout, state.bmc_user, state.bmc_password, method)
        tftpboot = host.write_tftpboot(directory)
        install_deploy_kernel(kernel, tftpboot / DEPLOY_KERNEL, tftpboot / DEPLOY_INITRD,
                              Path(str(paths.private_key) + ".pub").read_text())
        host.create_disks(directory, layout, state.disk_size)
        (directory / "run").mkdir(exist_ok=True)
        host.create_network(layout)
        host.write_hosts_block(layout)
        state.pids["dnsmasq"] = host.start_dnsmasq(directory, layout, method)
        state.pids["http"] = host.start_http(directory)
        state.save()
        for node in layout.nodes:
            _start_vm(state, node.index)
        _start_bmcd(state)
    except BaseException:
        host.teardown(directory, list(state.pids.values()))
        raise
    print(f"QEMU testbed up: {len(layout.nodes)} VM(s) in {time.monotonic() - started:.1f}s "
          f"(powered off; PXE method {method})")
    print(f"  configuration: {paths.etc}")
    print(f"  node file:     {paths.nodes_file}")
    print(f"  deploy key:    {paths.private_key}")
    print(f"  PXE repository:{tftpboot} (tftp://{SERVER_IP}, http://{SERVER_IP}:{HTTP_PORT})")
    print(f"  BMCs:          ipmitool -I lanplus -H node-<k>-bmc.qemu.testbed -U {state.bmc_user} "
          f"-P {state.bmc_password} chassis power on|off|cycle|reset|status")
    print(f"  consoles:      socat -,raw,echo=0 UNIX-CONNECT:{directory}/run/node-<k>/console.sock")
    return 0


def cmd_down(directory: Path) -> int:
    try:
        pids = list(load_state(directory).pids.values())
    except KadeployError:
        pids = []
    started = time.monotonic()
    removed = host.teardown(directory, pids)
    print(f"QEMU testbed down in {time.monotonic() - started:.1f}s: removed {len(removed)} resource(s)"
          + (f" ({', '.join(removed)})" if removed else ""))
    return 0


def cmd_status(directory: Path) -> int:
    state = load_state(directory)
    for node in state.layout().nodes:
        try:
            status = QemuPower(qmp_socket(directory, node)).status()
        except KadeployError as exc:
            status = f"unreachable ({exc})"
        print(f"{node.hostname:<24} {node.ip:<12} {status}")
    return 0


def cmd_power(directory: Path, action: str, names: list[str]) -> int:
    state = load_state(directory)
    layout = state.layout()
    for name in names:
        node = layout.find(name)
        power = QemuPower(qmp_socket(directory, node))
        {"on": power.power_on, "off": power.power_off, "cycle": power.power_cycle,
         "reset": power.power_reset}[action]()
    return 0

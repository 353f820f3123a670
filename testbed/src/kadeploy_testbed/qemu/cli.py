"""testbed/qemu room: `kadeploy-testbed up --mode qemu`, and down/status/power of a QEMU testbed.

`kadeploy_testbed.cli` dispatches here; these functions take its parsed
arguments. User errors are KadeployError (printed in one line by the CLI).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.configdir import DEPLOY_INITRD, DEPLOY_KERNEL, redfish_tls_paths
from kadeploy_testbed.layout import REDFISH_PORT, NodeSpec
from kadeploy_testbed.qemu import bmcsim, host, redfishbmc
from kadeploy_testbed.qemu.configdir import PXE_METHODS, check_power_method, write_config
from kadeploy_testbed.qemu.deployimage import (
    ensure_deploy_kernel,
    install_deploy_kernel,
)
from kadeploy_testbed.qemu.layout import (
    DEFAULT_DIR,
    HTTP_PORT,
    SERVER_IP,
    build_layout,
)
from kadeploy_testbed.qemu.state import QemuState, load_state
from kadeploy_testbed.qemu.vm import qemu_command, vm_status


def resolve_dir(directory: Path, netns_default: Path) -> Path:
    """The netns default --dir means "not given": QEMU mode then uses its own directory."""
    return DEFAULT_DIR if directory == netns_default.resolve() else directory


def _start_bmc(state: QemuState, node: NodeSpec) -> int:
    """Write the node's BMC files (its VM start script included) and start its ipmi_sim, VM off.

    The BMC's SOL connects to the VM's serial port (`vm.qemu_command` makes it a TCP server on SOL_PORT)."""
    bmcsim.write_bmc_files(state.path, node, qemu_command(state.path, node, state.accel), state.bmc_user,
                           state.bmc_password, sol_port=bmcsim.SOL_PORT)
    pid = bmcsim.start_bmc(state.path, node, state.bmc_user, state.bmc_password)
    state.pids[f"{node.short_name}-bmc"] = pid
    state.save()
    return pid


def cmd_up(args: argparse.Namespace) -> int:
    """Build (or reuse) the deploy kernel, then bridge, dnsmasq, HTTP, one BMC per VM (VMs off)
    and, with `--power-method redfish`, the Redfish service in front of the BMCs."""
    directory: Path = args.dir
    method = getattr(args, "pxe_method", "PXElinux")
    if method not in PXE_METHODS:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"--pxe-method {method}: expected one of {', '.join(PXE_METHODS)}")
    power_method = check_power_method(getattr(args, "power_method", "ipmi"))
    layout = build_layout(args.nodes)
    host.require_tools()
    host.refuse_existing(directory)
    started = time.monotonic()
    kernel = ensure_deploy_kernel()
    state = QemuState(directory=str(directory), nodes=args.nodes, method=method,
                      disk_size=getattr(args, "qemu_disk_size", "6G"), accel=getattr(args, "accel", "auto"),
                      power_method=power_method)
    state.save()  # first: `down` works from here on
    try:
        paths = write_config(directory, layout, state.bmc_user, state.bmc_password, method,
                             power_method=power_method)
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
            _start_bmc(state, node)
        if power_method == "redfish":
            state.pids["redfish"] = redfishbmc.spawn(state)
            state.save()
    except BaseException:
        host.teardown(directory, list(state.pids.values()))
        raise
    print(f"QEMU testbed up: {len(layout.nodes)} VM(s) in {time.monotonic() - started:.1f}s "
          f"(powered off; PXE method {method}; powered by {power_method})")
    print(f"  configuration: {paths.etc}")
    print(f"  node file:     {paths.nodes_file}")
    print(f"  deploy key:    {paths.private_key}")
    print(f"  PXE repository:{tftpboot} (tftp://{SERVER_IP}, http://{SERVER_IP}:{HTTP_PORT})")
    print(f"  BMCs:          ipmitool -I lanplus -C 3 -H node-<k>-bmc.qemu.testbed -U {state.bmc_user} "
          f"-P {state.bmc_password} chassis power on|off|cycle|reset|status (OpenIPMI ipmi_sim)")
    if power_method == "redfish":
        print(f"  Redfish:       https://{SERVER_IP}:{REDFISH_PORT}/redfish/v1/Systems/node-<k> (sushy-tools over "
              f"the BMCs; user {state.bmc_user}, CA {redfish_tls_paths(directory)[0]})")
    print(f"  consoles:      ipmitool -I lanplus -C 3 -H node-<k>-bmc.qemu.testbed -U {state.bmc_user} "
          f"-P {state.bmc_password} sol activate (Serial-over-LAN, ~. leaves; kaconsole3's "
          f"console command); logged in {directory}/run/node-<k>/console.log")
    return 0


def cmd_down(directory: Path) -> int:
    try:
        recorded = load_state(directory).pids
    except KadeployError:
        recorded = {}
    # the Redfish service first, then the BMCs: nothing may power a VM on during the teardown
    pids = sorted(recorded.values(), key=lambda pid: pid != recorded.get("redfish"))
    started = time.monotonic()
    removed = host.teardown(directory, pids)
    print(f"QEMU testbed down in {time.monotonic() - started:.1f}s: removed {len(removed)} resource(s)"
          + (f" ({', '.join(removed)})" if removed else ""))
    return 0


def cmd_status(directory: Path) -> int:
    """Each node's power as its BMC reports it, and its VM's run state."""
    state = load_state(directory)
    for node in state.layout().nodes:
        try:
            bmc = bmcsim.power_status(node.bmc_ip, state.bmc_user, state.bmc_password)
        except KadeployError as exc:
            bmc = f"unreachable ({exc})"
        print(f"{node.hostname:<24} {node.ip:<12} power {bmc:<4} vm {vm_status(directory, node)}")
    return 0


def cmd_power(directory: Path, action: str, names: list[str]) -> int:
    """`chassis power <action>` through each node's BMC, as the cluster's commands do."""
    state = load_state(directory)
    layout = state.layout()
    for name in names:
        node = layout.find(name)
        bmcsim.power(node.bmc_ip, state.bmc_user, state.bmc_password, action)
    return 0

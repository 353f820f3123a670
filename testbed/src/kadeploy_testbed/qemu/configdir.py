"""testbed/qemu room: the Kadeploy3 configuration directory for the QEMU nodes.

Why a variant of `kadeploy_testbed.configdir`: the firmware here is real, so
the cluster file must say what real sites say — the deploy kernel boots from
`kernels/`, the bootloader script really runs grub-install on the deploy
partition (Kadeploy3's install_grub2), the console is the VM's serial port
through its BMC's Serial-over-LAN (`ipmitool ... sol activate`) and the reboot
timeouts fit emulated machines. The netns writer's key generation,
partitioning script, clusters.conf and Redfish certificate paths are reused as
they are.

Power (`POWER_METHODS`): `ipmi` is ipmitool against each VM's ipmi_sim;
`redfish` is the server's `redfish` driver against the testbed's sushy-tools
service (`redfishbmc`, on SERVER_IP:REDFISH_PORT, which acts through the same
ipmi_sim), with IPMI's off-pause-on kept as very_hard. Redfish's hard reboot is
ForceRestart, a reset in place, which ipmi_sim refuses on a VM that is off: that
node escalates to very_hard (the `ipmi` method's hard reboot is a cycle instead).
The netns mode's `pdu` is refused: no PDU agent serves the QEMU nodes.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from kadeploy_testbed.configdir import (
    DEPLOY_INITRD,
    DEPLOY_KERNEL,
    KADEPLOY_VERSION,
    PARTITIONING_SCRIPT,
    PARTITIONS,
    SSH_OPTIONS,
    ConfigPaths,
    clusters_conf,
    generate_deploy_key,
    redfish_tls_paths,
)
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.images import DEFAULT_CACHE
from kadeploy_testbed.layout import REDFISH_PORT, Layout
from kadeploy_testbed.qemu.layout import CLUSTER, HTTP_PORT, SERVER_IP

PXE_METHODS = ("PXElinux", "IPXE", "GrubPXE")
#: how the `qemu` cluster file powers the VMs (module docstring); the netns mode's `pdu` is not here
POWER_METHODS = ("ipmi", "redfish")
SERIAL = "console=ttyS0,115200n8"
DEPLOY_KERNEL_PARAMS = f"{SERIAL} rw quiet"
USER_KERNEL_PARAMS = f"{SERIAL} rw"
# profiles directory per method: PXELINUX's convention, a directory served over HTTP
# for iPXE scripts, and GRUB's (its grub.cfg includes the node's file by IP).
PROFILE_LAYOUT = {
    "PXElinux": ("pxelinux.cfg", "ip_hex", "tftp"),
    "IPXE": ("ipxe.cfg", "ip", "http"),
    "GrubPXE": ("grub.cfg", "ip", "tftp"),
}

# Runs on the node, in the deployment environment (Kadeploy3's install_grub2,
# adapted): GRUB goes into the deploy partition's boot sector so that PXELINUX
# `chain.c32 hd0 3` boots it. The deployed image gets a DHCP network config, as a
# site's post-install would give it, since debian12-min configures no NIC itself.
BOOTLOADER_SCRIPT = r"""#!/bin/sh
# kadeploy-testbed (qemu): install GRUB 2 on the deploy partition
set -e
D="${KADEPLOY_ENV_EXTRACTION_DIR:-/mnt/dest}"
PART="${KADEPLOY_DEPLOY_PART:?}"
NUM="${KADEPLOY_DEPLOY_PART_NUM:-3}"
mkdir -p "$D/boot/grub"
cat > "$D/boot/grub/grub.cfg" <<EOF
set default=0
set timeout=0
serial --unit=0 --speed=115200
terminal_output serial console
insmod part_msdos
insmod ext2
set root=(hd0,msdos$NUM)
menuentry "${KADEPLOY_ENV:-kadeploy}" {
  linux ${KADEPLOY_ENV_KERNEL} ${KADEPLOY_ENV_KERNEL_PARAMS} root=$PART
  initrd ${KADEPLOY_ENV_INITRD}
}
EOF
grub-install --target=i386-pc --boot-directory="$D/boot" --force "$PART" >/tmp/grub-install.log 2>&1 \
  || { cat /tmp/grub-install.log >&2; exit 1; }
if [ -d "$D/etc/systemd" ] && [ ! -e "$D/etc/systemd/network/80-kadeploy-dhcp.network" ]; then
  mkdir -p "$D/etc/systemd/network" "$D/etc/systemd/system/multi-user.target.wants" \
           "$D/etc/systemd/system/sockets.target.wants"
  printf '[Match]\nName=e*\n\n[Network]\nDHCP=ipv4\n' > "$D/etc/systemd/network/80-kadeploy-dhcp.network"
  ln -sf /lib/systemd/system/systemd-networkd.service \
    "$D/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
  ln -sf /lib/systemd/system/systemd-networkd.socket \
    "$D/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
fi
sync
"""


# The netns partitioning script, then the start of the deploy partition wiped: mkfs
# keeps a partition's boot sector, and a GRUB left there by an earlier deployment
# must not boot a system whose bootloader was not installed this time.
PARTITIONING = PARTITIONING_SCRIPT + """dd if=/dev/zero of="$BD${KADEPLOY_DEPLOY_PART_NUM:-3}" bs=512 count=2048 conv=fsync 2>/dev/null
"""


def _bmc_options(bmc_user: str, bmc_password: str) -> str:
    # -C 3: ipmi_sim answers no cipher-suite query, ipmitool would warn on every call
    return (f"-I lanplus -C 3 -H HOSTNAME_SHORT-bmc.{CLUSTER}.testbed "
            f"-U {shlex.quote(bmc_user)} -P {shlex.quote(bmc_password)}")


def _ipmitool(bmc_user: str, bmc_password: str, action: str) -> str:
    # generous retries: the BMCs share two cores with emulated VMs and may answer late
    return f"ipmitool {_bmc_options(bmc_user, bmc_password)} -N 2 -R 5 chassis power {action}"


def sol_console(bmc_user: str, bmc_password: str) -> str:
    """The console command: the node's BMC's Serial-over-LAN (`~.` leaves the session).

    Why deactivate first: the server ends a console by SIGKILL of the command's group, so
    ipmitool never deactivates its payload, and ipmi_sim (as real BMCs) refuses the next
    `sol activate` with "SOL payload already active on another session" until its session
    expires. Sites' console commands do the same: the console belongs to the last who asked."""
    options = _bmc_options(bmc_user, bmc_password)
    return f"ipmitool {options} sol deactivate >/dev/null 2>&1; exec ipmitool {options} sol activate"


def redfish_url() -> str:
    """Each VM's system on the testbed's Redfish service (`redfishbmc`)."""
    return f"https://{SERVER_IP}:{REDFISH_PORT}/redfish/v1/Systems/HOSTNAME_SHORT"


def check_power_method(power_method: str) -> str:
    """`power_method` if this mode implements it, else a KadeployError naming the ones it does."""
    if power_method not in POWER_METHODS:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"--power-method {power_method}: QEMU mode powers its VMs "
                            f"by {' or '.join(POWER_METHODS)} (no PDU agent serves them)")
    return power_method


def pxe_section(method: str, directory: Path) -> dict[str, object]:
    profiles_dir, filename, export = PROFILE_LAYOUT[method]
    server = SERVER_IP if export == "tftp" else f"{SERVER_IP}:{HTTP_PORT}"
    return {
        "method": method,
        "repository": str(directory / "tftpboot"),
        "export": {"kind": export, "server": server},
        "profiles": {"directory": profiles_dir, "filename": filename},
        "userfiles": {"directory": "userfiles", "max_size": 200},
    }


def server_conf(directory: Path, private_key: Path, method: str) -> dict[str, object]:
    """server.conf (reference 3.1): the server listens on the QEMU bridge address."""
    return {
        "database": {"kind": "sqlite", "name": str(directory / "kadeploy.db")},
        "rights": {"kind": "db", "almighty_users": "root"},
        "authentication": {"acl": {"whitelist": ["127.0.0.1", SERVER_IP]}},
        # fetches of user URLs only from the host on the QEMU bridge (clients' file servers are tied to the request)
        "security": {"secure_server": False, "fetch": {"allow": [f"{SERVER_IP}/32"]}},
        "ssh_private_key": str(private_key),
        "cache": {"directory": str(directory / "cache"), "size": 8000},
        "network": {
            "server_hostname": SERVER_IP,
            "ports": {"kadeploy_server": 25300, "ssh": 22, "test_deploy_env": 25300},
        },
        "windows": {"reboot": {"size": 50, "sleep_time": 1}, "check": {"size": 50}},
        "environments": {"server_dirs": [str(DEFAULT_CACHE)]},
        "pxe": {"dhcp": pxe_section(method, directory)},
    }


def _redfish_op(name: str, bmc_user: str, bmc_password: str, ca_file: Path) -> dict[str, object]:
    # the driver's action follows the kind: reboot ForceRestart, power_on On, power_off ForceOff
    return {"name": name, "driver": "redfish", "address": redfish_url(), "user": bmc_user, "password": bmc_password,
            "ca_file": str(ca_file)}


def _remoteops(directory: Path, ssh: str, bmc_user: str, bmc_password: str, power_method: str) -> dict[str, object]:
    very_hard = {"name": "very_hard", "cmd": (f"{_ipmitool(bmc_user, bmc_password, 'off')}; sleep 5; "
                                              f"{_ipmitool(bmc_user, bmc_password, 'on')}")}
    soft_reboot = {"name": "soft", "cmd": f"{ssh} /sbin/reboot"}
    soft_off = {"name": "soft", "cmd": f"{ssh} 'nohup /sbin/poweroff >/dev/null 2>&1 &'"}
    if check_power_method(power_method) == "redfish":
        ca_file = redfish_tls_paths(directory)[0]
        return {
            "reboot": [soft_reboot, _redfish_op("hard", bmc_user, bmc_password, ca_file), very_hard],
            "power_on": [_redfish_op("hard", bmc_user, bmc_password, ca_file)],
            "power_off": [soft_off, _redfish_op("hard", bmc_user, bmc_password, ca_file)],
            "power_status": [_redfish_op("soft", bmc_user, bmc_password, ca_file)],
        }
    return {
        "reboot": [
            soft_reboot,
            # a BMC resets a running machine only (ipmi_sim refuses `reset` when off, as
            # many real BMCs do), and the escalation judges exit statuses, not reboots: hard
            # is a power cycle, which also starts a node that is off (reference 6.1's
            # `lanpower -c cycle`); very_hard a "safety cycle", off, a pause, on
            {"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, "cycle")},
            very_hard,
        ],
        "power_on": [{"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, "on")}],
        "power_off": [soft_off, {"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, "off")}],
        "power_status": [{"name": "soft", "cmd": _ipmitool(bmc_user, bmc_password, "status")}],
    }


def cluster_conf(directory: Path, private_key: Path, bmc_user: str, bmc_password: str,
                 reboot_timeout: str, power_method: str = "ipmi") -> dict[str, object]:
    """The `qemu` cluster file (reference 3.3)."""
    scripts = directory / "etc" / "scripts"
    # keepalives: a node that reboots under the ssh session must not leave it hanging
    ssh = (f"ssh -i {shlex.quote(str(private_key))} {SSH_OPTIONS} -o ServerAliveInterval=3 "
           f"-o ServerAliveCountMax=3 root@HOSTNAME_FQDN")
    remoteops = _remoteops(directory, ssh, bmc_user, bmc_password, power_method)
    remoteops["console"] = [{"name": "soft", "cmd": sol_console(bmc_user, bmc_password)}]
    return {
        "partitioning": {"block_device": "/dev/sda", "partitions": dict(PARTITIONS),
                         "script": str(scripts / "partitioning")},
        "boot": {
            "install_bootloader": str(scripts / "install_bootloader"),
            "sleep_time_before_ping": 5,
            "kernels": {
                "user": {"params": USER_KERNEL_PARAMS},
                "deploy": {"vmlinuz": DEPLOY_KERNEL, "initrd": DEPLOY_INITRD, "params": DEPLOY_KERNEL_PARAMS,
                           "supported_fs": "ext2, ext3, ext4, vfat"},
            },
        },
        "timeouts": {"reboot": reboot_timeout, "kexec": 120},
        "remoteops": remoteops,
        "automata": {"macrosteps": {
            "SetDeploymentEnv": [{"type": "Untrusted", "timeout": 1200, "retries": 1}],
            "BroadcastEnv": [{"type": "Kascade", "timeout": 1200, "retries": 1}],
            "BootNewEnv": [{"type": "Classical", "timeout": 1200, "retries": 0},
                           {"type": "HardReboot", "timeout": 1200, "retries": 0}],
        }},
    }


def _write_yaml(path: Path, data: object) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def write_config(directory: Path, layout: Layout, bmc_user: str, bmc_password: str, method: str = "PXElinux",
                 reboot_timeout: str = "600 + 60 * n", power_method: str = "ipmi") -> ConfigPaths:
    """Write `<dir>/etc` and the node files for the QEMU cluster; returns their paths.

    With `power_method` redfish, the cluster file names the Redfish service's
    certificate (`redfish_tls_paths`) as its CA file: `up` makes it."""
    etc = directory / "etc"
    scripts = etc / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    private_key = generate_deploy_key(etc / "keys")
    (scripts / "partitioning").write_text(PARTITIONING)
    (scripts / "install_bootloader").write_text(BOOTLOADER_SCRIPT)
    for script in scripts.iterdir():
        script.chmod(0o755)
    _write_yaml(etc / "server.conf", server_conf(directory, private_key, method))
    _write_yaml(etc / "clusters.conf", clusters_conf(layout))
    _write_yaml(etc / f"{CLUSTER}.conf", cluster_conf(directory, private_key, bmc_user, bmc_password,
                                                      reboot_timeout, power_method))
    (etc / "command.conf").write_text("{}\n")
    _write_yaml(etc / "client.conf", {
        "default": "qemu",
        "servers": [{"name": "qemu", "hostname": SERVER_IP, "port": 25300, "secure": False}],
    })
    (etc / "version").write_text(KADEPLOY_VERSION + "\n")
    nodes_file = directory / "nodes"
    nodes_file.write_text("".join(node.hostname + "\n" for node in layout.nodes))
    (directory / f"nodes-{CLUSTER}").write_text(nodes_file.read_text())
    return ConfigPaths(etc=etc, nodes_file=nodes_file, private_key=private_key, tftpboot=directory / "tftpboot")

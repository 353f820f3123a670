"""testbed room: writes a ready-to-use Kadeploy3 configuration directory.

Why: the server, the CLI tools and the e2e tests must run against the testbed
with exactly the files an administrator would write (reference sections
3.1-3.5), so that what passes here is what real sites configure. Output:
`<dir>/etc/` (server.conf, clusters.conf, `<cluster>.conf`, command.conf,
client.conf, version, keys/, scripts/) and the node files `<dir>/nodes`,
`<dir>/nodes-<cluster>`. Every administrator hook is set, so that the
e2e tests exercise them: the server's end-of-operation `hooks` (each run of
`scripts/end_hook` appends `<kind> <wid>` to `<dir>/hooks.log`) and KaVLAN's
`network/vlan/set_cmd` with its `hostname_suffix`. Imports `layout` only;
YAML via PyYAML.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.layout import HOSTNAME_SUFFIX, PDU_PORT, REDFISH_PORT, SERVER_IP, Layout, outlet_groups

KADEPLOY_VERSION = "3.3.11.0"
DEPLOY_KERNEL = "kernels/deploy-vmlinuz"
DEPLOY_INITRD = "kernels/deploy-initrd"
DEPLOY_KERNEL_PARAMS = "console=tty0 console=ttyS0,38400n8 rw"
PARTITIONS = {"swap": 1, "prod": 2, "deploy": 3, "tmp": 5}
SSH_OPTIONS = ("-q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               "-o PreferredAuthentications=publickey -o ConnectTimeout=2")

# Runs on the node. The percentages keep the layout valid for any --disk-size >= 2G;
# the final loop is the contract: the script ends with the partition devices present.
PARTITIONING_SCRIPT = """#!/bin/sh
# kadeploy-testbed partitioning: swap 256M, prod, deploy, extended + tmp (msdos label)
set -e
BD="${KADEPLOY_BLOCK_DEVICE:-/dev/sda}"
do_parted() { parted --script -a optimal "$BD" "$@"; }
do_parted mklabel msdos
do_parted unit MiB mkpart primary linux-swap 1 257
do_parted mkpart primary ext4 257MiB 30%
do_parted mkpart primary ext4 30% 85%
do_parted mkpart extended 85% 100%
do_parted mkpart logical ext4 85% 100%
do_parted toggle "${KADEPLOY_DEPLOY_PART_NUM:-3}" boot
partprobe "$BD" 2>/dev/null || true
for n in 1 2 3 5; do
  tries=0
  until [ -b "$BD$n" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then echo "$BD$n did not appear after partitioning" >&2; exit 1; fi
    sleep 0.1
  done
done
"""

# Runs on the node. The netns node "firmware" chainloads a partition by reading the
# grub.cfg written here (root= names the partition); grub-install is tried as on
# real hardware, and its failure (no BIOS disk in a netns) is not an error.
BOOTLOADER_SCRIPT = """#!/bin/sh
# kadeploy-testbed bootloader: GRUB configuration on the deploy partition
set -e
D="${KADEPLOY_ENV_EXTRACTION_DIR:-/mnt/dest}"
mkdir -p "$D/boot/grub"
cat > "$D/boot/grub/grub.cfg" <<EOF
set default=0
set timeout=0
menuentry "${KADEPLOY_ENV:-kadeploy}" {
  set root=(hd0,${KADEPLOY_DEPLOY_PART_NUM:-3})
  linux ${KADEPLOY_ENV_KERNEL} ${KADEPLOY_ENV_KERNEL_PARAMS} root=${KADEPLOY_DEPLOY_PART}
  initrd ${KADEPLOY_ENV_INITRD}
}
EOF
if command -v grub-install >/dev/null 2>&1; then
  grub-install --root-directory="$D" --force "${KADEPLOY_DEPLOY_PART}" >/dev/null 2>&1 || true
fi
"""

# Run by the server at the end of an operation asked with `--hook` (server.conf `hooks`).
# Kadeploy3 passes nothing but the command line with WORKFLOW_ID replaced
# (kaworkflow.rb `work_end_hook`), without stdin/stdout/stderr and for 20 s at most:
# the line written is all a hook can learn, which is what the e2e tests read.
END_HOOK_SCRIPT = """#!/bin/sh
# kadeploy-testbed end-of-operation hook: end_hook KIND WORKFLOW_ID
echo "$1 $2" >> {log}
"""

#: `hooks` keys of server.conf and the kind each one's command line names
HOOKS = {"end_of_deployment": "deployment", "end_of_reboot": "reboot", "end_of_power": "power"}


def hooks_log(directory: Path) -> Path:
    """Where the testbed's end hook appends `<kind> <wid>` lines."""
    return directory / "hooks.log"


@dataclass(frozen=True)
class ConfigPaths:
    """Where `write_config` put things, printed by `up`."""

    etc: Path
    nodes_file: Path
    private_key: Path
    tftpboot: Path


def generate_deploy_key(keys_dir: Path) -> Path:
    """ed25519 key pair for root logins on nodes; kept if it already exists."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    private = keys_dir / "id_deploy"
    if not private.exists():
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kadeploy-testbed",
                            "-f", str(private)], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"ssh-keygen for {private} failed: {exc}") from None
    return private


IMAGES_CACHE = Path("/var/cache/kadeploy-testbed")


def _ipmitool(bmc_user: str, bmc_password: str, cluster: str, action: str) -> str:
    return (f"ipmitool -I lanplus -N 1 -R 2 -H HOSTNAME_SHORT-bmc.{cluster}.testbed "
            f"-U {shlex.quote(bmc_user)} -P {shlex.quote(bmc_password)} chassis power {action}")


#: how a cluster's nodes are powered: the BMCs' IPMI (ipmitool commands), their Redfish
#: service (the `redfish` driver against the daemon's sushy-tools emulator, redfish.py), or
#: IPMI with the PDU as very_hard (grouped snmpset commands against the daemon's agent, pdu.py)
POWER_METHODS = ("ipmi", "redfish", "pdu")

# Run by the server for a grouped very_hard command: switches the PDU outlet feeding exactly
# the group with net-snmp's snmpset, as sites script their PDUs (APC PowerNet-MIB sPDUOutletCtl).
PDU_SCRIPT = """#!/bin/sh
# kadeploy-testbed PDU: pdu on|off|reboot GROUP_SHORT (the nodes one outlet feeds, n1,n2)
set -e
case "$1" in
  on) value=1 ;;
  off) value=2 ;;
  reboot) value=3 ;;
  *) echo "pdu: expected on, off or reboot, not '$1'" >&2; exit 2 ;;
esac
outlet=$(awk -v group="$2" '$2 == group {{ print $1 }}' {outlets})
if [ -z "$outlet" ]; then echo "pdu: no outlet feeds exactly '$2'" >&2; exit 1; fi
exec snmpset -v2c -c {community} -t 2 -r 1 -Oq {agent} {oid}.$outlet i "$value"
"""


def redfish_tls_paths(directory: Path) -> tuple[Path, Path]:
    """The Redfish service's self-signed certificate (the CA its clients name) and key; the daemon makes them."""
    keys = directory / "etc" / "keys"
    return keys / "redfish.crt", keys / "redfish.key"


def redfish_op(name: str, bmc_user: str, bmc_password: str, ca_file: Path) -> dict[str, object]:
    """One `remoteops` entry driving a node through the testbed's Redfish service (HTTPS, its own CA).

    The driver's action follows the kind: reboot is ForceRestart, power_on On,
    power_off ForceOff, power_status reads PowerState.
    """
    return {"name": name, "driver": "redfish",
            "address": f"https://{SERVER_IP}:{REDFISH_PORT}/redfish/v1/Systems/HOSTNAME_SHORT",
            "user": bmc_user, "password": bmc_password, "ca_file": str(ca_file)}


def pdu_paths(directory: Path, cluster: str) -> tuple[Path, Path]:
    """The PDU's outlet table (`<outlet> <n1,n2>` lines, for the script) and a cluster's group file."""
    etc = directory / "etc"
    return etc / "pdu-outlets", etc / f"pdu-groups-{cluster}"


def pdu_ops(directory: Path, cluster: str, action: str) -> dict[str, object]:
    """A cluster's grouped very_hard entry: the PDU switches every node of an outlet at once."""
    script = shlex.quote(str(directory / "etc" / "scripts" / "pdu"))
    return {"name": "very_hard", "cmd": f"{script} {action} GROUP_SHORT", "group": str(pdu_paths(directory, cluster)[1])}


def write_pdu_script(script: Path, outlets_table: Path, agent: str) -> None:
    """The administrator's PDU script (`PDU_SCRIPT`) for the agent at `agent` (HOST:PORT)."""
    from kadeploy_testbed.pdu import OUTLET_CTL_OID, WRITE_COMMUNITY

    script.write_text(PDU_SCRIPT.format(outlets=shlex.quote(str(outlets_table)), community=WRITE_COMMUNITY,
                                        agent=agent, oid=".".join(map(str, OUTLET_CTL_OID))))
    script.chmod(0o755)


def write_pdu_files(directory: Path, layout: Layout) -> None:
    """The PDU script, its outlet table and each cluster's group file, from `outlet_groups`."""
    outlets = outlet_groups(layout)
    table, _ = pdu_paths(directory, layout.clusters[0])
    table.write_text("".join(f"{outlet} {','.join(node.short_name for node in nodes)}\n"
                             for outlet, nodes in outlets.items()))
    write_pdu_script(directory / "etc" / "scripts" / "pdu", table, f"{SERVER_IP}:{PDU_PORT}")
    for cluster in layout.clusters:
        pdu_paths(directory, cluster)[1].write_text("".join(
            ",".join(node.hostname for node in nodes) + "\n"
            for nodes in outlets.values() if nodes[0].cluster == cluster))


def server_conf(directory: Path, private_key: Path) -> dict[str, object]:
    """server.conf (reference 3.1) with our sqlite extension."""
    testbed_cli = f"kadeploy-testbed vlan --dir {shlex.quote(str(directory))}"
    return {
        "database": {"kind": "sqlite", "name": str(directory / "kadeploy.db")},
        "rights": {"kind": "db", "almighty_users": "root"},
        "authentication": {"acl": {"whitelist": ["127.0.0.1", SERVER_IP]}},
        # fetches of user URLs only from the testbed's own addresses: the host on the bridge
        # (its HTTP servers) and loopback (fake mode); clients' file servers are tied to the request
        "security": {"secure_server": False, "fetch": {"allow": [f"{SERVER_IP}/32", "127.0.0.0/8"]}},
        "ssh_private_key": str(private_key),
        "cache": {"directory": str(directory / "cache"), "size": 8000},
        "network": {
            "server_hostname": SERVER_IP,
            "ports": {"kadeploy_server": 25300, "ssh": 22, "test_deploy_env": 25300},
            # node-<k>-kavlan-<ID>.<cluster>.testbed, in the testbed's /etc/hosts block
            "vlan": {"hostname_suffix": HOSTNAME_SUFFIX, "set_cmd": f"{testbed_cli} --vlan VLAN_ID NODES"},
        },
        "windows": {"reboot": {"size": 50, "sleep_time": 1}, "check": {"size": 50}},
        # the images built by `kadeploy-testbed image build` are registered as server:// files
        "environments": {"server_dirs": [str(IMAGES_CACHE)]},
        # run only for operations asked with --hook, as in Kadeploy3
        "hooks": {key: f"{shlex.quote(str(directory / 'etc' / 'scripts' / 'end_hook'))} {kind} WORKFLOW_ID"
                  for key, kind in HOOKS.items()},
        "pxe": {
            "dhcp": {
                "method": "PXElinux",
                "repository": str(directory / "tftpboot"),
                "export": {"kind": "tftp", "server": SERVER_IP},
                "profiles": {"directory": "pxelinux.cfg", "filename": "ip_hex"},
                "userfiles": {"directory": "userfiles", "max_size": 200},
            },
        },
    }


def cluster_conf(cluster: str, directory: Path, private_key: Path, bmc_user: str, bmc_password: str,
                 *, power_method: str = "ipmi") -> dict[str, object]:
    """One cluster file (reference 3.3): partitioning, boot, timeouts, remoteops (`POWER_METHODS`)."""
    scripts = directory / "etc" / "scripts"
    ssh = f"ssh -i {shlex.quote(str(private_key))} {SSH_OPTIONS} root@HOSTNAME_FQDN"
    console = f"kadeploy-testbed console --dir {shlex.quote(str(directory))} HOSTNAME_FQDN"
    if power_method == "ipmi":
        remoteops = {
            "reboot": [
                {"name": "soft", "cmd": f"{ssh} /sbin/reboot"},
                {"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "reset")},
                {"name": "very_hard", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "cycle")},
            ],
            "power_on": [{"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "on")}],
            "power_off": [
                {"name": "soft", "cmd": f"{ssh} 'nohup /sbin/poweroff >/dev/null 2>&1 &'"},
                {"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "off")},
            ],
            "power_status": [{"name": "soft", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "status")}],
        }
    elif power_method == "redfish":
        # Redfish for hard and the status, IPMI's cycle kept as very_hard: a site's mix of both
        ca_file = redfish_tls_paths(directory)[0]
        remoteops = {
            "reboot": [
                {"name": "soft", "cmd": f"{ssh} /sbin/reboot"},
                redfish_op("hard", bmc_user, bmc_password, ca_file),
                {"name": "very_hard", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "cycle")},
            ],
            "power_on": [redfish_op("hard", bmc_user, bmc_password, ca_file)],
            "power_off": [
                {"name": "soft", "cmd": f"{ssh} 'nohup /sbin/poweroff >/dev/null 2>&1 &'"},
                redfish_op("hard", bmc_user, bmc_password, ca_file),
            ],
            "power_status": [redfish_op("soft", bmc_user, bmc_password, ca_file)],
        }
    elif power_method == "pdu":
        # IPMI as in "ipmi", the PDU's outlets as very_hard: one snmpset per complete group
        remoteops = {
            "reboot": [
                {"name": "soft", "cmd": f"{ssh} /sbin/reboot"},
                {"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "reset")},
                pdu_ops(directory, cluster, "reboot"),
            ],
            "power_on": [{"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "on")},
                         pdu_ops(directory, cluster, "on")],
            "power_off": [
                {"name": "soft", "cmd": f"{ssh} 'nohup /sbin/poweroff >/dev/null 2>&1 &'"},
                {"name": "hard", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "off")},
                pdu_ops(directory, cluster, "off"),
            ],
            "power_status": [{"name": "soft", "cmd": _ipmitool(bmc_user, bmc_password, cluster, "status")}],
        }
    else:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"power method {power_method!r}: expected one of {', '.join(POWER_METHODS)}")
    remoteops["console"] = [{"name": "soft", "cmd": console}]
    return {
        "partitioning": {
            "block_device": "/dev/sda",
            "partitions": dict(PARTITIONS),
            "script": str(scripts / "partitioning"),
        },
        "boot": {
            "install_bootloader": str(scripts / "install_bootloader"),
            # > the 1 s a reboot from a running system waits (`sleep 1; reboot -f`): probing
            # earlier finds the old system still up and takes it for the new one
            "sleep_time_before_ping": 3,
            "kernels": {
                "user": {"params": "console=tty0 console=ttyS0,38400n8"},
                "deploy": {"vmlinuz": DEPLOY_KERNEL, "initrd": DEPLOY_INITRD, "params": DEPLOY_KERNEL_PARAMS,
                           "supported_fs": "ext2, ext3, ext4, vfat"},
            },
        },
        "timeouts": {"reboot": "30 + n", "kexec": 20},
        "remoteops": remoteops,
    }


def clusters_conf(layout: Layout) -> dict[str, object]:
    """clusters.conf (reference 3.2) with our optional per-node `mac`."""
    return {
        "clusters": [
            {
                "name": cluster,
                "prefix": cluster,
                "conf_file": f"{cluster}.conf",
                "nodes": [{"name": node.hostname, "address": node.ip, "mac": node.mac}
                          for node in layout.by_cluster(cluster)],
            }
            for cluster in layout.clusters
        ]
    }


def _write_yaml(path: Path, data: object) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def write_config(directory: Path, layout: Layout, bmc_user: str, bmc_password: str,
                 *, power_method: str = "ipmi") -> ConfigPaths:
    """Write the whole configuration directory and node files; returns their paths."""
    etc = directory / "etc"
    scripts = etc / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    private_key = generate_deploy_key(etc / "keys")
    (scripts / "partitioning").write_text(PARTITIONING_SCRIPT)
    (scripts / "install_bootloader").write_text(BOOTLOADER_SCRIPT)
    (scripts / "end_hook").write_text(END_HOOK_SCRIPT.format(log=shlex.quote(str(hooks_log(directory)))))
    for script in scripts.iterdir():
        script.chmod(0o755)
    if power_method == "pdu":
        write_pdu_files(directory, layout)
    _write_yaml(etc / "server.conf", server_conf(directory, private_key))
    _write_yaml(etc / "clusters.conf", clusters_conf(layout))
    for cluster in layout.clusters:
        _write_yaml(etc / f"{cluster}.conf", cluster_conf(cluster, directory, private_key, bmc_user, bmc_password,
                                                             power_method=power_method))
    (etc / "command.conf").write_text("{}\n")
    _write_yaml(etc / "client.conf", {
        "default": "testbed",
        "servers": [{"name": "testbed", "hostname": SERVER_IP, "port": 25300, "secure": False}],
    })
    (etc / "version").write_text(KADEPLOY_VERSION + "\n")
    nodes_file = directory / "nodes"
    nodes_file.write_text("".join(node.hostname + "\n" for node in layout.nodes))
    for cluster in layout.clusters:
        (directory / f"nodes-{cluster}").write_text(
            "".join(node.hostname + "\n" for node in layout.by_cluster(cluster)))
    return ConfigPaths(etc=etc, nodes_file=nodes_file, private_key=private_key, tftpboot=directory / "tftpboot")

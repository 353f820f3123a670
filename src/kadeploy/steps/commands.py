"""The exact shell commands the deployment micro-steps run on nodes.

Reference section 5.4 gives Kadeploy3's commands; they are rebuilt here as
pure functions of a `DeployPlan` so that every user-controlled value is
quoted in one place (`q`) and unit tests can read the commands. The node
side is a plain POSIX shell as root in the deployment environment.
"""

from __future__ import annotations

import shlex

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.steps import fsarchiver
from kadeploy.steps.plan import DeployPlan, partition_device
from kadeploy.templates import fill

q = shlex.quote

#: decompression filters by compression name (image streams and archives)
DECOMPRESSORS = {
    "gzip": "gzip -cd",
    "bzip2": "bzip2 -cd",
    "xz": "xz -cd",
    "zstd": "zstd -cd",
    "none": "cat",
}


def decompressor(compression: str) -> str:
    """The filter turning a compressed stream into the raw one."""
    try:
        return DECOMPRESSORS[compression]
    except KeyError:
        raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, f"unsupported compression {compression!r}") from None


def deploy_variables(plan: DeployPlan, version: str = "") -> dict[str, str]:
    """The KADEPLOY_* variables of reference section 3.7, exported to node scripts."""
    variables = {
        "KADEPLOY_CLUSTER": plan.cluster,
        "KADEPLOY_DEPLOY_PART": plan.deploy_part,
        "KADEPLOY_BLOCK_DEVICE": plan.block_device,
        "KADEPLOY_DEPLOY_PART_NUM": str(plan.deploy_part_num),
        "KADEPLOY_SWAP_PART_NUM": str(plan.swap_part_num),
        "KADEPLOY_PROD_PART_NUM": str(plan.prod_part_num),
        "KADEPLOY_TMP_PART_NUM": str(plan.tmp_part_num),
        "KADEPLOY_PREPOST_EXTRACTION_DIR": plan.rambin_dir,
        "KADEPLOY_TMP_DIR": plan.tmp_dir,
        "KADEPLOY_ENV": plan.env_name,
        "KADEPLOY_ENV_KERNEL": plan.env_kernel,
        "KADEPLOY_ENV_INITRD": plan.env_initrd,
        "KADEPLOY_ENV_KERNEL_PARAMS": plan.kernel_params,
        "KADEPLOY_ENV_HYPERVISOR": plan.hypervisor,
        "KADEPLOY_ENV_HYPERVISOR_PARAMS": plan.hypervisor_params,
        "KADEPLOY_OS_KIND": plan.os_kind,
        "KADEPLOY_PART_TYPE": format(plan.partition_type, "x"),
        "KADEPLOY_FS_TYPE": plan.filesystem,
        "KADEPLOY_FS_TYPE_TMP": plan.reformat_tmp or "",
        "KADEPLOY_ENV_EXTRACTION_DIR": plan.extraction_dir,
    }
    if version:
        variables["KADEPLOY_VERSION"] = version
    return variables


def export_prefix(variables: dict[str, str]) -> str:
    """`VAR='value' VAR2='value2' ` as a command prefix, every value quoted."""
    return "".join(f"{name}={q(value)} " for name, value in variables.items())


def export_statement(variables: dict[str, str]) -> str:
    """`export VAR='value' ...; `: the variables set in the shell itself, so that a user's
    command line may expand them (`echo x > $KADEPLOY_ENV_EXTRACTION_DIR/f`), which a prefix
    assignment does not allow (the shell expands words before applying it)."""
    if not variables:
        return ""
    return "export " + " ".join(f"{name}={q(value)}" for name, value in variables.items()) + "; "


def run_script(variables: dict[str, str], params: str = "") -> str:
    """Run a script received on stdin with the deployment variables (Kadeploy3's `run_script`)."""
    suffix = f" {params}" if params else ""
    return (
        "tmp=$(mktemp) && chmod 755 \"$tmp\" && cat - > \"$tmp\" && "
        f"{export_prefix(variables)}\"$tmp\"{suffix}; status=$?; rm -f \"$tmp\"; exit $status"
    )


def append_authorized_keys(root: str = "") -> str:
    """Append stdin to root's authorized_keys under `root` (empty = the running system)."""
    ssh_dir = f"{root.rstrip('/')}/root/.ssh"
    return f"mkdir -p {q(ssh_dir)} && chmod 700 {q(ssh_dir)} && cat - >> {q(ssh_dir + '/authorized_keys')}"


def mkfs(fstype: str, device: str, args: str) -> str:
    """mkfs with the per-filesystem arguments of server.conf `external/mkfs` (forced, quiet)."""
    extra = args or _default_mkfs_args(fstype)
    return f"mkfs -t {q(fstype)} {extra} {q(device)}".replace("  ", " ")


def _default_mkfs_args(fstype: str) -> str:
    if fstype.startswith("ext"):
        return "-F -q"
    if fstype == "xfs":
        return "-f -q"
    return ""


def format_deploy_part(plan: DeployPlan) -> str:
    dest = plan.extraction_dir
    return (f"mkdir -p {q(dest)}; umount {q(plan.deploy_part)} 2>/dev/null; "
            + mkfs(plan.filesystem, plan.deploy_part, plan.mkfs_args.get(plan.filesystem, "")))


def format_tmp_part(plan: DeployPlan) -> str:
    device = partition_device(plan.block_device, plan.tmp_part_num)
    fstype = plan.reformat_tmp or "ext4"
    return (f"mkdir -p {q(plan.tmp_dir)}; umount {q(device)} 2>/dev/null; "
            + mkfs(fstype, device, plan.mkfs_args.get(fstype, "")))


def format_swap_part(plan: DeployPlan) -> str:
    return f"mkswap {q(partition_device(plan.block_device, plan.swap_part_num))}"


def mount_deploy_part(plan: DeployPlan) -> str:
    dest = plan.extraction_dir
    return f"mkdir -p {q(dest)} && (mountpoint -q {q(dest)} || mount {q(plan.deploy_part)} {q(dest)})"


def mount_tmp_part(plan: DeployPlan) -> str:
    return f"mount {q(partition_device(plan.block_device, plan.tmp_part_num))} {q(plan.tmp_dir)}"


def umount_deploy_part(plan: DeployPlan) -> str:
    return f"sync; umount -l {q(plan.deploy_part)} 2>/dev/null; true"


def image_sink(plan: DeployPlan) -> str:
    """The node-side pipeline fed with the image stream (reference section 7).

    An image that is stored first (fsa, or a cluster that does not decompress
    on the fly) is only written to the node's rambin here; `decompress_environment`
    unpacks it.
    """
    if plan.image_stored_first:
        return fsarchiver.store_image(plan)
    return _unpack(plan, "")


def decompress_stored_image(plan: DeployPlan) -> str:
    """`decompress_environment`: unpack the image `image_sink` stored, then remove the copy."""
    if plan.image_kind == "fsa":
        return fsarchiver.restore_command(plan)
    stored = q(fsarchiver.stored_image_path(plan))
    return f"{_unpack(plan, f' < {stored}')}; status=$?; rm -f {stored}; exit $status"


def _unpack(plan: DeployPlan, source: str) -> str:
    """Decompress `source` (a redirection, or nothing for stdin) onto the deploy partition."""
    unpack = decompressor(plan.image_compression)
    if plan.image_kind == "tar":
        extra = f" {plan.tar_options}" if plan.tar_options else ""
        return f"{unpack}{source} | tar --numeric-owner{extra} -C {q(plan.extraction_dir)} -xf -"
    if plan.image_kind == "dd":
        return f"{unpack}{source} > {q(plan.deploy_part)}"
    raise KadeployError(ErrorCode.INVALID_ENVIRONMENT,
                        f"image kind {plan.image_kind!r} is not supported (tar, dd and fsa are)")


def unpack_archive(plan: DeployPlan, compression: str) -> str:
    """Unpack a pre/post-install archive from stdin into the rambin dir."""
    rambin = q(plan.rambin_dir)
    return f"mkdir -p {rambin} && {decompressor(compression)} | tar -C {rambin} -xf -"


def run_archive_script(plan: DeployPlan, script: str, variables: dict[str, str]) -> str | None:
    """Run a pre/post-install archive's script from the rambin dir; None when `none`."""
    if not script or script.strip() == "none":
        return None
    words = shlex.split(script)
    command = " ".join(q(word) for word in words)
    return f"cd {q(plan.rambin_dir)} && {export_prefix(variables)}{q(plan.rambin_dir)}/{command}"


def check_kernel_files(plan: DeployPlan) -> str:
    """Fail with Kadeploy3's message unless the kernel (and initrd) exist in the extracted image."""
    checks = []
    for label, path in (("kernel", plan.env_kernel), ("initrd", plan.env_initrd)):
        if not path:
            continue
        full = plan.extraction_dir.rstrip("/") + "/" + path.lstrip("/")
        checks.append(f"test -e {q(full)} || {{ echo {q(f'Environment {label} file {path} not found in tarball')} >&2; exit 1; }}")
    return "; ".join(checks) or "true"


#: Links followed when resolving a kernel or initrd inside an image (Linux's MAXSYMLINKS).
MAX_SYMLINKS = 40


def _resolve_in_root(variable: str, root: str, path: str) -> str:
    """Set the shell variable `variable` to `path` under `root`, its symlinks resolved inside `root`.

    Why: symlinks like /vmlinuz -> boot/vmlinuz-6.1 (or an absolute target)
    must resolve inside the image, not on the system that reads it. The image
    is the user's, so a link loop fails after MAX_SYMLINKS hops, as the kernel
    would, instead of spinning until the step's timeout.
    """
    v = variable
    loop = q(f"{path}: too many levels of symbolic links in the image")
    return (f"{v}n=0; {v}={q(f'{root}/{path.lstrip(chr(47))}')}; while [ -L \"${v}\" ]; do "
            f"{v}n=$(({v}n + 1)); [ ${v}n -le {MAX_SYMLINKS} ] || {{ echo {loop} >&2; exit 1; }}; "
            f"t=$(readlink \"${v}\"); "
            f"case \"$t\" in /*) {v}={q(root)}\"$t\";; *) {v}=$(dirname \"${v}\")/\"$t\";; esac; done; ")


def kexec_load(kernel: str, initrd: str, params: str, root_dir: str = "") -> str:
    """Load a kernel with kexec, resolving symlinks inside `root_dir`, then reboot detached."""
    root = root_dir.rstrip("/")
    kernel_path = q(f"{root}/{kernel.lstrip('/')}")
    initrd_opt = f" --initrd={q(f'{root}/{initrd.lstrip(chr(47))}')}" if initrd else ""
    resolve = ""
    if root:
        resolve = _resolve_in_root("k", root, kernel)
        kernel_path = '"$k"'
        if initrd:
            resolve += _resolve_in_root("i", root, initrd)
            initrd_opt = ' --initrd="$i"'
    return (f"{resolve}kexec -l {kernel_path}{initrd_opt} --append={q(params)} && "
            "(nohup /bin/sh -c 'sleep 1; kexec -e || reboot' </dev/null >/dev/null 2>&1 &)")


#: The FIFO through which a deployment environment's init (PID 1) accepts a switch-root request.
PIVOT_HOOK = "/run/kadeploy/pivot-root"
#: The init the deployed system is started with, as a kernel without `init=` would.
DEPLOYED_INIT = "/sbin/init"


def same_kernel_check(plan: DeployPlan) -> str:
    """Fail, saying both versions, unless the environment's kernel is the running one (`uname -r`).

    The version is read from the bzImage header (the string `file` prints, at
    0x200 + the 16-bit offset at 0x20E, after the `HdrS` magic), else from a
    `vmlinuz-<release>` file name. BootNewEnvPivotRoot starts the deployed
    system on the running kernel, so it only applies when they are the same.
    """
    root = plan.extraction_dir.rstrip("/")
    label = f"Environment kernel file {plan.env_kernel}"
    return (_resolve_in_root("k", root, plan.env_kernel)
            + f"[ -f \"$k\" ] || {{ echo {q(label + ' not found on the deployed partition')} >&2; exit 1; }}; "
            "v=; if [ \"$(dd if=\"$k\" bs=1 skip=514 count=4 2>/dev/null)\" = HdrS ]; then "
            "o=$(od -An -tu2 -j526 -N2 \"$k\" | tr -d ' '); "
            "[ -n \"$o\" ] && v=$(dd if=\"$k\" bs=1 skip=$((o + 512)) count=128 2>/dev/null "
            "| tr '\\0' '\\n' | head -n1 | cut -d' ' -f1); fi; "
            "[ -n \"$v\" ] || v=$(basename \"$k\" | sed -n 's/^vmlinu[xz]-//p'); "
            f"[ -n \"$v\" ] || {{ echo {q(label + ': cannot tell its version (no bzImage header, no vmlinuz-<release> name)')} >&2; exit 1; }}; "
            "r=$(uname -r); [ \"$v\" = \"$r\" ] || { echo \"the environment's kernel is $v and the running "
            "kernel is $r\" >&2; exit 1; }")


def switch_root_request(plan: DeployPlan) -> str:
    """Ask the deployment environment's init to exec `switch_root` into the deployed system's init.

    Refused on the node (exit 1, with why) when the environment's init offers no
    hook (`PIVOT_HOOK`), the partition is not mounted or holds no init. The
    request is written a second later and detached, as `kexec_load` does, so
    that this SSH command returns before PID 1 stops the deployment
    environment's sshd.
    """
    dest = plan.extraction_dir.rstrip("/") or "/"
    hook = q(PIVOT_HOOK)
    request = f"sleep 1; echo {q(dest)} > {hook}"
    return (f"[ -p {hook} ] || {{ echo {q(f'the deployment environment has no switch-root hook ({PIVOT_HOOK}): its init cannot pivot')} >&2; exit 1; }}; "
            f"mountpoint -q {q(dest)} || {{ echo {q(f'{dest} is not a mount point')} >&2; exit 1; }}; "
            f"chroot {q(dest)} test -x {q(DEPLOYED_INIT)} || {{ echo {q(f'no executable {DEPLOYED_INIT} on the deployed partition')} >&2; exit 1; }}; "
            f"sync; (nohup /bin/sh -c {q(request)} </dev/null >/dev/null 2>&1 &)")


def reboot_from_deploy_env() -> str:
    return "(nohup /bin/sh -c 'sleep 1; /sbin/reboot -f' </dev/null >/dev/null 2>&1 &)"


def root_device_check(prod_device: str) -> str:
    """Print the device mounted on / (SetDeploymentEnvProd's check_nodes)."""
    return "mount | grep ' / ' | cut -f1 -d' '"


def same_root_device_check(prod_device: str) -> str:
    """Succeed when / is mounted from the same block device (major:minor) as `prod_device`.

    Why: the name `mount` prints for / may differ from the configured one for the
    same partition (a by-uuid or kernel name, a symlinked /dev entry), which made
    Kadeploy3's text comparison refuse a correctly booted production system.
    """
    return (f"set -- $(stat -L -c '%t %T' {q(prod_device)}) && [ $# -eq 2 ] && "
            f"[ \"$(findmnt -n -o MAJ:MIN / | head -1 | tr -d ' ')\" = \"$((0x$1)):$((0x$2))\" ]")


def custom_send_destination(destination: str, variables: dict[str, str]) -> str:
    """Substitute `$KADEPLOY_*` (or `${KADEPLOY_*}`) in a custom `send` destination with their values.

    In one pass (`kadeploy.templates.fill`, longest names first): a value is
    never searched for another variable.
    """
    values = {f"${name}": value for name, value in variables.items()}
    values.update({f"${{{name}}}": value for name, value in variables.items()})
    result = fill(destination, raw=values)
    if "$" in result or ".." in result.split("/"):
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"invalid destination {destination!r}")
    return result


def custom_broadcast(template: str, image_path: str, node_file: str, sink: str, connector: str) -> str:
    """BroadcastEnvCustom's `localops/broadcastenv/cmd`, run on the server, filled in one pass.

    ENVFILE and NODEFILE are paths (quoted); DECOMPRESS (the node-side
    pipeline) and TAKTUK_CONNECTOR (the administrator's connector) are command
    fragments, inserted as written.
    """
    return fill(template, quoted={"ENVFILE": image_path, "NODEFILE": node_file},
                raw={"DECOMPRESS": sink, "TAKTUK_CONNECTOR": connector})

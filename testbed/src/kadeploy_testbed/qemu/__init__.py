"""testbed/qemu: the QEMU mode of the testbed — real firmware, bootloaders and kernels in the loop.

Each node is a QEMU VM (1 GiB, TCG unless the host has hardware KVM) whose
e1000 iPXE ROM PXE-boots from dnsmasq on the bridge `ktq0` (DHCP with a fixed
address per MAC and the `pxe/dhcp` method's boot file; TFTP of the PXE
repository, also exported over HTTP on 10.202.0.1:8069 for iPXE), with a sparse
IDE disk (`/dev/sda`), and an OpenIPMI `ipmi_sim` BMC that owns its QEMU
process and whose Serial-over-LAN is the VM's serial console (logged to a file);
with `--power-method redfish`, a sushy-tools Redfish service in front of the
BMCs. The deployment kernel and initramfs are built from the deployment rootfs
(`deployimage`).

Public API::

    kadeploy-testbed up --mode qemu --nodes N [--pxe-method PXElinux|IPXE|GrubPXE] [--accel auto|kvm|tcg]
                        [--power-method ipmi|redfish] [--qemu-disk-size 6G] [--dir /var/lib/kadeploy-testbed-qemu]
    kadeploy-testbed down|status --mode qemu            (or --dir of a QEMU testbed)
    kadeploy-testbed power on|off|cycle|reset NODE... --mode qemu

    deployimage.ensure_deploy_kernel(cache=/var/cache/kadeploy-testbed) -> DeployKernel(directory, vmlinuz, initrd)
    deployimage.install_deploy_kernel(kernel, vmlinuz_dest, initrd_dest, public_key) -> None
    deployimage.boot_segment(public_key) -> bytes          # the per-testbed cpio segment (/init, key)
    layout.build_layout(n) -> Layout                       # node-<k>.qemu.testbed, 10.202.1.k, BMC 10.202.64.k
    configdir.write_config(dir, layout, bmc_user, bmc_password, method="PXElinux", power_method="ipmi") -> ConfigPaths
    vm.qemu_command(dir, node) -> argv / vm.vm_status(dir, node) -> "off" | QMP run state
    bmcsim.write_bmc_files(dir, node, qemu_argv, user, password) / start_bmc(...) -> pid   # ipmi_sim per VM
    bmcsim.power(bmc_ip, user, password, on|off|cycle|reset) / power_status(...) -> "on" | "off"
    redfishbmc.spawn(state) -> pid                         # the Redfish service process (--power-method redfish)
    cli.cmd_up(args) / cmd_down(dir) / cmd_status(dir) / cmd_power(dir, action, nodes)
"""

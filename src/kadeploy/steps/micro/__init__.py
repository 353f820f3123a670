"""The micro-steps of deployment, reboot and power workflows, by family (reference 5.2, 5.4, 6).

Room: steps. Each module is one family of micro-steps, each micro-step an
`async def <name>(run, ctx, nodes) -> StepResult` declared once, beside its
code, with `@microstep("<name>", "summary")` (`shared.py`). Each family's
Protocol lists the part of the cluster's run (`steps/context.py`
`ClusterRun`) its steps may read:

| module | family | micro-steps |
|---|---|---|
| `netboot.py` | what the nodes boot next | switch_pxe, set_vlan |
| `reboot.py` | restarting, powering, waiting | reboot, reboot_from_deploy_env, wait_reboot, power |
| `kexec.py` | booting without the firmware | send_deployment_kernel, kexec |
| `pivot.py` | starting the deployed system without a reboot | check_same_kernel, switch_root |
| `disk.py` | the disk in the deployment environment | create_partition_table, format_*_part, mount_*_part, umount_deploy_part, sync |
| `image.py` | writing the image | send_environment (and the broadcast method `custom`), decompress_environment |
| `system.py` | a bootable, reachable system | send_key_in_deploy_env, send_key, check_kernel_files, install_bootloader, check_nodes |
| `custom.py` | what the administrator and the user add | manage_admin_pre_install, manage_admin_post_install, manage_user_post_install; custom operations |
| `dummy.py` | Kadeploy3's test step | dummy |

Importing this package declares every micro-step: it is the micro-step
provider of `kadeploy.vocabulary.PROVIDERS`. `steps/deploy.py` `NodeSteps`
dispatches to them by name. Cancellation (a timeout or a kill) propagates
through the awaits; the executor, the broadcast and the power commands kill
what they started when cancelled.
"""

from kadeploy.steps.micro import custom, disk, dummy, image, kexec, netboot, pivot, reboot, system
from kadeploy.steps.micro.shared import MICROSTEPS, MicroStep, microstep

__all__ = ["MICROSTEPS", "MicroStep", "custom", "disk", "dummy", "image", "kexec", "microstep", "netboot",
           "pivot", "reboot", "system"]

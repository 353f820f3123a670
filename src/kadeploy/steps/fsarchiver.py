"""FSArchiver images (`fsa`): the node commands that store and restore them (reference 4 and 7).

Kadeploy3 3.3.11 (`microsteps.rb`, `get_decompress_cmd`) never streams an fsa
image: `send_environment` stores it as `<rambin>/_KATMP_<basename of
image/file>` and `decompress_environment` runs

    fsarchiver -j $(grep -c '^processor' /proc/cpuinfo) [-z N] restfs FILE id=I,dest=DEVICE ...

with `-z N` only for a level above 0, one `id=I,dest=DEVICE` per entry of
`options/partitions` for a multipart environment, else one for the
deployment partition (id of the first listed partition, or 0). Two things
differ, each because Kadeploy3's behaviour could not work:

* Kadeploy3 decided to store the image with `shortkind == 'fsa'`, which an
  `fsaN` kind never equals, so its send_environment found no command for the
  image and failed unless the cluster stored every image anyway; here fsa
  images are always stored first (`DeployPlan.image_stored_first`).
* fsarchiver refuses a mounted destination ("unmount it first"), so each one
  is unmounted before the restore (a retried BroadcastEnv finds the deploy
  partition mounted by its previous attempt). The stored copy is removed
  afterwards: it sits in the deployment environment's RAM.

The server checks a multipart request before anything is rebooted, with the
description's own functions (`kadeploy.catalog.multipart`).

Room: steps. Pure functions of a `DeployPlan`, every value quoted; imports
`plan` and `errors` only.
"""

from __future__ import annotations

import posixpath
import shlex

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.steps.plan import DeployPlan

q = shlex.quote

#: fsarchiver's thread count, as Kadeploy3 gives it: every processor of the node
JOBS = "$(grep -c '^processor' /proc/cpuinfo)"


def stored_image_path(plan: DeployPlan) -> str:
    """Where `send_environment` stores an image that is decompressed afterwards (Kadeploy3's name)."""
    name = posixpath.basename(plan.image_file.rstrip("/")) or f"{plan.env_name or 'image'}.img"
    return posixpath.join(plan.rambin_dir, f"_KATMP_{name}")


def store_image(plan: DeployPlan) -> str:
    """The sink of the broadcast when the image is stored, not unpacked on the fly."""
    return f"mkdir -p {q(plan.rambin_dir)} && cat - > {q(stored_image_path(plan))}"


def restore_targets(plan: DeployPlan) -> list[tuple[int, str]]:
    """(id in the archive, device) of every filesystem restored.

    Multipart: the whole `options/partitions` map. Otherwise one filesystem,
    the first listed one (id 0 when none is listed), on the deployment partition.
    """
    if plan.multipart:
        if not plan.image_partitions:
            raise KadeployError(ErrorCode.INVALID_ENVIRONMENT,
                                f"The multipart environment {plan.env_name} has no options/partitions")
        return list(plan.image_partitions)
    first_id = plan.image_partitions[0][0] if plan.image_partitions else 0
    return [(first_id, plan.deploy_part)]


def restore_command(plan: DeployPlan) -> str:
    """`decompress_environment` for an fsa image: restfs of the stored archive, then remove it."""
    if plan.image_kind != "fsa":
        raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, f"{plan.env_name} is not an fsa image")
    try:
        level = int(plan.image_compression)
    except ValueError:
        raise KadeployError(ErrorCode.INVALID_ENVIRONMENT,
                            f"invalid fsa compression level {plan.image_compression!r}") from None
    targets = restore_targets(plan)
    archive = q(stored_image_path(plan))
    unmount = "".join(f"umount {q(device)} 2>/dev/null; " for _, device in targets)
    level_option = f" -z {level}" if level > 0 else ""
    mapping = " ".join(q(f"id={fs_id},dest={device}") for fs_id, device in targets)
    return (f"{unmount}fsarchiver -j {JOBS}{level_option} restfs {archive} {mapping}; "
            f"status=$?; rm -f {archive}; exit $status")

"""What a node that runs the deployed debian12-min looks like from outside, checked once for every suite."""

from __future__ import annotations

from collections.abc import Callable


def assert_debian_on_partition(ssh: Callable[[str], str], node: str, partition: int = 3) -> None:
    """`node` runs the deployed Debian 12 (its own sshd answered `ssh`) from partition `partition`.

    `ssh(command)` runs `command` on the node as root and returns its standard output (failing the
    test on a non-zero exit)."""
    release = ssh("cat /etc/os-release")
    assert 'VERSION_ID="12"' in release, release
    root = ssh("findmnt -n -o SOURCE /").strip()
    assert root.endswith(f"p{partition}"), f"{node}: / is {root}, expected partition {partition}"
    # not the deployment environment: the deployed image names itself debian12-min
    assert ssh("cat /etc/hostname").strip() == "debian12-min"

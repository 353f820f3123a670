"""The deployment rootfs the netns testbed tests bring their testbed up with.

Why one home: every testbed test module passes `--deploy-rootfs` to `up`, and
all of them honour the same override, KADEPLOY_TESTBED_DEPLOY_ROOTFS (e.g. a
quick debootstrap), before building or reusing the cached one.
"""

from __future__ import annotations

import os
from pathlib import Path


def deploy_rootfs() -> Path:
    """KADEPLOY_TESTBED_DEPLOY_ROOTFS if set, else `images.ensure_deploy_rootfs()` (built once, then cached)."""
    if os.environ.get("KADEPLOY_TESTBED_DEPLOY_ROOTFS"):
        return Path(os.environ["KADEPLOY_TESTBED_DEPLOY_ROOTFS"])
    from kadeploy_testbed import images  # only when needed: building it needs root and debootstrap
    return images.ensure_deploy_rootfs()

"""A free local port for a test's listener: one helper instead of a copy per test module.

Why: servers under test (kadeploy3d, ipmi_sim, QEMU's chardevs, sushy-tools)
are given a port chosen by the kernel (bind to port 0) so tests running at the
same time on the machine do not collide on fixed numbers.
"""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_STREAM, address: str = "127.0.0.1") -> int:
    """A port the kernel reports free on `address` for `kind` (SOCK_STREAM: TCP, SOCK_DGRAM: UDP).

    The probe socket is closed before returning: the caller's server binds it
    next (a small race with other processes, accepted in tests)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])

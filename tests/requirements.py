"""What a test needs from the machine, declared once: a test asks with `require("mariadb")`.

Under CI (`CI=true`, as `.ci/run` runs the suite) a missing requirement FAILS
the test, naming what is missing and how to get it: a CI run where the
databases, tftpd, ipmitool, QEMU or the images were absent must not look
green with hundreds of tests quietly skipped. Outside CI it skips, so a
developer without root or QEMU can still run what their machine supports.

Three doors, and only three:

* `require(*names)` / `@requires(*names)`: a component from `REQUIREMENTS`;
  an unknown name is refused (add it to the table, once, with its check);
* `unmet(name, detail)`: the test found out itself that a declared
  component does not work (a database that refuses the connection);
* `optional(reason)`: a legitimately optional check that skips even under CI
  (say why at the call site). Two today: the relay on a python3.9 interpreter
  (Debian 12 has none) and the root-device check where `/` is no block device
  (a container).

tests/unit/test_cihollow_requirements.py refuses any other skip in tests/.
This module imports nothing from kadeploy, so that the conftest loads even
when the product does not import.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

IMAGE_CACHE = Path("/var/cache/kadeploy-testbed")


def under_ci() -> bool:
    """CI=true (GitLab, GitHub and most runners set it; `1`/`yes` accepted too)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@dataclass(frozen=True)
class Requirement:
    """A component some tests need: `missing()` says why it is absent, or None."""

    name: str
    missing: Callable[[], str | None]
    remedy: str


def _executables(*names: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        absent = [name for name in names if shutil.which(name) is None]
        return f"{', '.join(absent)} not on PATH" if absent else None
    return missing


def _modules(*names: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        absent = [name for name in names if importlib.util.find_spec(name) is None]
        return f"python module {', '.join(absent)} not importable" if absent else None
    return missing


def _root() -> str | None:
    return None if os.geteuid() == 0 else f"running as uid {os.geteuid()}, not root"


def _listening(port: int) -> Callable[[], str | None]:
    def missing() -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3):
                return None
        except OSError as exc:
            return f"nothing answers on 127.0.0.1:{port} ({exc.strerror or exc})"
    return missing


def _images() -> str | None:
    description = IMAGE_CACHE / "user-images" / "debian12-min.yaml"
    return None if description.exists() else f"{description} does not exist"


def _qemu_bridge_free() -> str | None:
    return "a QEMU testbed is already up (bridge ktq0)" if Path("/sys/class/net/ktq0").exists() else None


def _e2e_nodes() -> str | None:
    nodes = os.environ.get("KADEPLOY_E2E_NODES", "6")
    return None if nodes.isdigit() and int(nodes) >= 6 else f"KADEPLOY_E2E_NODES={nodes}, fewer than 6"


def _table(*requirements: Requirement) -> dict[str, Requirement]:
    return {requirement.name: requirement for requirement in requirements}


INSTALL = "./scripts/install.sh"
REQUIREMENTS: dict[str, Requirement] = _table(
    Requirement("root", _root, "run the suite as root (network namespaces, loop devices, chroots)"),
    Requirement("mariadb", _listening(3306), f"{INSTALL} (installs and starts mariadb-server)"),
    Requirement("postgresql", _listening(5432), f"{INSTALL} (installs and starts postgresql)"),
    Requirement("tftpd", _executables("in.tftpd", "tftp"), f"{INSTALL} (tftpd-hpa, tftp-hpa)"),
    Requirement("ipmitool", _executables("ipmitool"), f"{INSTALL} (ipmitool)"),
    Requirement("ipmi_sim", _executables("ipmi_sim"), f"{INSTALL} (openipmi)"),
    Requirement("qemu", _executables("qemu-system-x86_64"), f"{INSTALL} (qemu-system-x86)"),
    Requirement("dnsmasq", _executables("dnsmasq"), f"{INSTALL} (dnsmasq)"),
    Requirement("grub", _executables("grub-mknetdir"), f"{INSTALL} (grub-pc-bin, grub-efi-amd64-bin)"),
    Requirement("cpio", _executables("cpio"), f"{INSTALL} (cpio)"),
    Requirement("sshd", _executables("/usr/sbin/sshd", "ssh"), f"{INSTALL} (openssh-server, openssh-client)"),
    Requirement("bash", _executables("bash"), "apt-get install bash"),
    Requirement("ruby", _executables("ruby"), f"{INSTALL} (ruby: Kadeploy3's own YAML writer, the oracle)"),
    Requirement("aria2", _executables("aria2c"), f"{INSTALL} (aria2)"),
    Requirement("mktorrent", _executables("mktorrent"), f"{INSTALL} (mktorrent)"),
    Requirement("opentracker", _executables("opentracker"), f"{INSTALL} (opentracker)"),
    Requirement("taktuk", _executables("taktuk"), f"{INSTALL} (taktuk)"),
    Requirement("snmpset", _executables("snmpset"), f"{INSTALL} (snmp)"),
    Requirement("sushy-tools", _executables("sushy-emulator"), "pip install -e '.[test]' (sushy-tools)"),
    Requirement("debootstrap", _executables("debootstrap"), f"{INSTALL} (debootstrap)"),
    Requirement("dpkg-dev", _executables("dpkg-deb", "dpkg-shlibdeps"), f"{INSTALL} (dpkg-dev, debhelper)"),
    Requirement("lintian", _executables("lintian"), f"{INSTALL} (lintian)"),
    Requirement("rpm", _executables("rpmbuild", "rpm"), f"{INSTALL} (rpm)"),
    Requirement("kadeploy3d", _executables("kadeploy3d"), "pip install -e . (the server's entry point)"),
    Requirement("images", _images, "kadeploy-testbed image build (debian12-min, the deployment rootfs)"),
    Requirement("qemu-bridge-free", _qemu_bridge_free, "kadeploy-testbed --dir /var/lib/kadeploy-testbed-qemu down --mode qemu"),
    Requirement("e2e-nodes", _e2e_nodes, "leave KADEPLOY_E2E_NODES unset (6 nodes) or set it to 6 or more"),
    Requirement("matplotlib", _modules("matplotlib"), "pip install -e '.[test]'"),
    Requirement("pyte", _modules("pyte"), "pip install -e '.[test]'"),
    Requirement("schemathesis", _modules("schemathesis"), "pip install -e '.[test]'"),
    Requirement("pysnmp", _modules("pysnmp"), "pip install -e '.[test]'"),
    Requirement("torf", _modules("torf"), "pip install -e '.[test]'"),
)


def _known(name: str) -> Requirement:
    try:
        return REQUIREMENTS[name]
    except KeyError:
        raise ValueError(f"unknown test requirement {name!r}: declare it in tests/requirements.py "
                         f"(known: {', '.join(sorted(REQUIREMENTS))})") from None


def _stop(names: list[str], detail: str) -> NoReturn:
    remedies = "; ".join(dict.fromkeys(_known(name).remedy for name in names))
    message = f"needs {', '.join(names)}: {detail} (remedy: {remedies})"
    if under_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def unmet(name: str, detail: str) -> NoReturn:
    """Stop the test because requirement `name` does not work here: fail under CI, skip otherwise."""
    _stop([name], detail)


def missing(*names: str) -> list[tuple[str, str]]:
    """The (name, why) of each requirement among `names` that this machine lacks."""
    found = []
    for name in names:
        why = _known(name).missing()
        if why is not None:
            found.append((name, why))
    return found


def require(*names: str) -> None:
    """Fail (CI) or skip (elsewhere) the running test, or module, unless every requirement is met."""
    absent = missing(*names)
    if absent:
        _stop([name for name, _ in absent], "; ".join(why for _, why in absent))


def requires(*names: str) -> pytest.MarkDecorator:
    """Mark a test, class or module (`pytestmark = requires("ipmitool")`); tests/conftest.py checks it."""
    for name in names:
        _known(name)
    return pytest.mark.requires(*names)


def optional(reason: str) -> NoReturn:
    """Skip even under CI: only for a check that is legitimately optional on a CI machine (say why)."""
    pytest.skip(f"optional: {reason}", allow_module_level=True)

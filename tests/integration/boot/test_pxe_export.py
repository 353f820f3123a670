"""Profiles written by PXEProfiles, fetched the way nodes fetch them: TFTP (tftpd-hpa) and HTTP."""

from __future__ import annotations

import functools
import socket
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.requirements import require
from kadeploy.boot.pxe import BootTarget, LocalBootEnv, PXEMethodSettings, PXEProfiles

NODE = BootTarget("node-1.c1.testbed", "10.200.1.1", "02:00:0a:c8:01:01")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return udp.getsockname()[1]


@pytest.fixture
def tftp_server(tmp_path: Path):
    require("root", "tftpd")  # -s chroots into the repository
    repository = tmp_path / "tftpboot"
    repository.mkdir()
    port = free_udp_port()
    # -s chroots into the repository (needs root); -u root so it can read pytest's 0700 tmp dir
    process = subprocess.Popen(["in.tftpd", "-L", "-u", "root", "-a", f"127.0.0.1:{port}", "-s", str(repository)])
    time.sleep(0.3)
    try:
        yield repository, port
    finally:
        process.terminate()
        process.wait(5)


def tftp_get(port: int, remote: str, local: Path) -> str:
    subprocess.run(["tftp", "127.0.0.1", str(port), "-c", "get", remote, str(local)], check=True, timeout=10)
    return local.read_text()


@pytest.mark.root
def test_pxelinux_profiles_over_tftp(tftp_server, tmp_path):
    repository, port = tftp_server
    profiles = PXEProfiles(PXEMethodSettings("PXElinux", repository, export_server="10.200.0.1"),
                           headers={"networkboot": "SERIAL 0 115200"})
    assert profiles.deploy_kernel([NODE], "kernels/vmlinuz", "kernels/initrd", "rw").ok == [NODE.hostname]
    text = tftp_get(port, "/pxelinux.cfg/0AC80101", tmp_path / "a")
    assert text == ("SERIAL 0 115200\nDEFAULT network\nLABEL network\n"
                    "\tKERNEL /kernels/vmlinuz\n\tAPPEND initrd=/kernels/initrd rw\n")
    profiles.local_boot([NODE], 0, 3, LocalBootEnv())
    assert tftp_get(port, "/pxelinux.cfg/0AC80101", tmp_path / "b").endswith("\tCOM32 /chain.c32\n\tAPPEND hd0 3\n")


@pytest.mark.root
def test_grub_chain_over_tftp(tftp_server, tmp_path):
    repository, port = tftp_server
    dhcp = PXEMethodSettings("PXElinux", repository)
    grub = PXEMethodSettings("GrubPXE", repository, profiles_directory="grub", profiles_filename="mac", binary="grub/core.0")
    PXEProfiles(dhcp, localboot=grub).local_boot([NODE], 0, 3, LocalBootEnv(kernel="/vmlinuz"))
    assert "\tKERNEL /grub/core.0\n\tAPPEND keeppxe\n" in tftp_get(port, "/pxelinux.cfg/0AC80101", tmp_path / "c")
    assert "\tset root=(hd0,3)\n\tlinux /vmlinuz root=/dev/sda3\n" in tftp_get(port, "/grub/01-02-00-0a-c8-01-01", tmp_path / "d")


def test_ipxe_profile_over_http(tmp_path):
    repository = tmp_path / "www"
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(repository))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        ipxe = PXEMethodSettings("IPXE", repository, "ipxe", "mac", "http", address)
        PXEProfiles(ipxe).deploy_kernel([NODE], "kernels/vmlinuz", "kernels/initrd", "rw")
        (repository / "kernels").mkdir()
        (repository / "kernels" / "vmlinuz").write_bytes(b"\x7fKERNEL")
        script = httpx.get(f"http://{address}/ipxe/01-02-00-0a-c8-01-01", timeout=5).text
        assert script.startswith("#!ipxe\n")
        # the URL in the script is fetchable as a node's iPXE would
        kernel_url = script.splitlines()[2].split()[1]
        assert httpx.get(kernel_url, timeout=5).content == b"\x7fKERNEL"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

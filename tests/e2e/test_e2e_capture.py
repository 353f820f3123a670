"""`kadeploy-capture` over SSH against a deployed node, then the captured image deployed
elsewhere: the customisation made on the first node is on the second one."""

from __future__ import annotations

import secrets

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


def test_captured_node_redeploys_with_its_customisation(site, tmp_path) -> None:
    source, target = site.nodes[2], site.nodes[3]
    key = f"{site.user_key}.pub"
    site.tool("kadeploy3", "-e", "debian12-min", "-m", source, "-k", key, "-o", str(tmp_path / "a.ok"))
    assert (tmp_path / "a.ok").read_text().split() == [source]
    marker = secrets.token_hex(8)
    site.ssh(source, f"echo {marker} > /root/captured-marker && mkdir -p /root/tree && "
                     "dd if=/dev/urandom of=/root/tree/blob bs=64k count=16 2>/dev/null && sha256sum /root/tree/blob")
    blob = site.ssh(source, "sha256sum /root/tree/blob").stdout.split()[0]

    image = tmp_path / "mine.tgz"
    captured = site.tool("kadeploy-capture", "-m", source, "-o", str(image), "-k", str(site.user_key),
                         "-n", "debian12-mine", timeout=600)
    assert image.stat().st_size > 10 << 20, captured.stdout + captured.stderr
    description = tmp_path / "mine.yaml"
    text = description.read_text()
    assert "debian12-mine" in text and str(image) in text

    result = site.tool("kadeploy3", "-a", str(description), "-m", target, "-k", key,
                       "-o", str(tmp_path / "b.ok"), "-n", str(tmp_path / "b.ko"))
    assert (tmp_path / "b.ok").read_text().split() == [target], result.stdout
    assert site.ssh(target, "cat /root/captured-marker").stdout.strip() == marker
    assert site.ssh(target, "sha256sum /root/tree/blob").stdout.split()[0] == blob
    site.assert_debian_on_partition(target)

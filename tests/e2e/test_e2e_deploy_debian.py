"""The first milestone: `kadeploy3 -e debian12-min -f nodes -k` onto the testbed."""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


def test_simple_deploy_with_key_boots_debian_with_its_own_sshd(site, tmp_path):
    ok_file, ko_file = tmp_path / "ok", tmp_path / "ko"
    result = site.tool("kadeploy3", "-e", "debian12-min", "-f", str(site.node_file), "-k", f"{site.user_key}.pub",
                       "-o", str(ok_file), "-n", str(ko_file))
    assert "The deployment is successful on nodes" in result.stdout
    assert sorted(ok_file.read_text().split()) == sorted(site.nodes)
    assert ko_file.read_text().strip() == ""
    for node in site.nodes:
        release = site.ssh(node, "cat /etc/os-release").stdout
        assert 'VERSION_ID="12"' in release
        # the deployed system, not the deployment environment: its root is the deploy partition
        assert site.ssh(node, "findmnt -n -o SOURCE /").stdout.strip().endswith("p3")
        assert site.ssh(node, "test -x /usr/sbin/sshd && pgrep -x sshd >/dev/null && echo up").stdout.strip() == "up"
    stats = site.tool("kastat3", "-F", "hostname,step1,step2,step3,success", "-w",
                      result.stdout.split("#", 1)[1].split()[0]).stdout.splitlines()
    assert sorted(line.split(",")[0] for line in stats) == sorted(site.nodes)
    assert all(line.endswith(",true") for line in stats)
    assert all(",SetDeploymentEnvUntrusted,BroadcastEnvKascade,BootNewEnvClassical," in line for line in stats)

"""SetDeploymentEnvProd's check_nodes compares device numbers, not the names `mount` prints."""

import os
import subprocess

from kadeploy.steps.commands import export_statement, same_root_device_check
from tests.requirements import optional


def _root_source() -> str:
    return subprocess.run(["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True, text=True, check=False).stdout.strip()


def test_same_root_device_accepts_the_root_partition_under_another_name(tmp_path):
    if not _root_source().startswith("/dev/"):  # a container's overlay root: the machine, not a missing package
        optional("/ is not a block device here")
    alias = tmp_path / "prod-alias"
    os.symlink(_root_source(), alias)  # as /dev/sda2 -> loop3p2 on the testbed, or a by-uuid link
    assert subprocess.run(["sh", "-c", same_root_device_check(str(alias))], check=False).returncode == 0


def test_same_root_device_refuses_another_device():
    assert subprocess.run(["sh", "-c", same_root_device_check("/dev/null")], capture_output=True, check=False).returncode != 0


def test_exported_variables_are_expanded_by_the_users_command_line(tmp_path):
    command = export_statement({"KADEPLOY_ENV_EXTRACTION_DIR": str(tmp_path / "a b")})
    result = subprocess.run(["sh", "-c", command + 'echo "$KADEPLOY_ENV_EXTRACTION_DIR"; sh -c \'echo "$KADEPLOY_ENV_EXTRACTION_DIR"\''],
                            capture_output=True, text=True, check=False)
    assert result.stdout.splitlines() == [str(tmp_path / "a b")] * 2

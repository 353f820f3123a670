"""`kadeploy3d --check-config` refuses a hook that cannot run, as Kadeploy3 refuses it when
loading server.conf (config.rb `hooks`: `:executable => true`), and accepts it once executable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from configdir import write_config_dir  # noqa: E402


def check_config(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KADEPLOY3_CONFIG_DIR": str(tmp_path / "etc"), "KADEPLOY3_LOG_DIR": str(tmp_path / "log"),
           "KADEPLOY3_RUN_DIR": str(tmp_path / "run")}
    return subprocess.run([sys.executable, "-m", "kadeploy_testbed.dummy", "--check-config"],
                          env=env, capture_output=True, text=True, timeout=60)


def test_check_config_names_the_hook_that_is_not_executable(tmp_path) -> None:
    hook = tmp_path / "end_hook"
    hook.write_text("#!/bin/sh\necho \"$1\" >> /dev/null\n")
    hook.chmod(0o644)
    # --check-config binds no port: any port number will do
    write_config_dir(tmp_path, 25999, tmp_path / "kadeploy.db",
                     server_extra={"hooks": {"end_of_reboot": f"{hook} WORKFLOW_ID"}})
    refused = check_config(tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "server.conf: hooks/end_of_reboot" in refused.stderr
    assert f"The file '{hook}' is not executable" in refused.stderr
    hook.chmod(0o755)
    accepted = check_config(tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert "is valid" in accepted.stdout

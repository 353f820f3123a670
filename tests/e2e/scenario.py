"""Helpers shared by the end-to-end scenarios (parsing what the tools print)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path


def ok_nodes(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Nodes listed after `The deployment is successful on nodes` (or the reboot/power equivalent)."""
    nodes: list[str] = []
    collecting = False
    for line in result.stdout.splitlines():
        if "is successful on nodes" in line or "succeeded on nodes" in line.lower():
            collecting = True
            continue
        if collecting:
            if not line.strip() or " failed on nodes" in line:
                collecting = False
                continue
            nodes.append(line.strip())
    return nodes


def workflow_id(result: subprocess.CompletedProcess[str]) -> str:
    """The wid printed by `... #D-... started`."""
    for line in result.stdout.splitlines():
        if "#" in line and " started" in line:
            return line.split("#", 1)[1].split()[0]
    raise AssertionError(f"no workflow id in:\n{result.stdout}")



def assert_batch_ok(results: dict[str, subprocess.CompletedProcess[str]], out) -> None:
    """Every tool of a batch exited 0 and its node is in its -o file; all failures reported at once."""
    failures = []
    for node, result in results.items():
        ok_file = out / f"{node}.ok"
        ok = ok_file.read_text().split() if ok_file.exists() else []
        if result.returncode != 0 or ok != [node]:
            failures.append(f"--- {node} (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    assert not failures, "\n".join(failures)


def machine_args(nodes) -> list[str]:
    """`-m node` for each node, as the tools take them."""
    return [arg for node in nodes for arg in ("-m", node)]


def user_script_archive(directory: Path, name: str, text: str) -> dict[str, str]:
    """A user pre/postinstall as an environment description names it: the executable script `name`
    (holding `text`) in a gzip tarball written under `directory`."""
    script = directory / name
    script.write_text(text)
    script.chmod(0o755)
    archive = directory / f"{Path(name).stem}.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(script, arcname=name)
    return {"archive": str(archive), "compression": "gzip", "script": name}

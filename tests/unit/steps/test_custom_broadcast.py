"""BroadcastEnvCustom runs the admin's localops command on the server with its substitutions."""

from types import SimpleNamespace

from kadeploy.engine import ListOutput, MicroContext
from kadeploy.steps.context import FileRef
from kadeploy.steps.deploy import NodeSteps
from kadeploy.steps.plan import DeployPlan


def _steps(tmp_path, command):
    image = tmp_path / "image.tgz"
    image.write_bytes(b"x" * 1234)
    run = SimpleNamespace(custom_broadcast_cmd=command, image=FileRef(image, 1234), connector="ssh -q",
                          hosts={"n1": "10.0.0.1", "n2": "10.0.0.2"},
                          plan=DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3))
    ctx = MicroContext("D-1", "c1", "Deploy", "BroadcastEnv", "BroadcastEnvCustom", "send_environment", 0, None,
                       ListOutput(), 10.0)
    return NodeSteps(run, "Deploy"), ctx


async def test_custom_command_gets_image_node_file_and_decompression(tmp_path):
    out = tmp_path / "out"
    steps, ctx = _steps(tmp_path, f"{{ wc -c < ENVFILE; cat NODEFILE; echo 'DECOMPRESS'; }} > {out}")
    result = await steps.run("send_environment", ctx, ["n1", "n2"])
    assert result.ok == ["n1", "n2"] and not result.ko
    lines = out.read_text().splitlines()
    assert lines[0].strip() == "1234" and lines[1:3] == ["10.0.0.1", "10.0.0.2"]
    assert lines[3] == "gzip -cd | tar --numeric-owner -C /mnt/dest -xf -"


async def test_custom_command_failure_fails_every_node_with_its_stderr(tmp_path):
    steps, ctx = _steps(tmp_path, "echo 'no route to n2' >&2; exit 3")
    result = await steps.run("send_environment", ctx, ["n1", "n2"])
    assert result.ok == [] and result.ko == {"n1": "no route to n2", "n2": "no route to n2"}

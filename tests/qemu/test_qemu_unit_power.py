"""QemuPower against a fake QMP server: the BMC's power actions map to the right QMP commands."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadeploy.errors import KadeployError
from kadeploy.testbed.qemu.vm import QemuPower


class FakeQMP:
    """Speaks enough QMP (greeting, capabilities, status, stop/cont/system_reset) to play a VM."""

    def __init__(self, path: Path, status: str = "prelaunch") -> None:
        self.status = status
        self.commands: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection, connection.makefile("rwb") as stream:
                stream.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
                stream.flush()
                for line in stream:
                    command = json.loads(line)["execute"]
                    self.commands.append(command)
                    stream.write(json.dumps(self._answer(command)).encode() + b"\n")
                    # an asynchronous event between answers must be skipped by the client
                    if command == "cont":
                        stream.write(b'{"event": "RESUME", "timestamp": {}}\n')
                    stream.flush()

    def _answer(self, command: str) -> dict[str, object]:
        if command == "query-status":
            return {"return": {"status": self.status, "running": self.status == "running"}}
        if command == "stop":
            self.status = "paused"
        elif command == "cont":
            self.status = "running"
        elif command not in ("qmp_capabilities", "system_reset"):
            return {"error": {"class": "CommandNotFound", "desc": f"The command {command} has not been found"}}
        return {"return": {}}

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[FakeQMP]:
    fake = FakeQMP(tmp_path / "qmp.sock")
    yield fake
    fake.close()


def actions(fake: FakeQMP) -> list[str]:
    return [c for c in fake.commands if c not in ("qmp_capabilities", "query-status")]


def test_power_on_restarts_the_firmware_of_a_stopped_vm(vm: FakeQMP, tmp_path: Path) -> None:
    power = QemuPower(tmp_path / "qmp.sock")
    assert power.power_state() is False
    power.power_on()
    assert actions(vm) == ["system_reset", "cont"]
    assert power.power_state() is True


def test_power_on_of_a_running_vm_does_nothing(vm: FakeQMP, tmp_path: Path) -> None:
    vm.status = "running"
    QemuPower(tmp_path / "qmp.sock").power_on()
    assert actions(vm) == []


def test_power_off_stops_and_cycle_resets_then_runs(vm: FakeQMP, tmp_path: Path) -> None:
    vm.status = "running"
    power = QemuPower(tmp_path / "qmp.sock")
    power.power_off()
    assert power.power_state() is False
    power.power_cycle()
    assert actions(vm) == ["stop", "stop", "system_reset", "cont"]
    assert vm.status == "running"


def test_reset_of_a_guest_powered_off_vm_starts_it(vm: FakeQMP, tmp_path: Path) -> None:
    vm.status = "shutdown"  # the guest ran poweroff (-no-shutdown keeps QEMU alive)
    QemuPower(tmp_path / "qmp.sock").power_reset()
    assert actions(vm) == ["system_reset", "cont"]
    assert vm.status == "running"


def test_unreachable_qmp_socket_is_a_kadeploy_error(tmp_path: Path) -> None:
    with pytest.raises(KadeployError, match="qmp.sock"):
        QemuPower(tmp_path / "qmp.sock").power_state()


def test_qmp_error_answer_is_a_kadeploy_error(vm: FakeQMP, tmp_path: Path) -> None:
    power = QemuPower(tmp_path / "qmp.sock")
    with pytest.raises(KadeployError, match="has not been found"):
        power.qmp.execute("no-such-command")

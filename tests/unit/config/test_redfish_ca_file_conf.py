"""A cluster file's `ca_file` for the redfish driver: checked at load, handed to the driver."""

from __future__ import annotations

import pytest

from kadeploy.boot.drivers import PowerDriverError, RedfishDriver
from kadeploy.config import load_config
from kadeploy.errors import ConfigError
from kadeploy.steps.runner import _driver_factory


def _hard_reboot(config_dir):
    return load_config(config_dir.path).clusters["vm"].remoteops.command("reboot", "hard")


def test_ca_file_is_resolved_and_given_to_the_redfish_driver(config_dir):
    (config_dir.path / "bmc-ca.pem").write_text("not a certificate\n")
    config_dir.edit("vm.conf", "remoteops/reboot/1/driver", "redfish")
    config_dir.edit("vm.conf", "remoteops/reboot/1/address", "https://HOSTNAME_SHORT-bmc:8443")
    config_dir.edit("vm.conf", "remoteops/reboot/1/ca_file", "bmc-ca.pem")
    op = _hard_reboot(config_dir)
    assert op.ca_file == str(config_dir.path / "bmc-ca.pem")
    driver = _driver_factory(op)("node-3.site")
    assert isinstance(driver, RedfishDriver)
    assert (driver.base_url, driver.verify) == ("https://node-3-bmc:8443", op.ca_file)
    # a CA file that is no certificate fails the node's action with the reason, nothing is sent
    with pytest.raises(PowerDriverError, match="CA file .*bmc-ca.pem"):
        driver._tls()


@pytest.mark.parametrize(
    ("driver", "ca_file", "message"),
    [
        ("ipmi", "bmc-ca.pem", "remoteops/reboot[1]: ca_file: only the redfish driver takes a CA file"),
        ("redfish", "missing.pem", "remoteops/reboot[1]: cannot read"),
    ],
)
def test_ca_file_errors_name_the_key(config_dir, driver, ca_file, message):
    (config_dir.path / "bmc-ca.pem").write_text("x\n")
    config_dir.edit("vm.conf", "remoteops/reboot/1/driver", driver)
    config_dir.edit("vm.conf", "remoteops/reboot/1/ca_file", ca_file)
    with pytest.raises(ConfigError) as info:
        load_config(config_dir.path)
    assert message in info.value.message

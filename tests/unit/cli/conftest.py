"""Fixtures for CLI tests: the client tests' fake kadeploy3d and client.conf."""

from client.conftest import fake_server  # noqa: F401  (re-used fixture)

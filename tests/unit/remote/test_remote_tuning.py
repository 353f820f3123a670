"""The asyncssh tuning of remote/tuning.py: nothing removed, levels still honoured."""

from __future__ import annotations

import logging

from asyncssh.encryption import get_default_encryption_algs
from asyncssh.logging import logger as asyncssh_logger

from kadeploy.remote.tuning import PREFERRED_CIPHERS, encryption_algs, quiet_asyncssh_logging


def test_gcm_first_and_nothing_removed() -> None:
    algs = encryption_algs()
    assert algs[:2] == list(PREFERRED_CIPHERS)
    assert sorted(algs) == sorted(alg.decode() for alg in get_default_encryption_algs())


def test_quiet_logging_keeps_enabled_levels(caplog) -> None:
    quiet_asyncssh_logging()
    quiet_asyncssh_logging()  # idempotent
    with caplog.at_level(logging.WARNING, logger="asyncssh"):
        asyncssh_logger.info("hidden %s", b"bytes")
        asyncssh_logger.warning("shown %s", b"bytes")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["shown bytes"]

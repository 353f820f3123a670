"""The asyncssh tuning of remote/tuning.py: nothing removed, what a node offers still negotiates, levels honoured."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncssh
import pytest
from asyncssh.encryption import get_default_encryption_algs
from asyncssh.kex import get_default_kex_algs
from asyncssh.logging import logger as asyncssh_logger

from kadeploy.remote.connections import ConnectionPool
from kadeploy.remote.tuning import PREFERRED_CIPHERS, PREFERRED_KEX, encryption_algs, kex_algs, quiet_asyncssh_logging


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


def test_curve25519_first_and_no_key_exchange_removed() -> None:
    algs = kex_algs()
    assert algs[:2] == list(PREFERRED_KEX)
    assert sorted(algs) == sorted(alg.decode() for alg in get_default_kex_algs() if not alg.startswith(b"gss-"))


@pytest.mark.parametrize(("offered", "expected"), [
    (None, "curve25519-sha256"),                                 # a default sshd: the cheap one is picked
    (["mlkem768x25519-sha256"], "mlkem768x25519-sha256"),         # a node that only offers the hybrid
])
async def test_pool_negotiates_with_what_the_node_offers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        offered: list[str] | None, expected: str) -> None:
    negotiated: list[str] = []
    real_get_kex = asyncssh.connection.get_kex

    def spy(conn, alg, *args):  # type: ignore[no-untyped-def]
        negotiated.append(alg.decode())
        return real_get_kex(conn, alg, *args)

    monkeypatch.setattr(asyncssh.connection, "get_kex", spy)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key.write_private_key(str(tmp_path / "id"))
    extra = {"kex_algs": offered} if offered else {}
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()), **extra)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(tmp_path / "id", port=port, connect_timeout=10)
    try:
        await pool.get("node", "127.0.0.1")
        assert set(negotiated) == {expected}  # both ends picked it
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()

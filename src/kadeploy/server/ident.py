"""RFC 1413 ident lookups (room `server`, reference 1.7).

The server connects to port 113 of the client host, asks
`<client port>, <server port>` and expects `... : USERID : <os> : <user>`.
Everything is bounded by one timeout (10 s in Kadeploy3).
"""

from __future__ import annotations

import asyncio


async def ident_user(client_host: str, client_port: int, server_port: int, *, ident_port: int = 113,
                     timeout: float = 10.0) -> str | None:
    """The user the ident server of `client_host` reports for this connection, or None."""
    try:
        return await asyncio.wait_for(_query(client_host, client_port, server_port, ident_port), timeout)
    except (OSError, asyncio.TimeoutError, UnicodeDecodeError, ValueError):
        return None


async def _query(client_host: str, client_port: int, server_port: int, ident_port: int) -> str | None:
    reader, writer = await asyncio.open_connection(client_host, ident_port)
    try:
        writer.write(f"{client_port}, {server_port}\r\n".encode())
        await writer.drain()
        line = (await reader.readline()).decode("ascii").strip()
    finally:
        writer.close()
    parts = [part.strip() for part in line.split(":")]
    if len(parts) < 4 or parts[1].upper() != "USERID":
        return None
    ports = [p.strip() for p in parts[0].split(",")]
    if ports != [str(client_port), str(server_port)]:
        return None
    user = ":".join(parts[3:]).strip()
    return user or None

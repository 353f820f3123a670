"""testbed room: the firmware's network clients, TFTP (RFC 1350 + 2347/2348) and HTTP.

Why our own clients: the node's ROM must fetch from the node's own address
(inside its network namespace), and one asyncio daemon emulates every node's
firmware, so sockets are created inside the node's netns (`setns` on the
creating thread only) and then driven by the daemon's event loop — no process
and no thread per fetch. Every wait has a timeout. Imports nothing from other rooms.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import re
import socket
import struct
import threading
from pathlib import Path
from urllib.parse import urlsplit

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
MAX_FILE = 256 * 1024 * 1024
_setns_lock = threading.Lock()
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class FetchError(Exception):
    """A file could not be fetched (missing, timeout, protocol error); the ROM moves on."""


def socket_in_netns(netns: str | None, kind: int) -> socket.socket:
    """A non-blocking IPv4 socket living in network namespace `netns` (None: ours)."""
    if netns is None:
        sock = socket.socket(socket.AF_INET, kind)
        sock.setblocking(False)
        return sock
    with _setns_lock, open("/proc/thread-self/ns/net") as own, open(NETNS_DIR / netns) as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
        try:
            sock = socket.socket(socket.AF_INET, kind)
        finally:
            if _libc.setns(own.fileno(), CLONE_NEWNET) != 0:  # pragma: no cover - would be fatal
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    sock.setblocking(False)
    return sock


async def tftp_get(server: str, filename: str, *, netns: str | None = None, port: int = 69,
                   timeout: float = 1.0, retries: int = 3, blksize: int = 1468) -> bytes:
    """Read `filename` from a TFTP server; raises FetchError on error packets or silence."""
    loop = asyncio.get_running_loop()
    sock = socket_in_netns(netns, socket.SOCK_DGRAM)
    try:
        request = (struct.pack("!H", 1) + filename.encode() + b"\0octet\0"
                   + b"blksize\0" + str(blksize).encode() + b"\0")
        peer: tuple[str, int] | None = None
        size = 512
        expected = 1
        data = bytearray()
        last_sent = request
        last_target: tuple[str, int] = (server, port)
        await loop.sock_sendto(sock, request, last_target)
        attempts = 0
        while True:
            try:
                packet, address = await asyncio.wait_for(loop.sock_recvfrom(sock, 65536), timeout)
            except asyncio.TimeoutError:
                attempts += 1
                if attempts > retries:
                    raise FetchError(f"tftp://{server}/{filename}: timeout") from None
                await loop.sock_sendto(sock, last_sent, last_target)
                continue
            if address[0] != server or (peer is not None and address != peer) or len(packet) < 4:
                continue
            attempts = 0
            opcode, number = struct.unpack("!HH", packet[:4])
            if opcode == 5:
                message = packet[4:].split(b"\0", 1)[0].decode(errors="replace")
                raise FetchError(f"tftp://{server}/{filename}: error {number}: {message}")
            peer = address
            last_target = address
            if opcode == 6:  # OACK: options accepted
                fields = packet[2:].split(b"\0")
                options = dict(zip(fields[0::2], fields[1::2]))
                if b"blksize" in options:
                    size = int(options[b"blksize"])
                last_sent = struct.pack("!HH", 4, 0)
                await loop.sock_sendto(sock, last_sent, address)
                continue
            if opcode != 3:
                raise FetchError(f"tftp://{server}/{filename}: unexpected opcode {opcode}")
            last_sent = struct.pack("!HH", 4, number)
            await loop.sock_sendto(sock, last_sent, address)
            if number != expected % 65536:
                continue  # duplicate of a block already acknowledged
            data += packet[4:]
            expected += 1
            if len(data) > MAX_FILE:
                raise FetchError(f"tftp://{server}/{filename}: larger than {MAX_FILE} bytes")
            if len(packet) - 4 < size:
                return bytes(data)
    finally:
        sock.close()


async def http_get(url: str, *, netns: str | None = None, timeout: float = 5.0) -> bytes:
    """GET `url` (plain HTTP/1.0); any status but 200 raises FetchError."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise FetchError(f"{url}: only http:// URLs are supported")
    loop = asyncio.get_running_loop()
    sock = socket_in_netns(netns, socket.SOCK_STREAM)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (parts.hostname, parts.port or 80))
            reader, writer = await asyncio.open_connection(sock=sock)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nUser-Agent: iPXE-testbed\r\n\r\n".encode())
            await writer.drain()
            response = await reader.read(MAX_FILE + 65536)
    except (OSError, TimeoutError) as exc:
        raise FetchError(f"{url}: {exc or 'timeout'}") from None
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        first_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        raise FetchError(f"{url}: {first_line}")
    return body


async def fetch(location: str, server: str, *, netns: str | None = None) -> bytes:
    """Fetch a path the way a profile names it: `http://...` over HTTP, else TFTP from `server`.

    GRUB's device syntax is understood too: `(http,host[:port])/path`,
    `(tftp,host)/path` and `(pxe)/path` (the DHCP server's TFTP).
    """
    device = re.fullmatch(r"\((https?|tftp),([^)]+)\)(/.*)", location)
    if device:
        scheme, host, path = device.groups()
        if scheme.startswith("http"):
            return await http_get(f"{scheme}://{host}{path}", netns=netns)
        return await tftp_get(host, path.lstrip("/"), netns=netns)
    if location.startswith("http://"):
        return await http_get(location, netns=netns)
    path = location
    for prefix in ("(pxe)", f"tftp://{server}"):
        if path.startswith(prefix):
            path = path[len(prefix):]
    return await tftp_get(server, path.lstrip("/") or path, netns=netns)

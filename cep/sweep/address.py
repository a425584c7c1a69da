"""`--address` checked in seconds before Ray starts: a Ray head answers there, not something else.

ray.init retries for minutes before it gives up, also when the port belongs to another server (a web
server, a stalled process). A Ray head's GCS is a gRPC (HTTP/2) server: it answers the HTTP/2 client
preface with a SETTINGS frame at once; anything else is not a Ray head.
"""

from __future__ import annotations

import os
import socket

ADDRESS_TIMEOUT_S = 10.0  # a live Ray head accepts a connection at once
ANSWER_TIMEOUT_S = 5.0  # a gRPC server sends its SETTINGS frame as soon as the connection opens
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags, stream 0
HTTP2_SETTINGS = 0x04  # the frame type, byte 3 of a frame header


def address_problems(address: str | None) -> list[str]:
    """A Ray head that does not answer, or something else answering there, said in seconds (one line)."""
    if address is None or address in ("auto", "local") or "://" in address:
        return []
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return [f"--address {address}: expected HOST:PORT of the Ray head (e.g. 10.0.0.5:6379), or auto"]
    fix = "check the address, and that `ray start --head` runs on that machine (its port, 6379 by default)"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return []  # a TLS handshake comes first: the plain HTTP/2 check does not apply
            conn.settimeout(ANSWER_TIMEOUT_S)
            conn.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            reply = _read_up_to(conn, 9)
    except TimeoutError:
        if "conn" not in locals():
            return [f"--address {address}: no Ray head answers there (no connection in {ADDRESS_TIMEOUT_S:g} s); {fix}"]
        return [f"--address {address}: something accepts connections there but does not answer like a Ray head "
                f"(silent for {ANSWER_TIMEOUT_S:g} s); {fix}"]
    except (ConnectionResetError, BrokenPipeError):
        if "conn" in locals():  # connected, then dropped at once: a server, but not a Ray head
            return [f"--address {address}: not a Ray head (it closed the connection); {fix}"]
        return [f"--address {address}: no Ray head answers there (connection reset); {fix}"]
    except OSError as e:
        return [f"--address {address}: no Ray head answers there ({e.strerror or type(e).__name__}); {fix}"]
    if len(reply) == 9 and reply[3] == HTTP2_SETTINGS:
        return []
    what = "a web server (HTTP/1)" if reply.startswith((b"HTTP/", b"<")) else (
        "it closed the connection" if not reply else f"it answered {reply[:9]!r}")
    return [f"--address {address}: not a Ray head ({what}); {fix}"]


def _read_up_to(conn: socket.socket, n: int) -> bytes:
    """Up to n bytes (fewer when the peer closes first)."""
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data

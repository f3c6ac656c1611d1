"""A lab container's process: holds the published ports the daemon bound and answers on TCP.

`python3 -m anywhere.lab.agents.docker_container NAME FD...`: each FD is a socket the daemon
bound to a host port. A TCP connection gets a one-line HTTP answer naming the container, so a
test (or an operator) can see that the port is served by this container. SIGTERM ends it.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Sequence


def answer(name: str) -> bytes:
    body = f"[lab] container {name}\n".encode()
    return (
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def serve(sock: socket.socket, reply: bytes) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                conn.recv(4096)
                conn.sendall(reply)
            except OSError:
                continue


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: docker_container NAME FD...", file=sys.stderr)
        return 2
    reply = answer(args[0])
    for fd in args[1:]:
        sock = socket.socket(fileno=int(fd))
        if sock.type == socket.SOCK_STREAM:
            threading.Thread(target=serve, args=(sock, reply), daemon=True).start()
    # UDP sockets are only held, as a published port that nothing answers on.
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

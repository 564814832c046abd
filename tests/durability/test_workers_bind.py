"""``steer serve --workers N`` binds one socket per worker on one port (SO_REUSEPORT), and the kernel spreads
new connections over them."""

from __future__ import annotations

import socket

import pytest

from steer.server.workers import bind

REUSE_PORT = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT on this system")


@REUSE_PORT
def test_workers_get_sockets_of_their_own_on_one_port_and_connections_reach_each() -> None:
    socks = bind("127.0.0.1", 0, 2)
    try:
        assert len(socks) == 2
        port = socks[0].getsockname()[1]
        assert port and socks[1].getsockname()[1] == port  # port 0: the second joins the first's port
        assert all(s.get_inheritable() for s in socks)
        for s in socks:
            s.settimeout(0.2)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        accepted = [0, 0]
        for i, s in enumerate(socks):
            while True:
                try:
                    conn, _ = s.accept()
                except TimeoutError:
                    break
                conn.close()
                accepted[i] += 1
        for c in clients:
            c.close()
        assert sum(accepted) == 40 and min(accepted) > 0, accepted  # all 40 on one: 2 ** -39 by chance
    finally:
        for s in socks:
            s.close()


@REUSE_PORT
def test_a_second_server_may_not_join_the_port_of_the_first() -> None:
    socks = bind("127.0.0.1", 0, 2)
    try:
        with pytest.raises(OSError):
            bind("127.0.0.1", socks[0].getsockname()[1], 2)
    finally:
        for s in socks:
            s.close()


def test_one_worker_binds_one_plain_socket_and_a_taken_port_is_an_error() -> None:
    (sock,) = bind("127.0.0.1", 0)
    try:
        assert not sock.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_REUSEPORT", socket.SO_REUSEADDR)) or (
            not hasattr(socket, "SO_REUSEPORT")
        )
        with pytest.raises(OSError):
            bind("127.0.0.1", sock.getsockname()[1], 2)  # no worker may join a port another server holds
    finally:
        sock.close()

"""Ports for the embedded servers: picked where nothing can take them before the server binds,
and a server that finds its port taken says so in the error, not only an exit code."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from feedbackloop.embedded import SeaweedS3, free_seaweed_ports
from feedbackloop.ports import _ephemeral_low, free_port, free_port_block


def test_ports_are_below_the_ephemeral_range_free_and_never_handed_out_twice() -> None:
    low = _ephemeral_low()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= port < low for port in ports)
    for port in ports[:20]:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_a_block_skips_a_port_that_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        for _ in range(50):
            base = free_port_block(4, offsets=(0, 100))
            assert held not in {base + offset + i for offset in (0, 100) for i in range(4)}


def test_seaweed_ports_cover_every_listener_and_its_grpc_side() -> None:
    s3_port, base = free_seaweed_ports()
    assert s3_port == base + SeaweedS3.PORTS - 1
    assert s3_port + SeaweedS3.GRPC_OFFSET < _ephemeral_low()


def test_seaweed_that_finds_its_port_taken_names_it_in_the_error(tmp_path: Path) -> None:
    s3_port, base = free_seaweed_ports()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", base))
        taken.listen()
        store = SeaweedS3(tmp_path / "seaweed", s3_port=s3_port, port_base=base, bucket="b")
        try:
            with pytest.raises(RuntimeError, match="SeaweedFS exited with code") as error:
                store.start(timeout=30)
        finally:
            store.stop()
    assert f"port {base}" in str(error.value)
    assert str(store.log_path) in str(error.value)

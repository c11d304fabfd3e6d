"""Free TCP ports on 127.0.0.1 for servers of ours (tests, benchmarks, the embedded parts)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


_handed_out: set[int] = set()
_LOWEST_PORT = 10_000


def _ephemeral_low() -> int:
    """The first port the kernel gives to outgoing connections (Linux: 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(size: int = 1, *, offsets: tuple[int, ...] = (0,)) -> int:
    """A base port such that `base + offset + i` is free for each offset and each i < size.

    Ports come from below the kernel's ephemeral range, so an outgoing connection can never
    take one between this check and the server's bind (a port from `bind(0)` can be taken that
    way, and a server that finds its port taken exits), and no port is handed out twice by one
    process.
    """
    highest = _ephemeral_low() - max(offsets) - size
    if highest <= _LOWEST_PORT:
        raise RuntimeError("the ephemeral port range leaves no room for a block of ports")
    for _ in range(1000):
        base = random.randrange(_LOWEST_PORT, highest)
        ports = [base + offset + i for offset in offsets for i in range(size)]
        if not _handed_out.intersection(ports) and all(_bindable(port) for port in ports):
            _handed_out.update(ports)
            return base
    raise RuntimeError("no free block of ports")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server of ours (see `free_port_block`)."""
    return free_port_block()

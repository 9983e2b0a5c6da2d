"""Free ports for the local cluster's servers come from outside the kernel's ephemeral range,
where an outgoing connection could take one before the server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

from drover_localcluster.processes import free_port


def test_free_ports_are_bindable_and_outside_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        port = free_port()
        assert 10000 <= port < min(low, 32768)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))

"""MQTT client settings both sides need: packets sent at once, enough QoS 1 publishes in flight."""

from __future__ import annotations

import socket
from typing import Any

import aiomqtt

__all__ = ["MAX_INFLIGHT", "tune_client"]

# QoS 1 publishes awaiting PUBACK before paho queues more (paho's default is 20): RPC replies to
# 50 tills at once, or a till's burst of requests, would otherwise wait for the first 20 acks.
MAX_INFLIGHT = 200


def tune_client(client: aiomqtt.Client) -> aiomqtt.Client:
    """Turn Nagle's algorithm off on the client's socket when paho opens it, and warn about
    queued publishes only beyond what may be in flight (aiomqtt warns from 10).

    paho writes to a plain socket (not an asyncio transport, which would set TCP_NODELAY
    itself), so a small PUBLISH or PUBACK written while an earlier one is unacknowledged
    waits for the peer's delayed ACK: 40 ms on Linux, twice per RPC round trip. Measured
    with Mosquitto on this machine, one request/reply went from 88 ms to 0.7 ms
    (tests/bench/member_rpc.py). The broker needs the same (`set_tcp_nodelay true`).
    """
    paho = client._client  # aiomqtt 2 has no hook for socket options; paho's socket-open callback is one
    opened = paho.on_socket_open

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):  # TLS sockets too; not a websocket wrapper
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if opened is not None:
            opened(paho_client, userdata, sock)

    paho.on_socket_open = on_socket_open
    client.pending_calls_threshold = MAX_INFLIGHT
    return client

#!/usr/bin/env python3
"""Broker memory with many idle connections and many parked long-poll fetches.

    bench/idle_connections.py HOST:PORT BROKER_PID [CONNECTIONS]

Opens CONNECTIONS (default 10,000) idle TCP connections and reports the broker's RSS
growth per connection; then sends, on each, a Fetch (v4, max_wait 30 s, min_bytes 1) for
an empty partition so every one parks in the broker, and reports the growth per parked
fetch. The topic `idle-bench` must exist with one partition and no data. Needs an open-files
limit above CONNECTIONS for this process and the broker (the broker's
`max.connections`/`max.connections.per.ip` must allow them too).
"""
import socket
import struct
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fetch_request(correlation_id, topic):
    client = b"idle-bench"
    header = struct.pack(">hhih", 1, 4, correlation_id, len(client)) + client
    name = topic.encode()
    body = struct.pack(">iiiib", -1, 30_000, 1, 1 << 20, 0)
    body += struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">iiqi", 1, 0, 0, 1 << 20)
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def settle(pid):
    """RSS once it stops moving (the broker handles the last requests asynchronously)."""
    last = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss_kib(pid)
        if now == last:
            break
        last = now
    return last


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    pid = int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    base = settle(pid)
    socks = [socket.create_connection((host, int(port))) for _ in range(n)]
    idle = settle(pid)
    for i, s in enumerate(socks):
        s.sendall(fetch_request(i, "idle-bench"))
    parked = settle(pid)
    print(f"connections: {n}")
    print(f"broker RSS: {base} KiB at start, {idle} KiB with {n} idle connections, "
          f"{parked} KiB with a parked fetch on each")
    print(f"per idle connection: {(idle - base) * 1024 / n:.0f} B; "
          f"per parked fetch (on top): {(parked - idle) * 1024 / n:.0f} B")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()

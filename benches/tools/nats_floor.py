#!/usr/bin/env python3
"""What nats-server itself spends per JetStream message, with no hotstock:
publishes N messages of SIZE bytes (batches of 256, one write each) to a
file-stored stream of a nats-server this script starts on a loopback port,
and reads the server's CPU ticks (/proc, 1/100 s) from the first publish
until the stream holds them all. Each way of publishing is measured ROUNDS
times, alternated:
  id+ack-each    Nats-Msg-Id, a reply (JetStream acknowledgement) per message
  id+ack-last    Nats-Msg-Id, a reply for the batch's last message only
  chain          as id+ack-last, plus Nats-Expected-Last-Msg-Id of the one
                 before (what hotstock's publisher sends)
  no-id+ack-last no Nats-Msg-Id (no duplicate tracking), reply on the last
  benches/tools/nats_floor.py [N] [SIZE] [ROUNDS]
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

BATCH = 256
MODES = {
    "id+ack-each": dict(id=True, reply="all"),
    "id+ack-last": dict(id=True, reply="last"),
    "chain": dict(id=True, reply="last", chain=True),
    "no-id+ack-last": dict(id=False, reply="last"),
}


def ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def read_until(sock, predicate):
    buf = b""
    while not predicate(buf):
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("nats-server closed the connection")
        buf += chunk
    return buf


def frame(mode, i, last, body):
    reply = b" _I.%d" % (i + 1) if mode["reply"] == "all" or last else b""
    if not mode["id"]:
        return b"PUB ev.created%s %d\r\n" % (reply, len(body)) + body + b"\r\n"
    headers = b"NATS/1.0\r\nNats-Msg-Id: feed-%d\r\n" % i
    if mode.get("chain") and i % BATCH:
        headers += b"Nats-Expected-Last-Msg-Id: feed-%d\r\n" % (i - 1)
    headers += b"\r\n"
    line = b"HPUB ev.created%s %d %d\r\n" % (reply, len(headers), len(headers) + len(body))
    return line + headers + body + b"\r\n"


def run(server, mode, n, size):
    store = tempfile.mkdtemp()
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    nats = subprocess.Popen([server, "-a", "127.0.0.1", "-p", str(number), "-js", "-sd", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", number))
                break
            except OSError:
                time.sleep(0.05)
        read_until(sock, lambda b: b"\r\n" in b)
        sock.sendall(b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\nPING\r\n')
        read_until(sock, lambda b: b"PONG" in b)
        sock.sendall(b"SUB _I.* 1\r\n")
        config = json.dumps({"name": "FLOOR", "subjects": ["ev.>"], "storage": "file"}).encode()
        sock.sendall(b"PUB $JS.API.STREAM.CREATE.FLOOR _I.0 %d\r\n%s\r\n" % (len(config), config))
        read_until(sock, lambda b: b"MSG" in b and b.endswith(b"\r\n"))
        body = b"x" * size
        start, wall = ticks(nats.pid), time.time()
        for first in range(0, n, BATCH):
            end = min(n, first + BATCH)
            sock.sendall(b"".join(frame(mode, i, i == end - 1, body) for i in range(first, end)))
            expect = end - first if mode["reply"] == "all" else 1
            read_until(sock, lambda b: b.count(b"MSG ") >= expect and b.endswith(b"\r\n"))
        sock.sendall(b"PUB $JS.API.STREAM.INFO.FLOOR _I.0 2\r\n{}\r\n")
        info = read_until(sock, lambda b: b"last_seq" in b and b.endswith(b"\r\n"))
        stored = int(info.split(b'"last_seq":')[1].split(b",")[0])
        assert stored == n, f"the stream holds {stored} of {n}"
        return (ticks(nats.pid) - start) * 1e4 / n, time.time() - wall
    finally:
        nats.terminate()
        nats.wait()
        subprocess.run(["rm", "-rf", store])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 330
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    server = next((p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.path.exists(p)), None)
    if server is None:
        raise SystemExit("install nats-server (apt-get install nats-server)")
    results = {name: [] for name in MODES}
    for _ in range(rounds):
        for name, mode in MODES.items():
            us, wall = run(server, mode, n, size)
            results[name].append(us)
            print(f"{name}: nats-server {us:.2f} us/message ({n} in {wall:.2f} s)", flush=True)
    for name, values in results.items():
        values.sort()
        print(f"median {name}: {values[len(values) // 2]:.2f} us/message, runs {', '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()

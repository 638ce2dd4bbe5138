#!/usr/bin/env python3
"""fdatasync after a small write: appended to a growing file versus
written into a file already filled with zeros (no size change, so no
metadata commit). Run it on the disk that holds the data directory:
  benches/tools/fsync_append_vs_prezeroed.py [directory] [writes] [bytes]
Prints p50/p99 latency and system CPU per write+fdatasync, twice each."""
import os
import resource
import statistics
import sys
import time


def run(path, prezero, n, size):
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    if prezero:
        os.write(fd, b"\0" * (n * size + 4096))
        os.fdatasync(fd)
        os.lseek(fd, 0, 0)
    block = b"x" * size
    latencies = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        start = time.perf_counter()
        os.write(fd, block)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.close(fd)
    os.remove(path)
    latencies.sort()
    return (statistics.median(latencies) * 1e6, latencies[int(n * 0.99)] * 1e6,
            (after.ru_stime - before.ru_stime) / n * 1e6)


directory = sys.argv[1] if len(sys.argv) > 1 else "."
writes = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
size = int(sys.argv[3]) if len(sys.argv) > 3 else 2048
path = os.path.join(directory, "fsync-probe.bin")
for _ in range(2):
    for label, prezero in (("append", False), ("pre-zeroed", True)):
        p50, p99, sys_us = run(path, prezero, writes, size)
        print(f"{label:11} p50 {p50:4.0f} us  p99 {p99:4.0f} us  system CPU {sys_us:4.1f} us per write+fdatasync")

#!/usr/bin/env python3
"""Runs a command and prints its peak RSS (MiB), peak open file descriptors and wall time.

Usage: bench/peak.py CMD [ARGS...]   -> prints "RSS_MIB FDS SECONDS EXIT_CODE" on the last line.
The fd count is sampled from /proc/PID/fd every 5 ms (a peak between samples can be missed);
the RSS is the kernel's own high-water mark (wait4's ru_maxrss), exact.
"""
import os
import sys
import time

pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
start = time.time()
peak_fds = 0
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    try:
        peak_fds = max(peak_fds, len(os.listdir(f"/proc/{pid}/fd")))
    except OSError:
        pass
    time.sleep(0.005)
code = os.waitstatus_to_exitcode(status)
print(f"{usage.ru_maxrss / 1024:.1f} {peak_fds} {time.time() - start:.2f} {code}")

"""`run_measured` and `process_tree`: wall time and peak memory of a command's whole process tree."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from equipoise.core.benchmark import process_tree, run_measured

linux_only = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").is_file(), reason="PSS is a Linux figure (/proc/PID/smaps_rollup)"
)

# A parent that touches 150 MiB, starts a child that touches 100 MiB, and waits for it: at the
# moment both hold their buffers, the tree holds at least 250 MiB more than two bare interpreters.
PARENT = """
import subprocess, sys, time
buffer = bytearray(150 * 2**20)
child = subprocess.Popen([sys.executable, "-c", "b = bytearray(100 * 2**20); import time; time.sleep(1.5)"])
child.wait()
"""


@linux_only
def test_peak_memory_covers_the_children_and_wall_time_the_whole_run():
    measured = run_measured([sys.executable, "-c", PARENT], interval=0.05)
    assert measured["returncode"] == 0
    assert measured["peak_processes"] == 2
    # Two interpreters at rest take a few MiB each; their buffers are private, so PSS and RSS both see them.
    assert 250 <= measured["peak_pss_mb"] <= measured["peak_rss_mb"] < 250 + 2 * 60
    assert 1.5 <= measured["wall_s"] < 10


@linux_only
def test_a_failing_command_reports_its_exit_code():
    measured = run_measured([sys.executable, "-c", "import sys; sys.exit(3)"], interval=0.05)
    assert measured["returncode"] == 3
    assert measured["peak_processes"] <= 1


@linux_only
def test_process_tree_lists_descendants_only():
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        deadline = time.monotonic() + 5
        while child.pid not in process_tree(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        assert process_tree(child.pid) == [child.pid]
        assert os.getppid() not in tree
    finally:
        child.kill()
        child.wait()


def test_single_thread_worker_limits_torch_and_the_loaded_thread_pools():
    import subprocess

    code = (
        "import numpy, torch, threadpoolctl\n"
        "from equipoise.core.benchmark import single_thread_worker\n"
        "single_thread_worker()\n"
        "pools = {pool['num_threads'] for pool in threadpoolctl.threadpool_info()}\n"
        "print(torch.get_num_threads(), sorted(pools))\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    assert result.stdout.split("\n")[0] == "1 [1]"

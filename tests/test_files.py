"""The run-directory lock: one run writes a run directory at a time, and a killed run never blocks its resume."""
import os
import signal
import subprocess
import sys
import time

import pytest

from multitask.errors import ConfigError
from multitask.files import LOCK_FILE, run_lock


def test_a_second_run_in_the_same_directory_is_refused(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(ConfigError, match=rf"another run \(pid {os.getpid()}\) is writing to"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released at the end of the first
        assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())


def test_the_lock_of_a_killed_run_is_gone(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from multitask.files import run_lock\n"
                               "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
        with run_lock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    start = time.monotonic()
    with run_lock(tmp_path):
        assert time.monotonic() - start < 5

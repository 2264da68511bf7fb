"""Temporary files left by killed result writers are removed by the next write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from taskyard import writers
from taskyard.results import LocalResultStorage

WRITER = """
import sys
from taskyard.results import LocalResultStorage
storage = LocalResultStorage(sys.argv[1])
data = b"x" * (50 * 1024 * 1024)
print("ready", flush=True)
i = 0
while True:
    storage.write(f"big-{i % 3}", data)
    i += 1
"""


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


class TestKilledWriters:
    def test_kill_9_mid_write_leaves_nothing_after_the_next_write(self, tmp_path: Path) -> None:
        """A writer killed with SIGKILL during 50 MB writes: its .tmp files go at the next write."""
        left: list[str] = []
        for _ in range(10):  # most kills land mid-write; stop once one has left a file
            proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            left = _temp_files(tmp_path)
            if left:
                break
        assert left, "no kill landed mid-write in 10 tries"
        LocalResultStorage(tmp_path).write("after", b"ok")
        assert _temp_files(tmp_path) == []
        assert (tmp_path / "after").read_bytes() == b"ok"


class TestWhatIsStale:
    def test_a_dead_local_writer_is_stale_at_once(self, tmp_path: Path) -> None:
        """A temp file named for a process of this host that no longer exists is removed."""
        name = writers.temp_name("rec").replace(f"~{os.getpid()}~", f"~{_dead_pid()}~")
        (tmp_path / name).write_bytes(b"half")
        assert writers.sweep_local(tmp_path) == [name]

    def test_a_live_writer_is_left_alone(self, tmp_path: Path) -> None:
        """A temp file of a process that is alive (maybe mid-write) is kept."""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            name = writers.temp_name("rec").replace(f"~{os.getpid()}~", f"~{child.pid}~")
            (tmp_path / name).write_bytes(b"half")
            assert writers.sweep_local(tmp_path) == [] and (tmp_path / name).exists()
        finally:
            child.kill()
            child.wait()

    def test_another_hosts_file_goes_only_when_old(self, tmp_path: Path) -> None:
        """Another host's temp file cannot be checked: it is removed once older than a day."""
        fresh, old = ".a~otherhost~123~ab.tmp", ".b~otherhost~123~cd.tmp"
        for name in (fresh, old):
            (tmp_path / name).write_bytes(b"half")
        day_ago = time.time() - writers.MAX_AGE - 60
        os.utime(tmp_path / old, (day_ago, day_ago))
        assert writers.sweep_local(tmp_path) == [old]

    def test_records_and_foreign_files_are_never_touched(self, tmp_path: Path) -> None:
        """Only names of the temp-file pattern are considered; records and other files stay."""
        for name in ("record", ".hidden", "x.tmp", ".y.tmp"):
            (tmp_path / name).write_bytes(b"keep")
            os.utime(tmp_path / name, (0, 0))
        assert writers.sweep_local(tmp_path) == []
        assert len(list(tmp_path.iterdir())) == 4

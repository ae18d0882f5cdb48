"""A one-rank group made in-process (tests, `mm-gpg eval`, benches) leaves no rendezvous variables
behind: a child process that inherits the environment would take them for a launcher's and try
to listen on the parent's port (EADDRINUSE, seen as flaky CLI tests)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_child_process_makes_its_own_group_after_the_parent_made_one(dist):
    assert dist.world_size == 1
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        assert key not in os.environ, key
    code = ("from mm_gpg.distributed import init_distributed; "
            "d = init_distributed(); print('world', d.world_size, d.sum([2.0]))")
    child = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "world 1 [2.0]" in child.stdout

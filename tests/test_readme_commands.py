"""Every shell command that README.md and docs/*.md show runs, offline on a CPU.

The rules for the Markdown (a test below enforces each):

- every fenced block names its language: ```bash for commands, ```text for output and diagrams,
  ```yaml / ```python for file contents. Only ```bash blocks are run.
- a ```bash block runs unless the line before its fence (blank lines aside) is
  `<!-- not run: REASON -->`: for commands that need a GPU, the hub or the network, or minutes.
  Nothing is skipped without such a marker, and the skipped blocks are listed in this test's output.
- `<!-- run with: tiny -->` (or `<!-- run with: KEY=VALUE ... -->`) before a block appends the
  tiny training settings below (or those overrides) to every `mm-gpg train` command in it, so
  that a training the docs show runs in seconds with everything else as written. This is how the
  README's command 1, the default training (minutes as written), is run here.
- the set-up steps of a command line (`python3 -m venv .venv`, `pip install ...`) are not run:
  they need the package index, and this test runs inside the environment they make. They are
  checked instead: the extras they name exist in pyproject.toml and the constraint files exist.
  The README's command 2 (the test suite itself) is marked not run; .ci/run runs it, and a test
  below holds .ci/run to that exact line.

The blocks of one page run in order, in one scratch folder per page (with the repository's
top-level folders linked in and this environment's `mm-gpg` first on PATH), so a page may create
an input in one block and use it in the next.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))

# `<!-- run with: tiny -->`: the default recipe's training cut to seconds (2 warm-start and 2 GPG
# steps of 2 prompts x 2 samples, 4 new tokens, 2 held-out problems), everything else unchanged.
TINY_TRAINING = ["train.steps=2", "train.prompts_per_step=2", "rollout.group_size=2",
                 "rollout.max_new_tokens=4", "warmstart.steps=2", "warmstart.batch_size=2",
                 "eval.max_new_tokens=4", "eval.samples=1", "data.heldout[0].options.size=2",
                 "progress=false"]
BLOCK_TIMEOUT_S = 300

FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(not run|run with):\s*(.*?)\s*-->\s*$")
TRAIN = re.compile(r"(?:mm-gpg|mm_gpg\.cli) train\b")
SETUP_STEP = re.compile(r"^(?:python3? -m venv \S+|(?:\S*/)?pip3? install .*)$")
PIP_INSTALL = re.compile(r"(?:^|/)pip3? install (.*)$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: tuple[str, str] | None  # ("not run", reason) or ("run with", overrides)

    @property
    def where(self) -> str:
        return f"{shown(self.page)}:{self.line}"


def shown(page: Path) -> str:
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else page.name


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the marker comment right before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{shown(page)}:{i + 1}: a fenced block is never closed"
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        found = MARKER.match(lines[before]) if before >= 0 else None
        blocks.append(Block(page, i + 1, language, code + "\n", found.groups() if found else None))
        i = end + 1
    return blocks


def stray_markers(page: Path) -> list[str]:
    """Marker comments that no fenced block follows (a typo would otherwise skip nothing)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    for n, line in enumerate(lines):
        if "<!--" in line and re.search(r"not run|run with", line):
            after = n + 1
            while after < len(lines) and not lines[after].strip():
                after += 1
            if not MARKER.match(line) or after == len(lines) or not FENCE.match(lines[after]):
                found.append(f"{shown(page)}:{n + 1}: {line.strip()}")
    return found


def logical_lines(code: str) -> list[str]:
    """Lines with backslash continuations joined."""
    return code.replace("\\\n", " ").splitlines()


def split_comment(line: str) -> tuple[str, str]:
    """(command, trailing ' # comment'), the comment starting at a '#' outside quotes after a space."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip(), line[k:]
    return line.rstrip(), ""


def prepared_script(block: Block) -> tuple[str, list[str]]:
    """The block as it is run, and the set-up steps taken out of it (checked, not run)."""
    overrides = []
    if block.marker and block.marker[0] == "run with":
        words = block.marker[1].split()
        overrides = TINY_TRAINING + words[1:] if words[:1] == ["tiny"] else words
        assert overrides and all("=" in o for o in overrides), \
            f"{block.where}: `run with:` takes `tiny` and/or KEY=VALUE overrides, not {block.marker[1]!r}"
    out, setup = [], []
    for line in logical_lines(block.code):
        command, comment = split_comment(line)
        steps = command.split(" && ")
        if not (SETUP_STEP.match(steps[0].strip()) or (overrides and TRAIN.search(command))):
            out.append(line)  # as written (heredoc bodies keep their indentation)
            continue
        while steps and SETUP_STEP.match(steps[0].strip()):
            setup.append(steps.pop(0).strip())
        assert steps, f"{block.where}: a line of set-up steps only ({command!r}): nothing here would run"
        command = " && ".join(step.strip() for step in steps)
        if overrides and TRAIN.search(command):
            tail = command[TRAIN.search(command).end():]
            assert not re.search(r"&&|\|\||[|;]", tail), \
                f"{block.where}: `run with:` needs the train command last on its line: {command!r}"
            command += " " + " ".join(shlex.quote(o) for o in overrides)
        out.append(command + ("  " + comment if comment else ""))
    if overrides:
        assert any(TRAIN.search(line) for line in out), f"{block.where}: `run with:` but no `mm-gpg train` in the block"
    return "\n".join(out) + "\n", setup


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in fenced_blocks(page)]


def runnable_pages() -> list[Path]:
    return [page for page in PAGES
            if any(b.language == "bash" and (b.marker or ("",))[0] != "not run" for b in fenced_blocks(page))]


def scratch_folder(tmp_path: Path) -> Path:
    """A working folder that looks like a checkout from the commands' side: the repository's
    top-level entries linked in, `.venv/bin` this environment's scripts; outputs stay here."""
    work = tmp_path / "work"
    work.mkdir()
    for entry in REPO.iterdir():
        if entry.name.startswith(".") or entry.name in ("runs", "outputs", "build") or entry.name.endswith(".egg-info"):
            continue
        (work / entry.name).symlink_to(entry)
    (work / ".venv").mkdir()
    (work / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    return work


# ------------------------------------------------------------------------------ the Markdown rules

def test_every_block_names_its_language_and_every_marker_its_block():
    unlabelled = [b.where for b in all_blocks() if not b.language]
    assert not unlabelled, "fenced blocks without a language (```bash, ```text, ```yaml, ...):\n" + "\n".join(unlabelled)
    stray = [line for page in PAGES for line in stray_markers(page)]
    assert not stray, "marker comments not right before a fenced block, or misspelt:\n" + "\n".join(stray)
    misplaced = [b.where for b in all_blocks() if b.marker and b.language != "bash"]
    assert not misplaced, "run markers before a block that is not ```bash:\n" + "\n".join(misplaced)
    no_reason = [b.where for b in all_blocks() if b.marker and b.marker[0] == "not run" and len(b.marker[1]) < 10]
    assert not no_reason, "`not run:` without a reason:\n" + "\n".join(no_reason)
    skipped = [f"{b.where}: {b.marker[1]}" for b in all_blocks() if b.marker and b.marker[0] == "not run"]
    print("\nblocks not run, each with its reason:\n" + "\n".join(skipped))


def test_the_block_parser_on_a_small_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- not run: needs a GPU here -->\n```bash\ngpu-thing\n```\n\n"
                    "<!-- run with: tiny -->\n\n```bash\n# a comment\nmm-gpg train --config c.yaml a=1 \\\n"
                    "    b=2  # why\n```\n  ```yaml\n  k: v\n  ```\n```text\nout\n```\n", encoding="utf-8")
    gpu, train, conf, out = fenced_blocks(page)
    assert stray_markers(page) == []
    assert (gpu.line, gpu.language, gpu.code, gpu.marker) == (4, "bash", "gpu-thing\n", ("not run", "needs a GPU here"))
    assert (conf.language, conf.code, out.language) == ("yaml", "k: v\n", "text")
    script, setup = prepared_script(train)
    lines = script.splitlines()
    # the comment line is kept; the joined train line gets the overrides before its comment
    assert lines[0] == "# a comment" and setup == []
    assert lines[1].startswith("mm-gpg train --config c.yaml a=1      b=2 train.steps=2 ")
    assert "'data.heldout[0].options.size=2'" in lines[1] and lines[1].endswith("progress=false  # why")
    # set-up steps come off the front of a line; the rest runs
    install = Block(page, 1, "bash", "python3 -m venv .venv && .venv/bin/pip install -q -e . && "
                    ".venv/bin/mm-gpg eval x\n", None)
    assert prepared_script(install) == (".venv/bin/mm-gpg eval x\n",
                                        ["python3 -m venv .venv", ".venv/bin/pip install -q -e ."])
    page.write_text("<!-- not run: typo, no block follows -->\ntext\n", encoding="utf-8")
    assert len(stray_markers(page)) == 1


def test_ci_runs_the_readme_test_command_verbatim():
    readme = REPO / "README.md"
    commands = [line for b in fenced_blocks(readme) if b.language == "bash" for line in logical_lines(b.code)
                if "-m pytest" in line]
    assert len(commands) == 1, commands  # command 2
    assert commands[0] in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_setup_steps_name_real_extras_and_constraint_files():
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
                 .get("optional-dependencies", {}))
    checked = 0
    for block in all_blocks():
        if block.language != "bash":
            continue
        for line in logical_lines(block.code):
            for step in split_comment(line)[0].split(" && "):
                found = PIP_INSTALL.search(step.strip())
                if not found:
                    continue
                words = shlex.split(found.group(1))
                for k, word in enumerate(words):
                    named = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", word)
                    if named and named.group(1):
                        unknown = set(named.group(1).split(",")) - extras
                        assert not unknown, f"{block.where}: extras {unknown} are not in pyproject.toml"
                    if word == "-c":
                        assert (REPO / words[k + 1]).is_file(), f"{block.where}: no constraint file {words[k + 1]}"
                checked += 1
    assert checked >= 3  # the README's two commands and the GPU install at least


def test_own_data_example_is_a_valid_recipe(tmp_path):
    """The README's five-line `table` entry, put in the default recipe, passes `mm-gpg train --check`."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Train on your own data\n", 1)[1].split("\n## ", 1)[0]
    (entry,) = [b for b in fenced_blocks(REPO / "README.md") if b.language == "yaml" and b.code.strip() in section]
    assert len(entry.code.strip().splitlines()) <= 6
    recipe = yaml.safe_load((REPO / "configs" / "tiny_synthetic.yaml").read_text(encoding="utf-8"))
    recipe["data"]["train"] = yaml.safe_load(entry.code)["data"]["train"]
    (tmp_path / "my_recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "mm_gpg.cli", "train", "--config", "my_recipe.yaml", "--check"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ running the pages

@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_page_commands_run(page, tmp_path):
    work = scratch_folder(tmp_path)
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "mm-gpg").exists(), f"no mm-gpg beside {sys.executable}: install the package (README command 2)"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    env.pop("MM_GPG_DEBUG", None)
    for block in fenced_blocks(page):
        if block.language != "bash" or (block.marker and block.marker[0] == "not run"):
            continue
        script, _ = prepared_script(block)
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, env=env,
                                capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        assert result.returncode == 0, (f"{block.where}: exit status {result.returncode}\n--- script\n{script}"
                                        f"--- output (tail)\n{(result.stdout + result.stderr)[-4000:]}")


# ------------------------------------------------------------------------------ links

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_heading_anchors_as_github_makes_them(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n## GPG, step by step\n\n```bash\n# not a heading\n```\n"
                    "### Score another system's predictions\n", encoding="utf-8")
    assert heading_anchors(page) == {"title", "gpg-step-by-step", "score-another-systems-predictions"}


def test_links_stay_inside_the_repository_and_resolve():
    bad = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if re.match(r"\w+:", target) or target.startswith("/") or not resolved.is_relative_to(REPO):
                bad.append(f"{shown(page)}: {target}: outside the repository")
            elif not resolved.exists():
                bad.append(f"{shown(page)}: {target}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
                bad.append(f"{shown(page)}: {target}: no heading with that anchor")
    assert not bad, "\n".join(bad)

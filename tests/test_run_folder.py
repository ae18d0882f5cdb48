"""A run folder explains itself (issue 18): the resolved config (loadable by --config), run.json
(command, versions, git commit), rollouts.jsonl with thumbnails, and `mm-gpg plot` / `view` of it.

One tiny `mm-gpg train` (2 steps) serves every test of the module."""
import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from test_cli_train import REPO, run_cli, tiny_overrides


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("run18")
    result = run_cli("train", "--config", str(REPO / "configs/tiny_synthetic.yaml"),
                     *tiny_overrides(tmp, tiny_model_dir), "warmstart.steps=0", "logging.rollouts_every=2",
                     "logging.tensorboard=false", cwd=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


def test_the_resolved_config_reruns_the_run(run_dir):
    from mm_gpg.config import load_config, to_dict
    config = load_config(run_dir / "config.yaml")
    assert config.output_dir == str(run_dir) and config.train.steps == 2 and config.logging.rollouts_every == 2
    # every setting, not only those given: the file alone reproduces the run
    again = load_config(REPO / "configs/tiny_synthetic.yaml", [f"output_dir={run_dir}"])
    assert set(to_dict(config)) == set(to_dict(again))
    assert not (run_dir / "tensorboard").exists()  # logging.tensorboard=false


def test_run_json_names_the_command_versions_and_commit(run_dir):
    import subprocess
    starts = json.loads((run_dir / "run.json").read_text())["starts"]
    assert len(starts) == 1
    start = starts[0]
    assert start["command"][:3] == ["mm-gpg", "train", "--config"] and "logging.rollouts_every=2" in start["command"]
    assert start["start_step"] == 0
    assert start["versions"]["torch"] and start["versions"]["transformers"] and start["versions"]["python"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert start["git"]["commit"] == head


def test_rollouts_hold_every_group_with_its_image_rewards_and_advantages(run_dir):
    from data_prep.synthetic import TASK_NAMES
    records = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    metrics = {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if "loss" in r}
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert sorted({r["step"] for r in train}) == [1, 2]  # step 1 always, then every 2
    assert sorted({r["step"] for r in evals}) == [0, 2]  # before and after training
    assert len([r for r in evals if r["step"] == 0]) == len(TASK_NAMES)
    for step in (1, 2):
        mine = [r for r in train if r["step"] == step]
        # every group drawn this step: prompts_per_step per draw
        assert len(mine) == 2 * metrics[step]["groups/draws"]
        assert [r["group"] for r in mine] == list(range(len(mine)))
        assert sum(r["in_batch"] for r in mine) == 2
        assert sorted({r["draw"] for r in mine}) == list(range(metrics[step]["groups/draws"]))
        assert all(r["alpha"] == metrics[step]["alpha"] for r in mine)
        for r in mine:
            assert len(r["completions"]) == 2 and r["question"] and r["answer"] is not None
            rewards = [c["reward"] for c in r["completions"]]
            assert r["valid"] == (len(set(rewards)) > 1)
            mean = sum(rewards) / len(rewards)
            # GPG: advantage = reward - group mean (0 for an invalid group)
            assert [c["advantage"] for c in r["completions"]] == pytest.approx([x - mean for x in rewards])
            assert set(r["completions"][0]["components"]) >= {"accuracy", "format"}
        # the logged reward mean is the mean over these completions
        all_rewards = [c["reward"] for r in mine for c in r["completions"]]
        assert sum(all_rewards) / len(all_rewards) == pytest.approx(metrics[step]["reward/mean"])
    for r in records:
        assert r["images"] and all((run_dir / p).is_file() for p in r["images"])
    from PIL import Image
    with Image.open(run_dir / records[0]["images"][0]) as im:
        assert max(im.size) <= 256


def _drawn_fraction(png: Path) -> float:
    """Share of pixels that are not the background white: an empty figure scores ~0."""
    import numpy as np
    from PIL import Image
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("L"))
    return float((pixels < 250).mean())


def test_training_wrote_the_plots_and_plot_compares_runs(run_dir, tmp_path):
    from mm_gpg.plots import FIGURES
    # the run wrote its plots at the end of training
    assert {p.name for p in (run_dir / "plots").iterdir()} == {f for f, _, _ in FIGURES}
    # a second run folder: the same metrics, rewards moved up by 1, so its line sits elsewhere
    other = tmp_path / "other"
    other.mkdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (other / "metrics.jsonl").write_text("".join(
        json.dumps({**r, **({"reward/mean": r["reward/mean"] + 1} if "reward/mean" in r else {})}) + "\n"
        for r in records))
    result = run_cli("plot", str(run_dir), str(other), "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = sorted(Path(line) for line in result.stdout.split())
    assert written == sorted(tmp_path / "cmp" / f for f, _, _ in FIGURES)
    for png in written:
        assert _drawn_fraction(png) > 0.01, png
    # one line per run: the comparison's reward panel draws more than the single run's
    assert _drawn_fraction(tmp_path / "cmp" / "reward.png") > _drawn_fraction(run_dir / "plots" / "reward.png")
    bad = run_cli("plot", str(tmp_path / "nothing"), cwd=tmp_path)
    assert bad.returncode == 2 and "no metrics file" in bad.stderr


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _chromium() -> str:
    import shutil
    found = os.environ.get("MM_GPG_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if not found:
        pytest.skip("no Chromium on this machine (apt-get install chromium; CI installs it): the viewer page is "
                    "checked in a real browser only")
    return found


def _browser(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium: runs the page's script, then dumps the DOM or takes a screenshot."""
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--allow-file-access-from-files", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


class _Cards(HTMLParser):
    """The rendered group cards (class and data-* attributes) and the "showing N" counter."""

    def __init__(self):
        super().__init__()
        self.cards, self.images, self.plots, self._in_shown, self.shown = [], [], [], False, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "group" in (attrs.get("class") or "").split():
            self.cards.append(attrs)
        if tag == "img":
            src = attrs.get("src") or ""
            (self.plots if src.startswith("plots/") else self.images).append(src)
        self._in_shown = attrs.get("id") == "shown"

    def handle_data(self, data):
        if self._in_shown:
            self.shown, self._in_shown = int(data), False


def _dom(page: Path, fragment: str = "") -> _Cards:
    parser = _Cards()
    parser.feed(_browser("--dump-dom", page.resolve().as_uri() + fragment).stdout)
    return parser


def test_view_page_in_a_headless_browser(run_dir, tmp_path):
    result = run_cli("view", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = run_dir / "view.html"
    html_text = page.read_text()
    assert "http://" not in html_text and "https://" not in html_text  # no CDN, no network
    records = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    invalid = [r for r in records if r["kind"] == "train" and not r["valid"]]

    everything = _dom(page)
    assert len(everything.cards) == everything.shown == len(records)
    assert sum("invalid" in c["class"].split() for c in everything.cards) == len(invalid)
    assert set(everything.images) == {p for r in records for p in r["images"]}
    from mm_gpg.plots import FIGURES
    assert everything.plots == [f"plots/{f}" for f, _, _ in FIGURES]
    # filters, set from the URL fragment as a user's bookmark would
    only_invalid = _dom(page, "#valid=invalid")
    assert len(only_invalid.cards) == only_invalid.shown == len(invalid)
    assert all(c["data-valid"] == "false" for c in only_invalid.cards)
    step1_eval = _dom(page, "#step=0&kind=eval")
    assert len(step1_eval.cards) == len([r for r in records if r["kind"] == "eval" and r["step"] == 0]) > 0
    task = records[-1]["task"]
    assert len(_dom(page, f"#task={task}").cards) == len([r for r in records if r["task"] == task])

    shot = tmp_path / "viewer.png"
    _browser("--window-size=1280,1400", f"--screenshot={shot}", page.resolve().as_uri())
    assert _drawn_fraction(shot) > 0.05


def test_view_of_an_eval_output_folder_browses_its_predictions(tmp_path):
    folder = tmp_path / "eval_out"
    folder.mkdir()
    predictions = [{"benchmark": bench, "index": i, "id": f"{bench}-{i}", "question": f"q{i}", "gold": "A",
                    "answer_type": "multiple_choice", "choices": ["x", "y"], "responses": ["<answer>A</answer>", "B?"],
                    "finish_reasons": ["stop", "length"], "scores": [1.0, 0.0],
                    "verdicts": [{}, {"parse_failure": True}]}
                   for bench in ("mathvista", "chartqa") for i in range(3)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    assert run_cli("view", str(folder), cwd=tmp_path).returncode == 0
    page = folder / "view.html"
    assert len(_dom(page).cards) == 6
    assert len(_dom(page, "#task=chartqa").cards) == 3
    missing = run_cli("view", str(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2 and "neither rollouts.jsonl" in missing.stderr

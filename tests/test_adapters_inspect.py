"""`mm-gpg data inspect`: prints samples, writes a contact sheet, fails in one line."""
from __future__ import annotations

import datasets
from PIL import Image

from data_prep.inspect import main
from fixtures_data import hub

datasets.disable_progress_bars()


def test_inspect_prints_samples_and_writes_a_sheet(tmp_path, capsys):
    root = hub.write_mmmu(str(tmp_path / "mmmu"))
    out = tmp_path / "sheet.png"
    assert main(["mmmu", "--path", root, "--n", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "validation_Art_1" in text and "validation_Art_2" in text and "validation_Art_3" not in text
    assert "gold: B" in text and "images=2 (24x16, 20x20)" in text and "choices: A. The first" in text
    sheet = Image.open(out)
    assert sheet.width >= 2 * 200 and sheet.height > 100
    # the tiles carry the images: the first fixture image's colour is on the sheet
    assert hub.PALETTE[0] in {c for _, c in sheet.convert("RGB").getcolors(1 << 20)}


def test_inspect_options_streaming_and_skips(tmp_path, capsys):
    rows = hub.mathverse_rows()
    rows[1]["problem_version"] = "Vision Max"  # a malformed record, skipped and reported
    root = hub.write_mathverse(str(tmp_path / "mv"), rows)
    rc = main(["mathverse", "--path", root, "--split", "testmini", "--on-bad-record", "skip", "--no-sheet",
               "--option", 'versions=["Text Dominant", "Vision Max"]'])
    err = capsys.readouterr().err
    assert rc == 2 and "Vision Max" in err and len(err.strip().splitlines()) == 1
    assert main(["mathverse", "--path", root, "--on-bad-record", "skip", "--no-sheet"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 malformed record" in out and "problem_version" in out
    assert main(["mathverse", "--path", root, "--on-bad-record", "skip", "--streaming", "--n", "1",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()


def test_inspect_synthetic_source(tmp_path, capsys):
    assert main(["synthetic", "--n", "3", "--out", str(tmp_path / "syn.png"),
                 "--option", 'tasks=["count_shapes"]']) == 0
    assert capsys.readouterr().out.count("count_shapes id=") == 3


def test_inspect_errors_are_one_line(tmp_path, capsys):
    cases = [["nosuch"], ["mmmu", "--bogus"], ["mmmu", "--path", str(tmp_path / "missing")],
             ["synthetic", "--path", "x"], ["geometry3k", "--n", "0"], ["mmmu", "--option", "novalue"]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("mm-gpg data inspect: error:"), (argv, err)
    assert main(["geometri3k"]) == 2 and "did you mean 'geometry3k'" in capsys.readouterr().err

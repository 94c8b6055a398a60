"""CLI files: output paths checked before the work, failed runs keep what OUT held, no tracebacks."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from routerl.cli import main

EVAL = ["eval", "--embedder", "hash", "--sample", "3", "--knobs", "0,1"]


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


def test_a_failed_eval_keeps_the_previous_decisions(tmp_path, capsys):
    out = tmp_path / "eo"
    assert _run(EVAL + ["--router", "random,cheapest", "--shuffle-control", "--out", str(out)], capsys)[0] == 0
    before = (out / "decisions.jsonl").read_text()
    shuffled = (out / "decisions_shuffled.jsonl").read_text()
    assert before and shuffled
    # cheapest routes, then a bad option fails the second router: nothing of OUT is touched
    code, err = _run(EVAL + ["--router", "cheapest,knn-probe:k=abc", "--shuffle-control", "--out", str(out)], capsys)
    assert code == 2 and "option 'k' must be int, got 'abc'" in err
    assert (out / "decisions.jsonl").read_text() == before
    assert (out / "decisions_shuffled.jsonl").read_text() == shuffled
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "decisions.jsonl", "decisions_shuffled.jsonl", "metrics.json"]
    # a later run without the shuffle control does not read the earlier run's shuffled rows
    assert _run(EVAL + ["--router", "cheapest", "--out", str(out)], capsys)[0] == 0
    assert not (out / "decisions_shuffled.jsonl").exists()
    assert (out / "decisions.jsonl").read_text() != before


def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    a_dir, a_file = tmp_path / "adir", tmp_path / "afile"
    a_dir.mkdir()
    a_file.write_text("x")
    code, err = _run(EVAL + ["--out", str(a_file / "sub")], capsys)
    assert code == 2 and f"--out: {a_file} is a file" in err
    code, err = _run(EVAL + ["--out", str(a_file)], capsys)
    assert code == 2 and "exists and is not a directory" in err
    build = ["catalog", "build", "--data", str(tmp_path / "missing.jsonl.gz"), "--models", "m"]
    code, err = _run(build + ["--out", str(a_dir)], capsys)
    assert code == 2 and f"--out: {a_dir} is a directory" in err  # before the (missing) data is read
    code, err = _run(["bench", "--requests", "1", "--out", str(a_dir)], capsys)
    assert code == 2 and f"--out: {a_dir} is a directory" in err


def test_unreadable_inputs_name_the_file(tmp_path, capsys):
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    code, err = _run(["catalog", "build", "--data", str(a_dir), "--models", "m", "--out", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and f"{a_dir}: is a directory" in err
    table = tmp_path / "t.jsonl.gz"
    with gzip.open(table, "wt") as fh:
        fh.write('{"prompt_id": "p"}\n')
    for name, data in (("splits.json", b"\xff\xfe{}"), ("splits2.json", None)):
        path = tmp_path / name
        if data is None:
            path.mkdir()
        else:
            path.write_bytes(data)
        code, err = _run(EVAL + ["--data", str(table), "--splits", str(path), "--out", str(tmp_path / "e")], capsys)
        assert code == 2 and str(path) in err and "Traceback" not in err
    bad = tmp_path / "extra.yaml"
    bad.write_bytes(b"\xff: 1\n")
    code, err = _run(["catalog", "build", "--data", str(table), "--models", "m", "--extra", str(bad), "--out", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and f"{bad}: not UTF-8 text (byte 0)" in err


def test_os_errors_end_in_one_line_not_a_traceback(monkeypatch, capsys):
    from routerl.cli import cmd_eval

    def fail(args):
        raise IsADirectoryError(21, "Is a directory", "somewhere")

    monkeypatch.setattr(cmd_eval, "run", fail)
    code, err = _run(["eval", "--out", "x"], capsys)
    assert code == 2 and err.strip() == "routerl: error: Is a directory: somewhere"


def test_flag_ranges_are_named(capsys):
    code, err = _run(EVAL + ["--seed", "-5", "--out", "unused"], capsys)
    assert code == 2 and "--seed must be >= 0, got -5" in err
    for bad in ("-1", "nan", "1e9"):
        code, err = _run(["bench", "--requests", "1", "--call-timeout", bad], capsys)
        assert code == 2 and "--call-timeout must be in (0, 3600]" in err


def test_eval_tools_check_their_flags_before_loading_anything(capsys):
    from routerl.bench.validation import main as validation_main
    from routerl.eval.accept_threshold import main as threshold_main
    from routerl.eval.note_agreement import main as note_main

    for main_of in (note_main, threshold_main):  # were a CliError traceback, after loading the model
        assert main_of(["--checkpoint", "/nope", "--data", "x", "--splits", "y", "--knobs", "x"]) == 2
        assert "--knobs: 'x' is not a number" in capsys.readouterr().err
    assert threshold_main(["--data", "x", "--splits", "y", "--thresholds", "a"]) == 2
    assert "--thresholds must be numbers in [0, 1], got 'a'" in capsys.readouterr().err
    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "grpo_tiny.yaml")
    assert validation_main(["--config", tiny, "--episodes", "0"]) == 2  # was the config's count
    assert "--episodes must be >= 1" in capsys.readouterr().err

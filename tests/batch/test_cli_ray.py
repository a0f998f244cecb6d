"""``pocketqa predict --engine ray`` end to end: a local Ray started for the command and gone after."""

from __future__ import annotations

import time

import pytest

from pocketqa.cli.main import main

pytestmark = pytest.mark.slow


def test_cli_starts_and_stops_its_own_ray(tiny_bert_dir, tmp_path, kit, capsys):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    rows = kit.question_rows()
    kit.write_rows(tmp_path / "in.jsonl", rows)
    before = kit.live_ray_processes()
    argv = ["predict", "--engine", "ray", "--model", str(tiny_bert_dir), "--data", str(tmp_path / "in.jsonl"),
            "--out", str(tmp_path / "out"), "--out-format", "jsonl", "--threads", "1", "--rows-per-batch", "4",
            "--max-seq-length", "96", "--doc-stride", "32", "--max-query-length", "32"]
    assert main(argv) == 0
    assert '"written": 1' in capsys.readouterr().out
    assert not ray.is_initialized()
    deadline = time.monotonic() + 30  # shutdown signals the raylet; give it time to exit
    while kit.live_ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not kit.live_ray_processes() - before
    kit.assert_same_answers(kit.read_outputs(tmp_path / "out"), kit.reference_records(tiny_bert_dir, rows, **kit.WINDOW))

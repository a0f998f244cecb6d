"""The Ray engine on a local Ray (one session for the module): same answers as one process, restarts."""

from __future__ import annotations

import json

import pytest

from pocketqa.batch import engine
from pocketqa.batch.engine import run_batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=3, include_dashboard=False)  # two actors and Ray Data's reader
    yield ray
    ray.shutdown()


def run(data, out, model, kit, **kwargs):
    answerer_kwargs = {"threads": 1, **kit.WINDOW}
    return run_batch(data, out, model=str(model), answerer_kwargs=answerer_kwargs, actors=2, rows_per_batch=2,
                     progress=False, **kwargs)


def test_same_answers_as_one_process(local_ray, row_files, tiny_bert_dir, tmp_path, kit):
    root, rows = row_files
    summary = run(root, tmp_path / "out", tiny_bert_dir, kit)
    assert summary == {"shards": 3, "skipped_shards": 0, "written": 3, "rows": len(rows), "empty_rows": 1}
    kit.assert_same_answers(kit.read_outputs(tmp_path / "out"), kit.reference_records(tiny_bert_dir, rows, **kit.WINDOW))
    # one output per input, and each Parquet file says what made it
    from pocketqa.data.predictions import read_prediction_rows

    got, meta = read_prediction_rows(tmp_path / "out" / "sub" / "c.parquet")
    assert [r["id"] for r in got] == [r["id"] for r in rows[8:]]  # input order kept
    assert meta["source"] == str((root / "sub" / "c.csv").resolve()) and meta["threshold"] == 0.0
    assert meta["model"] == tiny_bert_dir.name and meta["rows"] == len(got)


def test_killed_midway_then_rerun_gives_every_id_once(local_ray, tiny_bert_dir, tmp_path, kit, monkeypatch):
    rows = kit.question_rows()
    root, out = tmp_path / "in", tmp_path / "out"
    for i, start in enumerate(range(0, len(rows), 4)):  # three Parquet shards: one pipeline per run
        kit.write_rows(root / f"part-{i}.parquet", rows[start : start + 4])
    real = engine.write_prediction_rows
    calls = []

    def dies_after_the_first_shard(path, shard_rows, metadata):
        if calls:
            raise KeyboardInterrupt  # the job is killed while the second shard is being written
        calls.append(path)
        return real(path, shard_rows, metadata)

    monkeypatch.setattr(engine, "write_prediction_rows", dies_after_the_first_shard)
    with pytest.raises(KeyboardInterrupt):
        run(root, out, tiny_bert_dir, kit, out_format="jsonl")
    first = calls[0]
    assert [p.name for p in out.rglob("*") if p.is_file()] == [first.name]  # nothing half-written
    before = first.stat().st_mtime_ns
    monkeypatch.setattr(engine, "write_prediction_rows", real)

    summary = run(root, out, tiny_bert_dir, kit, out_format="jsonl")
    assert summary["skipped_shards"] == 1 and summary["written"] == 2
    assert first.stat().st_mtime_ns == before  # the complete shard was not redone
    kit.assert_same_answers(kit.read_outputs(out), kit.reference_records(tiny_bert_dir, rows, **kit.WINDOW))

    assert run(root, out, tiny_bert_dir, kit, out_format="jsonl")["written"] == 0  # all done: nothing to do


@pytest.mark.data
def test_300_dev_questions_same_as_one_process(local_ray, shared_dev, tmp_path, kit):
    from pocketqa.data.squad import load_squad
    from pocketqa.inference.answerer import QuestionAnswerer

    examples = load_squad(shared_dev)[:300]
    rows = [{"id": ex.id, "question": ex.question, "context": ex.context} for ex in examples]
    kit.write_rows(tmp_path / "in" / "part-0.parquet", rows[:170])
    (tmp_path / "in" / "part-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[170:]), encoding="utf-8")
    summary = run_batch(tmp_path / "in", tmp_path / "out", answerer_kwargs={"threads": 1}, actors=2, progress=False)
    assert summary["rows"] == 300
    qa = QuestionAnswerer.from_pretrained(None, threads=1)  # the bundled int8 model
    want = {r["id"]: r for r in qa.records(examples, qa.decode_examples(examples))}
    kit.assert_same_answers(kit.read_outputs(tmp_path / "out"), want)


def test_a_file_failing_mid_read_is_one_error_and_keeps_what_was_written(local_ray, tiny_bert_dir, tmp_path, kit):
    rows = kit.question_rows()
    root = tmp_path / "in"
    kit.write_rows(root / "a.jsonl", rows[:4])
    # the first line passes the up-front check; a later one is not JSON
    (root / "b.jsonl").write_text(json.dumps(rows[4]) + "\n{not json\n", encoding="utf-8")
    from pocketqa.errors import PocketQAError

    with pytest.raises(PocketQAError, match="rerun the command") as err:
        run(root, tmp_path / "out", tiny_bert_dir, kit)
    assert "\n" not in str(err.value)
    assert str((root / "b.jsonl").resolve()) in str(err.value)
    assert not (tmp_path / "out" / "b.parquet").exists()

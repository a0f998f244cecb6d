"""Input planning and bad input, all before Ray starts (no Ray in these tests)."""

from __future__ import annotations

import pytest
from helpers import one_line_exit_2

from pocketqa.batch.actor import answer_rows
from pocketqa.batch.shards import pending, plan_shards
from pocketqa.errors import PocketQAError


def test_plan_mirrors_inputs_and_counts_parquet_rows(row_files, tmp_path):
    root, rows = row_files
    shards = plan_shards(root, tmp_path / "out", "parquet")
    outs = [s.out.relative_to((tmp_path / "out").resolve()).as_posix() for s in shards]
    assert outs == ["a.parquet", "b.parquet", "sub/c.parquet"]
    assert [s.fmt for s in shards] == ["parquet", "json", "csv"]
    assert shards[0].rows == 5 and shards[1].rows is None
    # a glob plans the same files; jsonl output names
    globbed = plan_shards(str(root / "**" / "*.*"), tmp_path / "out", "jsonl")
    assert [s.source for s in globbed] == [s.source for s in shards]
    assert globbed[2].out.name == "c.jsonl"
    (root / "_SUCCESS.csv").write_text("x\n")  # bookkeeping files of other tools are not inputs
    (root / ".a.parquet.tmp.parquet").write_text("x")
    assert [s.source for s in plan_shards(root, tmp_path / "out", "parquet")] == [s.source for s in shards]


def test_pending_skips_complete_outputs(row_files, tmp_path):
    root, _ = row_files
    shards = plan_shards(root, tmp_path / "out", "parquet")
    shards[1].out.parent.mkdir(parents=True)
    shards[1].out.write_bytes(b"done")
    assert pending(shards, overwrite=False) == [shards[0], shards[2]]
    assert pending(shards, overwrite=True) == shards


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_missing_column_names_the_file(tmp_path, suffix, kit):
    rows = [{"id": r["id"], "context": r["context"]} for r in kit.question_rows()]
    bad = kit.write_rows(tmp_path / "in" / f"bad{suffix}", rows)
    kit.write_rows(tmp_path / "in" / "good.parquet", kit.question_rows())
    with pytest.raises(PocketQAError, match=r"bad\%s: missing column\(s\) question" % suffix):
        plan_shards(tmp_path / "in", tmp_path / "out", "parquet")
    assert bad.is_file()


@pytest.mark.parametrize("suffix,content", [(".parquet", b"not parquet at all"), (".jsonl", b"{oops\n"),
                                            (".csv", b"\xff\xfe\x00bad")])
def test_unreadable_file_names_the_file(tmp_path, suffix, content):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(content)
    with pytest.raises(PocketQAError, match=rf"broken\{suffix}: cannot read"):
        plan_shards(path, tmp_path / "out", "parquet")


def test_out_inside_the_input_directory_is_refused(row_files):
    root, _ = row_files
    with pytest.raises(PocketQAError, match="inside the input directory"):
        plan_shards(root, root / "answers", "parquet")


def test_empty_question_or_context_is_an_abstention(tiny_bert_dir):
    from pocketqa.inference.answerer import QuestionAnswerer

    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", threads=1)
    rows = answer_rows(qa, ["a", "b", "c", 4], ["Who?", "", None, "Who?"], ["Ann wrote it.", "Ann.", "Ann.", " "],
                       threshold=0.0)
    assert [r["id"] for r in rows] == ["a", "b", "c", "4"]
    assert [r["skipped"] for r in rows] == [False, True, True, True]
    for r in rows[1:]:
        assert r["answer"] == "" and r["start"] is None and r["abstained"] and r["answerability"] == 0.0


def test_cli_bad_input_is_one_line_naming_the_file(tmp_path, capsys, kit):
    rows = [{"id": r["id"], "question": r["question"]} for r in kit.question_rows()]
    bad = kit.write_rows(tmp_path / "in" / "part-1.jsonl", rows)
    one_line_exit_2(["predict", "--engine", "ray", "--data", str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                    capsys, str(bad), "missing column(s) context")
    assert not (tmp_path / "out").exists()


def test_cli_local_engine_refuses_ray_flags(tiny_squad_file, tmp_path, capsys):
    one_line_exit_2(["predict", "--data", str(tiny_squad_file), "--out", str(tmp_path / "p.json"), "--actors", "2"],
                    capsys, "--actors only apply with --engine ray")


def test_bad_window_settings_fail_before_ray_starts(row_files, tmp_path):
    from pocketqa.batch.engine import run_batch

    root, _ = row_files
    with pytest.raises(PocketQAError, match="doc_stride"):
        run_batch(root, tmp_path / "out", answerer_kwargs={"max_seq_length": 64, "doc_stride": 60}, progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_ray_names_the_extra(monkeypatch):
    import sys

    from pocketqa.batch.engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'pocketqa\[ray\]'"):
        import_ray()

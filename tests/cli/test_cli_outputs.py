"""Output paths are checked before any work, and errors name the user's path.

Each command gets a model that does not exist: if the output check came after loading
the model (or after the work), the error would name the model instead of the output.
"""

import os
import stat
import tempfile

import pytest

import pocketqa.cli.common as common
from pocketqa.cli.main import main
from pocketqa.data.squad import write_json_atomic
from pocketqa.errors import PocketQAError


@pytest.fixture()
def readonly_dir(tmp_path, monkeypatch):
    """A directory nobody may write into: read-only mode bits and, where the process
    ignores them (root), file creation there fails as on a read-only mount."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(ro, os.W_OK):  # root: mode bits do not stop it, so refuse creation as EROFS would
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and os.path.realpath(dir) == str(ro.resolve()):
                raise OSError(30, "Read-only file system")
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(common.tempfile, "mkstemp", mkstemp)
    yield ro
    ro.chmod(stat.S_IRWXU)


def _fails_naming(argv, capsys, path):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(path) in err and "cannot write there" in err, err
    assert ".tmp" not in err and "write-check" not in err, err
    return err


def test_predict_and_evaluate_refuse_an_unwritable_out_before_loading(readonly_dir, tiny_squad_file, tmp_path,
                                                                      capsys):
    missing = str(tmp_path / "no-such-model")
    out = readonly_dir / "p.json"
    _fails_naming(["predict", "--model", missing, "--data", str(tiny_squad_file), "--out", str(out)], capsys, out)
    odds = readonly_dir / "odds.json"
    _fails_naming(["predict", "--model", missing, "--data", str(tiny_squad_file), "--out", str(tmp_path / "p.json"),
                   "--null-odds", str(odds)], capsys, odds)
    scores = readonly_dir / "scores.json"
    _fails_naming(["evaluate", "--model", missing, "--data", str(tiny_squad_file), "--out", str(scores)], capsys, scores)
    assert list(readonly_dir.iterdir()) == []


def test_train_export_and_model_writes_refuse_an_unwritable_place(readonly_dir, tiny_squad_file, tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    run = readonly_dir / "runs" / "minilm"  # a directory to create under a read-only one
    _fails_naming(["train", "--recipe", "minilm-l6-squad2", "--model", missing, "--train", str(tiny_squad_file),
                   "--out", str(run)], capsys, run)
    _fails_naming(["export", "--model", missing, "--out", str(readonly_dir / "onnx")], capsys, readonly_dir / "onnx")
    _fails_naming(["evaluate", "--model", str(readonly_dir), "--data", str(tiny_squad_file), "--save-threshold"],
                  capsys, readonly_dir)


def test_a_failed_write_names_the_users_file(readonly_dir, monkeypatch):
    target = readonly_dir / "scores.json"
    if os.access(readonly_dir, os.W_OK):  # root: make the temp file's creation fail as on a read-only mount
        real_open = open

        def refusing_open(file, *args, **kwargs):
            if str(file).startswith(str(readonly_dir)):
                raise OSError(30, "Read-only file system")
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(PocketQAError) as e:
        write_json_atomic({"f1": 1.0}, target)
    assert str(e.value).startswith(f"{target}: cannot write") and ".tmp" not in str(e.value)

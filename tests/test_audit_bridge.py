"""Audit of the teacher assembly, device checks and the MLM augmenter's device handling.

The vocabulary bridge itself was checked against slow references (all template shapes,
real MiniLM -> all-mpnet-base-v2 windows) and found correct; see tests/test_bridge.py.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch

from pocketqa import teacher
from pocketqa.errors import PocketQAError
from pocketqa.models import check_device

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


def test_check_device_refuses_a_cuda_ordinal_the_machine_lacks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda")
    check_device("cuda:0")
    with pytest.raises(PocketQAError, match=r"'cuda:1': this machine has 1 CUDA device"):
        check_device("cuda:1")


def test_check_device_refuses_mps_where_it_is_missing(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(PocketQAError, match="MPS is not available"):
        check_device("mps")


def test_augment_checks_the_device_before_moving_word_vectors_to_it(tmp_path, tiny_squad_file, monkeypatch):
    from pocketqa.augment.edits import AugmentConfig
    from pocketqa.augment.mlm import augment_with_mlm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("city 0.1 0.2\nparis 0.3 0.1\n", encoding="utf-8")
    with pytest.raises(PocketQAError, match="CUDA is not available"):
        augment_with_mlm(
            tiny_squad_file, tmp_path / "aug.json", str(tmp_path / "no-mlm"), AugmentConfig(factor=1),
            word_vectors=vectors, device="cuda", progress=False,
        )

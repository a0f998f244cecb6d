import pytest
import torch

from pocketqa.errors import PocketQAError
from pocketqa.models import check_device, load_kwargs, load_qa_model


@pytest.mark.parametrize(
    ("version", "key"),
    [("4.40.2", "torch_dtype"), ("4.55.4", "torch_dtype"), ("4.56.0", "dtype"), ("4.57.6", "dtype"), ("5.23.0", "dtype")],
)
def test_dtype_keyword_follows_the_transformers_rename(monkeypatch, version, key):
    import transformers  # here, not at the top: transformers 4.57 swaps its module object on first model load

    monkeypatch.setattr(transformers, "__version__", version)
    assert load_kwargs(torch.float16) == {key: torch.float16}
    assert load_kwargs(None, "eager") == {"attn_implementation": "eager"}


def test_loads_in_the_asked_dtype_and_attention_on_the_installed_transformers(tiny_bert_dir):
    model = load_qa_model(str(tiny_bert_dir), dtype=torch.float16, attn_implementation="eager")
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert model.config._attn_implementation == "eager"
    assert load_qa_model(str(tiny_bert_dir), dtype=torch.float32).qa_outputs.weight.dtype == torch.float32


def test_save_student_writes_model_projection_and_meta_and_leaves_no_temp_dir(tmp_path, tiny_tokenizer):
    from helpers import build_bert

    from pocketqa.modeldir import read_meta
    from pocketqa.models import PROJECTION_FILE, load_projection, save_student

    model = build_bert(tiny_tokenizer.vocab_size, hidden=16)
    projection = torch.nn.Linear(16, 32)
    save_student(model, tiny_tokenizer, tmp_path, {"distill": {"stage": 1}}, projection=projection)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / PROJECTION_FILE).is_file()
    assert read_meta(tmp_path)["distill"] == {"stage": 1}
    assert not list(tmp_path.glob(".saving-*"))
    loaded = load_projection(tmp_path)
    assert torch.equal(loaded.weight, projection.weight) and torch.equal(loaded.bias, projection.bias)
    assert load_projection(tmp_path / "elsewhere") is None  # no projection: None, not an error


def test_a_save_that_fails_midway_keeps_the_earlier_weights(tmp_path, tiny_tokenizer, monkeypatch):
    from helpers import build_bert

    import pocketqa.models as models

    models.save_student(build_bert(tiny_tokenizer.vocab_size), tiny_tokenizer, tmp_path, {})
    good = (tmp_path / "model.safetensors").read_bytes()

    def crash(model, tokenizer, out_dir, meta=None):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.safetensors").write_bytes(b"trunc")  # half-written weights, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(models, "save_qa_model", crash)
    with pytest.raises(OSError, match="disk full"):
        models.save_student(build_bert(tiny_tokenizer.vocab_size, seed=1), tiny_tokenizer, tmp_path, {})
    assert (tmp_path / "model.safetensors").read_bytes() == good
    assert not list(tmp_path.glob(".saving-*"))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_saved_model_files_follow_the_umask(tmp_path, tiny_tokenizer, umask, mode):
    import os

    from helpers import build_bert
    from pocketqa.models import save_qa_model

    old = os.umask(umask)
    try:
        out = save_qa_model(build_bert(len(tiny_tokenizer)), tiny_tokenizer, tmp_path / "model", meta={"name": "m"})
    finally:
        os.umask(old)
    modes = {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()}
    assert {"model.safetensors", "config.json", "pocketqa.json"} <= set(modes)
    assert modes == dict.fromkeys(modes, mode)


def test_save_and_load_print_nothing_and_leave_transformers_settings_alone(tmp_path, tiny_tokenizer, capfd):
    from transformers.utils import logging as hf_logging

    from helpers import build_bert
    from pocketqa.models import load_tokenizer, save_qa_model

    model = build_bert(len(tiny_tokenizer))
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    capfd.readouterr()
    out = save_qa_model(model, tiny_tokenizer, tmp_path / "model", meta={"name": "m"})
    load_qa_model(str(out))
    load_tokenizer(str(out))
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # e.g. no "Writing model shards" bar
    assert hf_logging.get_verbosity() == hf_logging.WARNING
    assert hf_logging.is_progress_bar_enabled()


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

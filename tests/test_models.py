import pytest
import torch

from pocketqa.models import load_kwargs, load_qa_model


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


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_saved_model_files_follow_the_umask(tmp_path, tiny_tokenizer, umask, mode):
    import os

    from conftest import build_bert
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

    from conftest import build_bert
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

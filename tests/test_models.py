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

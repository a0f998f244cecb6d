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


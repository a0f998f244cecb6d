"""A base encoder (no QA head in its checkpoint) loads for training, but is not served silently."""

import pytest

from helpers import CONTEXTS
from pocketqa.errors import PocketQAError
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.models import load_qa_model, new_head_weights


@pytest.fixture(scope="module")
def base_encoder_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny BertModel (encoder only, as on the hub) saved with its tokenizer: no QA head."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    path = tmp_path_factory.mktemp("base_encoder")
    BertModel(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_load_qa_model_records_the_newly_initialised_head(base_encoder_dir, tiny_bert_dir):
    model = load_qa_model(str(base_encoder_dir))  # training starts from exactly this: no refusal
    assert new_head_weights(model) == ["qa_outputs.bias", "qa_outputs.weight"]
    assert new_head_weights(load_qa_model(str(tiny_bert_dir))) == []


def test_question_answerer_refuses_an_untrained_head(base_encoder_dir):
    with pytest.raises(PocketQAError) as err:
        QuestionAnswerer.from_pretrained(base_encoder_dir, device="cpu")
    message = str(err.value)
    assert message.startswith(f"{base_encoder_dir}: its QA head is untrained (weights newly initialised")
    assert "pocketqa train" in message and "--allow-untrained-head" in message


def test_question_answerer_serves_an_untrained_head_when_allowed(base_encoder_dir):
    qa = QuestionAnswerer.from_pretrained(base_encoder_dir, device="cpu", allow_untrained_head=True)
    result = qa(CONTEXTS[0][2][0][0], CONTEXTS[0][1], abstain=False)
    assert isinstance(result["answer"], str)


def test_trained_head_loads_as_before(tiny_bert_dir):
    QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu")


@pytest.mark.parametrize("command", ["ask", "predict", "evaluate"])
def test_cli_refuses_an_untrained_head_in_one_line_unless_allowed(base_encoder_dir, tmp_path, command, capsys):
    from helpers import squad_dict

    import json

    from pocketqa.cli.main import main

    data = tmp_path / "d.json"
    data.write_text(json.dumps(squad_dict()), encoding="utf-8")
    args = {
        "ask": ["ask", "-q", "Who?", "-c", CONTEXTS[0][1]],
        "predict": ["predict", "--data", str(data), "--out", str(tmp_path / "p.json")],
        "evaluate": ["evaluate", "--data", str(data)],
    }[command] + ["--model", str(base_encoder_dir), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "QA head is untrained" in err and "--allow-untrained-head" in err
    assert main([*args, "--allow-untrained-head"]) == 0


def test_serve_passes_allow_untrained_head_through(monkeypatch):
    import pocketqa.serve.server as server
    from pocketqa.cli.main import main

    seen = {}
    monkeypatch.setattr(server, "serve", lambda model, **kwargs: seen.update(kwargs))
    assert main(["serve", "--model", "m", "--allow-untrained-head"]) == 0
    assert seen["allow_untrained_head"] is True
    assert main(["serve", "--model", "m"]) == 0
    assert seen["allow_untrained_head"] is False

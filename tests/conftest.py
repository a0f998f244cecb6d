"""Shared fixtures: a tiny WordPiece tokenizer, tiny random QA models, tiny SQuAD files.

The builders behind them live in helpers.py, which test modules import directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import SHARED_DATA, build_bert, build_mobilebert, build_tokenizer, squad_dict


def pytest_configure(config):
    """One intra-op torch thread for the whole run, set before any test imports torch.

    Tiny models gain nothing from a second thread, and where other jobs share a 2-core box two
    threads per process thrash: 0.3 s tests took 5 to 9 s. An OMP_NUM_THREADS already set wins.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture()
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and a busy 2-core box thrashes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tiny_tokenizer):
    """A saved 2-layer, 32-dim random BERT QA model with its tokenizer."""
    path = tmp_path_factory.mktemp("tiny_bert")
    build_bert(len(tiny_tokenizer)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_mobilebert_dir(tmp_path_factory, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tiny_mobilebert")
    build_mobilebert(len(tiny_tokenizer)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_squad_file(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(squad_dict()), encoding="utf-8")
    return path


@pytest.fixture()
def shared_dev(request) -> Path:
    """The real SQuAD 2.0 dev set; tests using it carry the ``data`` marker (``-m data`` selects them)."""
    assert request.node.get_closest_marker("data"), f"{request.node.nodeid} reads ../shared/data: mark it @pytest.mark.data"
    path = SHARED_DATA / "dev-v2.0.json.gz"
    if not path.is_file():
        pytest.skip(f"real SQuAD data not found at {path}")
    return path

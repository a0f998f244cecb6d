"""pocketqa.training.precision: one precision rule for every loop (and the throughput bench)."""

from __future__ import annotations

import pytest
import torch

from pocketqa.errors import ConfigError
from pocketqa.training.precision import autocast, autocast_dtype, grad_scaler, precision_warning, resolve_precision


def test_auto_is_bf16_on_a_cuda_device_that_has_it_else_fp32(monkeypatch):
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda:1") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp32"


def test_explicit_precisions_and_their_errors():
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("fp16", "cuda") == "fp16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="precision must be one of auto, bf16, fp16, fp32, found 'fp8'"):
        resolve_precision("fp8", "cpu")


def test_autocast_scaler_and_warning_follow_the_precision():
    assert autocast_dtype("fp32") is None and autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("fp16") is torch.float16
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert grad_scaler("bf16", "cpu") is None and grad_scaler("fp32", "cpu") is None
    assert isinstance(grad_scaler("fp16", "cpu"), torch.amp.GradScaler)
    assert precision_warning("fp16") and "transformers #11327" in precision_warning("fp16")
    assert precision_warning("bf16") is None

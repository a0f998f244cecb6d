"""pocketqa.training.guards: no nan or inf weights reach a checkpoint."""

from __future__ import annotations

import pytest
import torch

from pocketqa.errors import PocketQAError
from pocketqa.training.guards import check_finite_weights, nonfinite_parameter


def test_non_finite_weights_are_named_with_their_module():
    model, projection = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)
    check_finite_weights({"model": model, "projection": projection, "absent": None}, "at step 1", "fix it")
    with torch.no_grad():
        projection.bias[1] = float("inf")
    assert nonfinite_parameter(projection) == "bias" and nonfinite_parameter(model) is None
    with pytest.raises(PocketQAError) as info:
        check_finite_weights({"model": model, "projection": projection}, "in stage 1", "lower the learning rate")
    assert str(info.value) == ("projection weight bias became nan or inf in stage 1; stopped before saving bad "
                               "weights. lower the learning rate")
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(PocketQAError, match=r"^weight weight became nan or inf at step 3;"):
        check_finite_weights({"model": model, "projection": projection}, "at step 3", "")

"""Each loss against a slow, obviously-correct Python-loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from pocketqa.training.losses import attention_mse, hidden_mse, masked_kl_div, mix_losses, span_loss


def _random_mask(batch: int, seq: int, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(batch, seq, generator=gen) < 0.6
    mask[:, 0] = True  # CLS is always a valid position
    return mask


# -- references ------------------------------------------------------------------------


def naive_kl(student, teacher, mask, temperature):
    total = 0.0
    for b in range(student.shape[0]):
        valid = [i for i in range(student.shape[1]) if mask[b, i]]
        zs = sum(math.exp(student[b, i].item() / temperature) for i in valid)
        zt = sum(math.exp(teacher[b, i].item() / temperature) for i in valid)
        row = 0.0
        for i in valid:
            pt = math.exp(teacher[b, i].item() / temperature) / zt
            ps = math.exp(student[b, i].item() / temperature) / zs
            row += pt * (math.log(pt) - math.log(ps))
        total += row
    return total / student.shape[0] * temperature**2


def naive_hidden_mse(student, teacher, mask, weight=None, bias=None):
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for i in range(student.shape[1]):
            if mask is not None and not mask[b, i]:
                continue
            s = student[b, i]
            if weight is not None:
                s = [sum(weight[o, k].item() * s[k].item() for k in range(s.shape[0])) + bias[o].item()
                     for o in range(weight.shape[0])]
            else:
                s = s.tolist()
            for d in range(teacher.shape[2]):
                total += (s[d] - teacher[b, i, d].item()) ** 2
                count += 1
    return total / count


def naive_attention_mse(student, teacher, mask):
    total, count = 0.0, 0
    batch, heads, seq, _ = student.shape
    for b in range(batch):
        for h in range(heads):
            for q in range(seq):
                for k in range(seq):
                    if mask[b, q] and mask[b, k]:
                        total += (student[b, h, q, k].item() - teacher[b, h, q, k].item()) ** 2
                        count += 1
    return total / count


# -- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_masked_kl_div_matches_loop(temperature):
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 9, generator=gen) * 3, torch.randn(3, 9, generator=gen) * 3
    mask = _random_mask(3, 9, gen)
    got = masked_kl_div(student, teacher, mask, temperature).item()
    assert got == pytest.approx(naive_kl(student, teacher, mask, temperature), rel=1e-5, abs=1e-6)


def test_masked_kl_div_ignores_masked_positions_only():
    gen = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 7, generator=gen), torch.randn(2, 7, generator=gen)
    mask = torch.tensor([[1, 0, 0, 1, 1, 1, 0], [1, 0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    base = masked_kl_div(student, teacher, mask, 1.0)
    moved = teacher.clone()
    moved[~mask] += 50.0  # question / padding positions: must not matter
    assert masked_kl_div(student, moved, mask, 1.0).item() == pytest.approx(base.item(), abs=1e-6)
    moved = teacher.clone()
    moved[0, 3] += 2.0  # a context position: must matter
    assert abs(masked_kl_div(student, moved, mask, 1.0).item() - base.item()) > 1e-3


def test_masked_kl_div_is_zero_for_equal_logits_and_grad_skips_masked():
    logits = torch.randn(2, 6, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 0, 1, 1, 1, 0]], dtype=torch.bool)
    loss = masked_kl_div(logits, logits.detach() + 0.0, mask, 2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 6)
    masked_kl_div(logits, other, mask, 2.0).backward()
    assert torch.all(logits.grad[~mask] == 0)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("use_mask", [True, False])
def test_hidden_mse_matches_loop(use_mask):
    gen = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 5, 4, generator=gen), torch.randn(2, 5, 4, generator=gen)
    mask = _random_mask(2, 5, gen) if use_mask else None
    got = hidden_mse(student, teacher, mask=mask).item()
    assert got == pytest.approx(naive_hidden_mse(student, teacher, mask), rel=1e-5)


def test_hidden_mse_with_projection_matches_loop():
    gen = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 5, 3, generator=gen), torch.randn(2, 5, 6, generator=gen)
    proj = torch.nn.Linear(3, 6)
    mask = _random_mask(2, 5, gen)
    got = hidden_mse(student, teacher, projection=proj, mask=mask).item()
    want = naive_hidden_mse(student, teacher, mask, proj.weight.detach(), proj.bias.detach())
    assert got == pytest.approx(want, rel=1e-5)


def test_hidden_mse_ignores_padding():
    gen = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(1, 4, 3, generator=gen), torch.randn(1, 4, 3, generator=gen)
    mask = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    base = hidden_mse(student, teacher, mask=mask)
    teacher[0, 2:] = 1e3
    assert hidden_mse(student, teacher, mask=mask).item() == pytest.approx(base.item())


def test_attention_mse_matches_loop_and_tolerates_masked_infinities():
    gen = torch.Generator().manual_seed(5)
    student, teacher = torch.randn(2, 3, 5, 5, generator=gen), torch.randn(2, 3, 5, 5, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    want = naive_attention_mse(student, teacher, mask)
    assert attention_mse(student, teacher, mask).item() == pytest.approx(want, rel=1e-5)
    # Masked scores may hold -inf / huge values (additive masks): they must not leak in.
    teacher[0, :, :, 3:] = float("-inf")
    student[0, :, 3:, :] = -1e30
    assert attention_mse(student, teacher, mask).item() == pytest.approx(want, rel=1e-5)


def test_span_loss_matches_loop():
    gen = torch.Generator().manual_seed(6)
    start, end = torch.randn(3, 6, generator=gen), torch.randn(3, 6, generator=gen)
    sp, ep = torch.tensor([0, 2, 5]), torch.tensor([0, 3, 5])

    def ce(row, gold):
        return -(row[gold].item() - math.log(sum(math.exp(v) for v in row.tolist())))

    want = sum((ce(start[b], sp[b]) + ce(end[b], ep[b])) / 2 for b in range(3)) / 3
    assert span_loss(start, end, sp, ep).item() == pytest.approx(want, rel=1e-5)


def test_masked_kl_div_is_finite_with_nonfinite_logits_at_masked_positions():
    gen = torch.Generator().manual_seed(5)
    mask = _random_mask(3, 9, gen)
    teacher = torch.randn(3, 9, generator=gen)
    student = torch.randn(3, 9, generator=gen)
    expected = masked_kl_div(student, teacher, mask).item()
    bad_teacher = teacher.masked_fill(~mask, float("nan"))
    bad_teacher[~mask & (torch.arange(9) % 2 == 0)] = float("-inf")
    bad_student = student.masked_fill(~mask, float("inf")).requires_grad_(True)
    loss = masked_kl_div(bad_student, bad_teacher, mask)
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(bad_student.grad).all() and (bad_student.grad[~mask] == 0).all()


def test_mix_losses_leaves_out_a_term_with_zero_weight():
    kd = torch.tensor(2.0, requires_grad=True)
    hard = torch.tensor(float("inf"), requires_grad=True)
    total = mix_losses(kd, hard, 1.0)  # the product form gives 0 * inf = nan
    total.backward()
    assert total.item() == 2.0 and kd.grad.item() == 1.0 and hard.grad is None
    assert mix_losses(torch.tensor(float("nan")), torch.tensor(3.0), 0.0).item() == 3.0
    assert mix_losses(torch.tensor(2.0), torch.tensor(4.0), 0.25).item() == pytest.approx(0.25 * 2 + 0.75 * 4)

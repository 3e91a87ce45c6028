"""KD loss against a hand computation of PromptKD's normalisation (PromptKD quirk 7, docs/compatibility.md)."""
import math

import pytest
import torch

from trainers.losses import kd_loss


def _hand_kd(student, teacher, temperature):
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        s_exp = [math.exp(v / temperature) for v in s_row]
        t_exp = [math.exp(v / temperature) for v in t_row]
        p_s = [v / sum(s_exp) for v in s_exp]
        p_t = [v / sum(t_exp) for v in t_exp]
        total += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    n_logits = len(student) * len(student[0])
    return total * temperature**2 / n_logits


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_loss_matches_hand_computation(temperature):
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]
    value = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature)
    assert value.item() == pytest.approx(_hand_kd(student, teacher, temperature), rel=1e-5)


def test_kd_loss_zero_for_equal_logits_and_float32_for_half_inputs():
    logits = torch.randn(4, 5).half()
    value = kd_loss(logits, logits.clone())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_gradient_flows_to_student_only():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    kd_loss(student, teacher.detach()).backward()
    assert student.grad is not None and teacher.grad is None


def test_kd_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="TEMPERATURE"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)

"""PromptKD's unsupervised KD loss (paper Eq. 3).

    L_ukd = T^2 / (B * C) * sum_i sum_c p_t[i, c] * (log p_t[i, c] - log p_s[i, c])

with p_t = softmax(z_t / T), p_s = softmax(z_s / T): the forward KL(teacher || student) summed over the
batch and divided by the number of logits B x C (PromptKD quirk 7 in docs/compatibility.md, reproduced:
dividing by C as well makes the effective weight depend on the class count, and PromptKD's KD_WEIGHT
values assume it).
The trainer multiplies the result by ``TRAINER.PROMPTKD.KD_WEIGHT``.

PromptKD quirk 5, fixed deliberately: the original computes the softmax and KL in fp16; here they are always
computed in float32 (autocast disabled), which changes nothing in fp32 and avoids fp16 underflow.
"""
import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, summed and divided by B * C (float32)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"TEMPERATURE must be positive, got {temperature}")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
        teacher_probs = F.softmax(teacher_logits.float() / temperature, dim=1)
        kl_sum = F.kl_div(student_log_probs, teacher_probs, reduction="sum")
    return kl_sum * (temperature**2) / student_logits.numel()

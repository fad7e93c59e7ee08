import math

import pytest
import torch
import torch.nn.functional as F

from lightning_cv import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from lightning_cv.losses import smooth_targets, soft_target_cross_entropy


def reference_loss(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """-sum_c q_c log softmax_c, written out with math.exp/math.log over python floats."""
    total = 0.0
    for row, target in zip(logits.tolist(), q.tolist(), strict=True):
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        total += sum(-t * (v - log_z) for v, t in zip(row, target, strict=True))
    return torch.tensor(total / len(logits))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_formula(smoothing):
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    target = torch.tensor([0, 1, 2, 3, 1, 0])
    c = logits.shape[1]
    q = torch.full((6, c), smoothing / c)
    q[torch.arange(6), target] += 1 - smoothing
    loss = LabelSmoothingCrossEntropy(smoothing=smoothing)(logits, target)
    torch.testing.assert_close(loss, reference_loss(logits, q), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_soft_target_matches_formula_and_smooths_like_mixup(smoothing):
    torch.manual_seed(1)
    logits = torch.randn(5, 3)
    a, b, lam = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([2, 2, 0, 1, 1]), 0.7
    mixed = lam * F.one_hot(a, 3).float() + (1 - lam) * F.one_hot(b, 3).float()
    # timm's mixup_target: smoothed one-hots (off = eps/C, on = 1 - eps + eps/C) mixed with lambda
    off, on = smoothing / 3, 1 - smoothing + smoothing / 3
    timm_style = lam * (F.one_hot(a, 3) * (on - off) + off) + (1 - lam) * (F.one_hot(b, 3) * (on - off) + off)
    loss = SoftTargetCrossEntropy(smoothing=smoothing)(logits, mixed)
    torch.testing.assert_close(loss, reference_loss(logits, timm_style), rtol=1e-5, atol=1e-5)


def test_soft_one_hot_equals_hard_label_loss():
    torch.manual_seed(2)
    logits = torch.randn(4, 5)
    target = torch.tensor([4, 0, 2, 2])
    hard = LabelSmoothingCrossEntropy(0.1)(logits, target)
    soft = soft_target_cross_entropy(logits, F.one_hot(target, 5).float(), smoothing=0.1)
    torch.testing.assert_close(hard, soft)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"Expected argument `smoothing` to be in \[0, 1\), but got 1.0"):
        LabelSmoothingCrossEntropy(smoothing=1.0)
    with pytest.raises(ValueError, match=r"Expected soft targets of shape \(N, 3\), but got \(2, 4\)"):
        smooth_targets(torch.zeros(2, 4), 3)
    with pytest.raises(TypeError, match="integer dtype"):
        smooth_targets(torch.zeros(2), 3)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.25])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_cross_entropy_smooths_probability_targets_with_the_same_formula(smoothing, dtype):
    # why the losses delegate to F.cross_entropy: for soft targets and label smoothing together it computes
    # -sum_c smooth_targets(q)_c log softmax_c, the definition timm's mixup_target uses
    torch.manual_seed(2)
    logits = torch.randn(7, 5, dtype=dtype)
    q = torch.softmax(torch.randn(7, 5, dtype=dtype), dim=1)
    by_hand = torch.sum(-smooth_targets(q, 5, smoothing).to(dtype) * F.log_softmax(logits, dim=1), dim=1).mean()
    torch.testing.assert_close(F.cross_entropy(logits, q, label_smoothing=smoothing), by_hand)
    torch.testing.assert_close(soft_target_cross_entropy(logits, q, smoothing), by_hand)
    hard = torch.tensor([0, 4, 2, 1, 3, 3, 0])
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, hard, smoothing),
        soft_target_cross_entropy(logits, F.one_hot(hard, 5).to(dtype), smoothing),
    )


# ---------------------------------------------------------------------------------------------------- multi-label
def test_binary_cross_entropy_with_smoothing_and_pos_weight_matches_the_formula():
    from lightning_cv.losses import binary_cross_entropy, smooth_binary_targets

    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(6, 4, generator=g), (torch.rand(6, 4, generator=g) < 0.5).float()
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    q = targets * 0.9 + 0.05  # eps = 0.1 moves each binary target towards 0.5
    torch.testing.assert_close(smooth_binary_targets(targets, 0.1), q)
    p = logits.sigmoid()
    manual = -(weight * q * p.log() + (1 - q) * (1 - p).log()).mean()
    assert binary_cross_entropy(logits, targets, 0.1, weight).item() == pytest.approx(manual.item(), rel=1e-5)


def test_asymmetric_loss_matches_the_paper_formula_and_reduces_to_bce():
    from lightning_cv.losses import AsymmetricLoss, asymmetric_loss, binary_cross_entropy

    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(5, 3, generator=g) * 2, (torch.rand(5, 3, generator=g) < 0.4).float()
    # Ridnik et al. (ICCV 2021), eq. 1-7: L+ = (1-p)^g+ log(p), L- = p_m^g- log(1-p_m), p_m = max(p - m, 0)
    p = logits.sigmoid()
    p_m = (p - 0.05).clamp_min(0)
    positive = (1 - p) ** 1.0 * p.log()
    negative = p_m**4.0 * (1 - p_m).log()
    manual = -(targets * positive + (1 - targets) * negative).mean()
    got = asymmetric_loss(logits, targets, gamma_neg=4.0, gamma_pos=1.0, clip=0.05)
    assert got.item() == pytest.approx(manual.item(), rel=1e-5)
    plain = asymmetric_loss(logits, targets, gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    assert plain.item() == pytest.approx(binary_cross_entropy(logits, targets).item(), rel=1e-5)
    assert AsymmetricLoss()(logits, targets).item() == pytest.approx(asymmetric_loss(logits, targets).item())
    with pytest.raises(ValueError, match="one 0/1 column per class"):
        asymmetric_loss(logits, torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match="clip"):
        AsymmetricLoss(clip=1.5)


# ---------------------------------------------------------------------------------------------------- imbalance
def test_focal_loss_hand_worked_and_equal_to_weighted_cross_entropy_at_gamma_zero():
    import math

    from lightning_cv.losses import focal_loss

    # logits (2, 0), class 0: p = e^2 / (e^2 + 1); FL = -(1 - p)^2 log p
    p = math.exp(2) / (math.exp(2) + 1)
    assert focal_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), gamma=2.0).item() == pytest.approx(
        -((1 - p) ** 2) * math.log(p), rel=1e-5
    )
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 1, 1])
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    soft = torch.softmax(torch.randn(6, 4, generator=g), dim=1)
    for target in (labels, soft):  # hard and mixed targets, with smoothing and class weights
        expected = F.cross_entropy(logits, target, weight=weight, label_smoothing=0.1)
        assert focal_loss(logits, target, 0.0, 0.1, weight).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(logits, labels, gamma=-1.0)


def test_class_weights_are_those_of_f_cross_entropy():
    from lightning_cv.losses import soft_target_cross_entropy

    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(8, 3, generator=g), torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    weight = torch.tensor([0.5, 1.0, 3.0])
    expected = F.cross_entropy(logits, labels, weight=weight)
    assert soft_target_cross_entropy(logits, labels, weight=weight).item() == pytest.approx(expected.item())
    # by hand: sum_i w_{y_i} * -log p_{y_i} / sum_i w_{y_i}
    log_p = logits.log_softmax(1)
    manual = -(weight[labels] * log_p[torch.arange(8), labels]).sum() / weight[labels].sum()
    assert expected.item() == pytest.approx(manual.item(), rel=1e-6)


def test_logit_adjustment_adds_tau_log_prior():
    import math

    from lightning_cv.losses import logit_adjusted

    prior = torch.tensor([0.9, 0.1])
    adjusted = logit_adjusted(torch.tensor([[1.0, 1.0]]), prior.log(), tau=1.0)
    torch.testing.assert_close(adjusted, torch.tensor([[1.0 + math.log(0.9), 1.0 + math.log(0.1)]]))
    # the loss on adjusted logits punishes a rare class's miss more: its logit must beat its small prior
    loss_rare = F.cross_entropy(adjusted, torch.tensor([1])).item()
    assert loss_rare == pytest.approx(-math.log(0.1 / (0.9 + 0.1)), rel=1e-5)

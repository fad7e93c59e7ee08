import pytest
import torch

from lightning_cv.data import BatchMixer, CutMix, MixParams, MixUp


def images(n=5, h=12, w=10):
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, h, w).clone()


def test_mixup_is_a_convex_combination_with_reversed_batch():
    x, y = images(), torch.tensor([0, 1, 2, 3, 4])
    mixed, a, b, lam = MixUp(alpha=0.4, seed=0)(x, y)
    assert 0 < lam < 1
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    assert a.tolist() == [0, 1, 2, 3, 4] and b.tolist() == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("seed", range(20))
def test_cutmix_lambda_equals_the_unpasted_area(seed):
    x = images(4, 16, 16)
    cut = CutMix(alpha=1.0, seed=seed)
    params = cut.sample(16, 16)
    mixed = cut.apply(x, params)
    pasted = (mixed[0, 0] != x[0, 0]).float().mean().item()  # image 0 receives pixels of image 3
    assert params.lam == pytest.approx(1 - pasted)
    y0, y1, x0, x1 = params.box
    assert 0 <= y0 <= y1 <= 16 and 0 <= x0 <= x1 <= 16


def test_cutmix_box_clipped_at_the_border_recomputes_lambda():
    cut = CutMix(alpha=1.0)
    params = MixParams(lam=0.0, box=(10, 16, 12, 16))  # a box cut by the bottom-right corner
    mixed = cut.apply(images(2, 16, 16), params)
    assert (mixed[0, 0] != 0).sum().item() == 6 * 4
    sampled = [cut.sample(16, 16) for _ in range(200)]
    clipped = [p for p in sampled if p.box[0] == 0 or p.box[1] == 16 or p.box[2] == 0 or p.box[3] == 16]
    assert clipped  # some draws do hit the border ...
    for p in clipped:  # ... and their lambda is the real area
        y0, y1, x0, x1 = p.box
        assert p.lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 256)


@pytest.mark.parametrize("n", [1, 3, 7])
def test_odd_and_single_batches(n):
    mixer = BatchMixer(4, mixup_alpha=0.2, cutmix_alpha=1.0, seed=0)
    for _ in range(10):
        x, t = mixer(images(n), torch.arange(n) % 4)
        assert x.shape == (n, 3, 12, 10) and t.shape == (n, 4)
        torch.testing.assert_close(t.sum(1), torch.ones(n))
    if n == 1:
        torch.testing.assert_close(x, images(1))  # mixed with itself: unchanged


def test_soft_targets_match_lambda():
    mixer = BatchMixer(3, mixup_alpha=1.0, seed=3)
    y = torch.tensor([0, 1, 2, 1])
    x, t = mixer(images(4), y)
    lam = (x[0, 0, 0, 0] - 3) / (0 - 3)  # image 0 = lam * 0 + (1 - lam) * 3
    torch.testing.assert_close(t[0], torch.tensor([lam, 1 - lam, 0.0]))


def test_prob_zero_and_prob_one():
    y = torch.tensor([0, 1])
    off = BatchMixer(2, mixup_alpha=1.0, prob=0.0)
    x, t = off(images(2), y)
    torch.testing.assert_close(x, images(2))
    torch.testing.assert_close(t, torch.eye(2))
    assert MixUp(alpha=1.0, prob=0.0)(images(2), y)[3] == 1.0


def test_switch_between_mixup_and_cutmix():
    mixer = BatchMixer(2, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5, seed=0)
    kinds = {type(mixer.sample(8, 8)[0]).__name__ for _ in range(50)}
    assert kinds == {"MixUp", "CutMix"}


def test_seeded_and_resumable():
    a, b = BatchMixer(3, cutmix_alpha=1.0, seed=5), BatchMixer(3, cutmix_alpha=1.0, seed=5)
    y = torch.tensor([0, 1, 2])
    for _ in range(3):
        a(images(3), y)
    state = a.state_dict()
    for _ in range(3):
        b(images(3), y)
    b.load_state_dict(state)
    torch.testing.assert_close(a(images(3), y)[0], b(images(3), y)[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Expected `alpha` >= 0.0, but got -1"):
        MixUp(alpha=-1)
    with pytest.raises(ValueError, match=r"Expected `prob` in \[0.0, 1.0\], but got 2"):
        CutMix(alpha=1.0, prob=2)
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, C, H, W\), but got \(3, 8, 8\)"):
        MixUp(alpha=1.0)(torch.zeros(3, 8, 8), torch.zeros(3))

import math
import random

import pytest
import torch

from entropic_tune import metrics as M


def test_entropy_matches_categorical():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 4
    for temperature in (1.0, 0.6, 2.0):
        expected = torch.distributions.Categorical(logits=logits / temperature).entropy()
        torch.testing.assert_close(M.token_entropy(logits, temperature), expected)


def test_entropy_uniform_is_log_v():
    logits = torch.zeros(2, 7, 50)
    torch.testing.assert_close(M.token_entropy(logits), torch.full((2, 7), math.log(50)))


def test_entropy_stable_for_peaked_and_bf16_logits():
    logits = torch.tensor([[1e4, 0.0, -1e4]])
    h = M.token_entropy(logits)
    assert torch.isfinite(h).all() and h.item() == pytest.approx(0.0, abs=1e-6)
    bf16 = (torch.randn(4, 32) * 3).to(torch.bfloat16)
    h16 = M.token_entropy(bf16)
    assert h16.dtype == torch.float32
    expected = torch.distributions.Categorical(logits=bf16.float()).entropy()
    torch.testing.assert_close(h16, expected)


def test_entropy_is_not_sampled_token_nll():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    nll = -torch.log_softmax(logits, -1)[0, 0]
    assert M.token_entropy(logits).item() != pytest.approx(nll.item())


def test_aggregate_is_token_mean_over_mask():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert M.aggregate(values, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    assert M.aggregate(values, torch.zeros_like(mask)).item() == 0.0


def test_summary_statistics_hand_computed():
    target = 0.5
    entropies = [1.0, 0.8, 0.6, 0.52, 0.48, 0.5]
    history = [{M.STEP: i + 1, M.ENTROPY: h, M.EVAL_ACCURACY: 0.1 * i} for i, h in enumerate(entropies)]
    out = M.summarize(history, target)
    tail = [0.52, 0.48, 0.5]
    rmse = math.sqrt(sum(((h - target) / target) ** 2 for h in tail) / 3)
    assert out[M.TRACKING_RMSE] == pytest.approx(rmse)
    assert out[M.SETTLE_STEP] == 4  # from step 4 on within 10%
    assert out[M.ENTROPY_DROP] == pytest.approx(0.5)
    assert out[M.FINAL_ACCURACY] == pytest.approx(0.5)


def test_settle_step_nan_when_last_point_outside_band():
    assert math.isnan(M.settle_step([0.5, 0.5, 0.9], 0.5))
    assert M.settle_step([0.9, 0.5, 0.54], 0.5) == 2


def test_measurement_noise_variance_hand_computed_and_unbiased_by_a_trend():
    # diffs of [0, 1, 0, 1, 0]: [1, -1, 1, -1], mean 0, c0 = 1, c1 = -3/4 -> r = min(3/4, 1/2) = 1/2
    assert M.measurement_noise_variance([0.0, 1.0, 0.0, 1.0, 0.0]) == pytest.approx(0.5)
    assert math.isnan(M.measurement_noise_variance([1.0, 2.0, 3.0]))
    rng = random.Random(0)
    noise = [rng.gauss(0.0, 0.01) for _ in range(4000)]
    ramp = [0.1 + 1e-3 * k + v for k, v in enumerate(noise)]  # a steady trend does not count as noise
    assert M.measurement_noise_variance(ramp) == pytest.approx(1e-4, rel=0.1)
    wave = [0.1 + 0.02 * math.sin(k / 20) + v for k, v in enumerate(noise)]
    assert M.measurement_noise_variance(wave) == pytest.approx(1e-4, rel=0.1)


@pytest.mark.parametrize("offset", [0.0, 0.006])
def test_denoised_tracking_rmse_sees_the_true_error_through_the_noise(offset):
    target, sigma = 0.06, 0.005
    rng = random.Random(1)
    entropies = [target + offset + rng.gauss(0.0, sigma) for _ in range(3000)]
    raw = M.entropy_tracking_rmse(entropies, target)
    denoised = M.entropy_tracking_rmse_denoised(entropies, target)
    true_rmse = offset / target
    assert raw == pytest.approx(math.hypot(true_rmse, sigma / target), rel=0.05)  # floored by noise
    assert denoised == pytest.approx(true_rmse, abs=0.03)
    assert denoised < raw
    out = M.summarize([{M.ENTROPY: h, M.STEP: i + 1} for i, h in enumerate(entropies)], target)
    assert out[M.TRACKING_RMSE_DENOISED] == denoised


def test_entropy_stderr_hand_computed_and_calibrated():
    # two groups of two responses: group sums 1+2+3 = 6 (3 tokens) and 4+0 = 4 (1 token); H = 10/4
    values = torch.tensor([[1.0, 2.0], [3.0, 9.0], [4.0, 9.0], [9.0, 9.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [0, 0]])
    h = 10 / 4
    dev = [(6 - h * 3) / 2, (4 - h * 1) / 2]  # mean tokens per group: 2
    expected = math.sqrt(sum(d * d for d in dev) / (2 * 1))
    assert M.entropy_stderr(values, mask, group_size=2).item() == pytest.approx(expected)
    assert M.entropy_stderr(values, mask, group_size=4).item() == 0.0  # one group: no spread
    # calibrated: over many simulated batches (a random level per prompt, noisy tokens, ragged
    # lengths) the stated error matches the spread of H across batches
    gen = torch.Generator().manual_seed(0)
    hs, ses = [], []
    for _ in range(400):
        level = 0.06 + 0.03 * torch.randn(16, 1, 1, generator=gen)  # (B, 1, 1) per-prompt entropy
        tokens = (level + 0.05 * torch.randn(16, 8, 30, generator=gen)).abs().view(128, 30)
        lengths = torch.randint(5, 31, (128, 1), generator=gen)
        m = (torch.arange(30).view(1, 30) < lengths).float()
        hs.append(M.aggregate(tokens, m).item())
        ses.append(M.entropy_stderr(tokens, m, 8).item())
    spread = torch.tensor(hs).std().item()
    assert sum(ses) / len(ses) == pytest.approx(spread, rel=0.15)


def test_denoised_rmse_prefers_the_logged_standard_errors():
    target, rng = 0.06, random.Random(2)
    rows = [{M.STEP: i + 1, M.ENTROPY: target + 0.006 + rng.gauss(0.0, 0.005), M.ENTROPY_STDERR: 0.005}
            for i in range(2000)]
    out = M.summarize(rows, target)
    assert out[M.TRACKING_RMSE_DENOISED] == pytest.approx(0.1, abs=0.01)
    wrong = [{**r, M.ENTROPY_STDERR: 0.0} for r in rows]  # it really uses them: no noise removed
    assert M.summarize(wrong, target)[M.TRACKING_RMSE_DENOISED] == pytest.approx(
        out[M.TRACKING_RMSE], rel=1e-12)

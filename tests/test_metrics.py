import math
import random
from fractions import Fraction

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


def _entropy_float64(z: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(z.double(), -1)
    return -(logp.exp() * logp).sum(-1)


def _llm_like_logits(g: torch.Generator) -> torch.Tensor:
    """(48, 32000): LLM-scale vocabulary, logit std 3, some rows with a dominant token, some offset."""
    z = 3.0 * torch.randn(48, 32000, generator=g)
    z[:16, 0] += torch.linspace(5.0, 30.0, 16)  # from flat to peaked
    z[16:32] = 1.5 * z[16:32] / 3.0 + 50.0  # a large common offset (the softmax ignores it)
    return z


def _extreme_logits(g: torch.Generator) -> torch.Tensor:
    """(48, 1000) with |z| ~ 250: a near-tie of two huge logits, a wide spread, a huge negative bulk."""
    a = 20.0 * torch.randn(16, 1000, generator=g)
    a[:, 0], a[:, 1] = 250.0, 250.0 - torch.linspace(0.0, 20.0, 16)
    b = 80.0 * torch.randn(16, 1000, generator=g)
    c = -250.0 + 5.0 * torch.randn(16, 1000, generator=g)
    c[:, 0] = torch.linspace(-240.0, 250.0, 16)
    return torch.cat([a, b, c])


@pytest.mark.parametrize("make", [_llm_like_logits, _extreme_logits])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_entropy_matches_float64_on_llm_like_and_extreme_logits(make, temperature):
    # logsumexp(z) - sum p z without a shift cancels two terms of size |z|: ~4e-3 nats off at |z| ~ 250
    # in fp32 (and ~3e-4 with an offset of 50); shifted by the max it is within ~3e-6 in both regimes.
    z = make(torch.Generator().manual_seed(0))
    expected = _entropy_float64(z / temperature)
    got = M.token_entropy(z, temperature)
    assert got.dtype == torch.float32
    assert (got.double() - expected).abs().max().item() < 1e-5


def test_entropy_gradient_matches_float64_at_extreme_scale():
    z = _extreme_logits(torch.Generator().manual_seed(1))
    z32, z64 = z.clone().requires_grad_(), z.double().requires_grad_()
    M.token_entropy(z32).sum().backward()
    _entropy_float64(z64).sum().backward()
    assert (z32.grad.double() - z64.grad).abs().max().item() < 1e-4


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


# --- pass@k (Chen et al. 2021) --------------------------------------------------------------------


def _exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_equals_exact_combinatorics_for_every_small_case():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert M.pass_at_k(n, c, k) == pytest.approx(float(_exact_pass_at_k(n, c, k)), abs=1e-14)


def test_pass_at_k_edge_cases():
    assert M.pass_at_k(64, 0, 64) == 0.0  # c = 0: never
    assert M.pass_at_k(64, 0, 1) == 0.0
    assert M.pass_at_k(10, 7, 4) == 1.0  # n - c = 3 < k: every draw of 4 holds a correct one
    assert M.pass_at_k(10, 1, 10) == 1.0  # k = n with one correct sample
    assert M.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # k = 1 is c / n
    assert M.pass_at_k(5, 5, 5) == 1.0


def test_pass_at_k_is_stable_for_large_n():
    # math.comb(4096, 2048) has over 1200 digits: a float ratio of binomials would overflow.
    for n, c, k in ((4096, 3, 2048), (4096, 1, 1), (1000, 17, 64), (100_000, 5, 10)):
        assert M.pass_at_k(n, c, k) == pytest.approx(float(_exact_pass_at_k(n, c, k)), rel=1e-11)


def test_pass_at_k_is_unbiased_for_one_per_sample_success_rate():
    # With C ~ Binomial(n, p) correct samples, E[pass_at_k(n, C, k)] = 1 - (1 - p)^k exactly.
    n, p = 20, 0.13
    for k in (1, 2, 5, 20):
        expected = sum(math.comb(n, c) * p**c * (1 - p) ** (n - c) * M.pass_at_k(n, c, k)
                       for c in range(n + 1))
        assert expected == pytest.approx(1 - (1 - p) ** k, abs=1e-12)


@pytest.mark.parametrize("args", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (0, 0, 1), (4.0, 2, 1),
                                  (4, True, 1)])
def test_pass_at_k_rejects_impossible_arguments(args):
    with pytest.raises(ValueError, match="pass_at_k"):
        M.pass_at_k(*args)


def test_pass_at_k_ks_and_final_keys():
    assert M.pass_at_k_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert M.pass_at_k_ks(10) == [1, 2, 4, 8, 10]
    assert M.pass_at_k_ks(1) == [1]
    assert M.final_keys(4) == ["final/accuracy", "final/pass@1", "final/pass@2", "final/pass@4"]
    assert M.final_keys(2, M.BASE) == ["base/accuracy", "base/pass@1", "base/pass@2"]


def test_late_accuracy_averages_the_last_evaluations_not_the_rows():
    # eval every 2 steps over 7 steps: evaluations at 2, 4, 6 and the final step 7.
    steps = list(range(1, 8))
    accuracies = [0.0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.9]
    assert M.late_accuracy(accuracies, steps, 2) == pytest.approx((0.4 + 0.6 + 0.9) / 3)
    assert M.late_accuracy(accuracies, steps, 0) == pytest.approx(0.9)  # only the final one
    assert M.late_accuracy(accuracies[:3], steps[:3], 2, last=5) == pytest.approx((0.2 + 0.2) / 2)
    assert math.isnan(M.late_accuracy([], [], 2))
    history = [{M.STEP: s, M.ENTROPY: 0.5, M.EVAL_ACCURACY: a} for s, a in zip(steps, accuracies, strict=True)]
    assert M.summarize(history, 0.5, 2)[M.LATE_ACCURACY] == pytest.approx((0.4 + 0.6 + 0.9) / 3)




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

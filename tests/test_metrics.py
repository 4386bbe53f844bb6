import math

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

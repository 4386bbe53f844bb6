"""Tests for the policy-loss registry (METHOD.md sections 2-4): equivalences, gradients, masks, metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch
from torch.testing import assert_close

from entropic_tune import metrics as M
from entropic_tune.errors import UserError
from entropic_tune.losses import LOSSES, compute_policy_loss
from entropic_tune.methods import METHODS


@dataclass(frozen=True)
class Batch:
    logp: torch.Tensor  # (B, T)
    old: torch.Tensor  # (B, T)
    adv: torch.Tensor  # (B,)
    mask: torch.Tensor  # (B, T)
    entropy: torch.Tensor  # (B, T)


def make_batch(seed: int = 0, b: int = 4, t: int = 8, off_policy: bool = True) -> Batch:
    """Sampled-token log-probs in (-inf, 0) with some above log(0.95), mixed-sign advantages."""
    g = torch.Generator().manual_seed(seed)
    logp = torch.sigmoid(3.0 * torch.randn(b, t, generator=g)).log()
    noise = 0.3 * torch.randn(b, t, generator=g) if off_policy else torch.zeros(b, t)
    adv = torch.randn(b, generator=g)
    adv[0], adv[1] = adv[0].abs() + 0.1, -adv[1].abs() - 0.1  # both signs present
    mask = torch.ones(b, t)
    mask[1, -3:] = 0.0
    mask[-1, -1:] = 0.0
    entropy = torch.rand(b, t, generator=g) * 2.0
    return Batch(logp, logp + noise, adv, mask, entropy)


def run(method: str, batch: Batch, **kw):
    """Loss, gradient wrt logprobs, gradient wrt entropy and metrics of one call."""
    logp = batch.logp.clone().requires_grad_()
    entropy = batch.entropy.clone().requires_grad_()
    loss, out = compute_policy_loss(
        method, logp, batch.old, batch.adv, batch.mask, entropy=entropy, **kw
    )
    loss.backward()
    return loss.detach(), logp.grad, entropy.grad, out


def on_policy(batch: Batch) -> Batch:
    return replace(batch, old=batch.logp.clone())


def assert_same(a, b) -> None:
    assert_close(a[0], b[0])
    assert_close(a[1], b[1])


# --- equivalences ---------------------------------------------------------------------------------
def test_entropic_alpha_zero_equals_grpo():
    batch = make_batch()
    assert_same(run("entropic", batch, alpha=0.0), run("grpo", batch))
    assert_same(run("entropic", on_policy(batch), alpha=0.0), run("grpo", on_policy(batch)))


def test_clip_higher_equal_eps_equals_grpo():
    batch = make_batch(off_policy=True)
    assert_same(run("clip_higher", batch, clip_eps_high=0.2), run("grpo", batch))


def test_clip_higher_default_differs_off_policy():
    batch = make_batch(seed=3, b=8, t=64)
    assert run("clip_higher", batch)[3][M.PG_CLIPFRAC] < run("grpo", batch)[3][M.PG_CLIPFRAC]


def test_entropy_bonus_beta_zero_equals_grpo():
    batch = make_batch()
    assert_same(run("entropy_bonus", batch, beta=0.0), run("grpo", batch))


def test_adaptive_entropy_alpha_zero_equals_grpo():
    batch = make_batch()
    assert_same(run("adaptive_entropy", batch, alpha=0.0), run("grpo", batch))


@pytest.mark.parametrize("off", [True, False])
def test_w_reinforce_lambda_one_and_forking_quantile_one_equal_grpo(off):
    batch = make_batch(seed=9, b=6, t=12, off_policy=off)
    grpo = run("grpo", batch)
    w_one = run("w_reinforce", batch, positive_weight=1.0)
    fork_all = run("forking_tokens", batch, entropy_quantile=1.0)
    for result in (w_one, fork_all):
        assert torch.equal(result[0], grpo[0]) and torch.equal(result[1], grpo[1])
        assert result[3] == grpo[3]
    assert not torch.equal(run("w_reinforce", batch)[1], grpo[1])  # the preset's lambda 0.1 differs


def test_w_reinforce_scales_positive_advantage_tokens_by_lambda():
    batch = make_batch(seed=10, b=6, t=12)  # off-policy: clipped tokens have zero gradient in both
    _, grad, _, _ = run("w_reinforce", batch)
    _, base, _, _ = run("grpo", batch)
    positive = (batch.adv > 0)[:, None].expand_as(grad)
    assert positive.any() and (~positive).any()
    assert_close(grad, torch.where(positive, 0.1 * base, base))


def test_nsr_gives_no_gradient_to_positive_advantage_tokens():
    batch = make_batch(seed=11, b=6, t=12)
    _, grad, _, out = run("nsr", batch)
    _, base, _, _ = run("grpo", batch)
    positive = (batch.adv > 0)[:, None].expand_as(grad)
    assert torch.all(grad[positive] == 0) and (base[positive] != 0).any()
    assert torch.equal(grad[~positive], base[~positive]) and (grad[~positive] != 0).any()
    assert math.isfinite(out[M.PG_LOSS])


@pytest.mark.parametrize("quantile", [0.2, 0.5])
def test_forking_tokens_gradient_only_on_the_highest_entropy_tokens(quantile):
    batch = on_policy(make_batch(seed=12, b=6, t=16))  # every response token has GRPO gradient
    loss, grad, h_grad, out = run("forking_tokens", batch, entropy_quantile=quantile)
    _, base, _, _ = run("grpo", batch)
    n = int(batch.mask.sum())
    k = math.ceil(quantile * n)
    h = batch.entropy.masked_fill(batch.mask == 0, -math.inf)
    threshold = h.flatten().topk(k).values[-1]
    above, below = (h >= threshold) & (batch.mask > 0), (h < threshold) & (batch.mask > 0)
    assert above.sum() == k and below.any() and torch.all(base[batch.mask > 0] != 0)
    assert torch.all(grad[below] == 0) and torch.all(grad[above] != 0)
    assert_close(grad[above], base[above] * n / k)  # token-mean over the k forking tokens
    assert h_grad is None or torch.all(h_grad == 0)  # entropy only selects, it is not optimised
    surrogate = -batch.adv[:, None].expand_as(batch.logp)  # on-policy: l_t = -A
    assert_close(loss, surrogate[above].mean())
    assert out[M.PG_LOSS] == pytest.approx(loss.item())


def test_forking_tokens_needs_entropy():
    batch = make_batch()
    with pytest.raises(ValueError, match="entropy"):
        compute_policy_loss("forking_tokens", batch.logp, batch.old, batch.adv, batch.mask)


@pytest.mark.parametrize("method", ["grpo", "entropic", "kl_cov"])
def test_bonus_subtracts_entropy_from_any_loss(method):
    batch = make_batch()
    loss, grad, h_grad, _ = run(method, batch, alpha=0.3, bonus=0.05)
    base, base_grad, base_h, _ = run(method, batch, alpha=0.3)
    n = batch.mask.sum()
    assert_close(loss, base - 0.05 * (batch.entropy * batch.mask).sum() / n)
    assert_close(grad, base_grad)
    assert_close(h_grad, -0.05 * batch.mask / n + (0 if base_h is None else base_h))
    same = run(method, batch, alpha=0.3, bonus=0.0)
    assert torch.equal(same[0], base) and torch.equal(same[1], base_grad)


def test_entropic_p_equals_entropic():
    batch = make_batch()
    p, pi = run("entropic_p", batch, alpha=0.3), run("entropic", batch, alpha=0.3)
    assert_same(p, pi)
    assert p[3] == pi[3]


@pytest.mark.parametrize("method,coef", [("entropy_bonus", None), ("adaptive_entropy", 0.2)])
def test_entropy_losses_subtract_weighted_entropy(method, coef):
    batch = make_batch()
    kw = {"beta": 0.1} if coef is None else {"alpha": coef}
    weight = 0.1 if coef is None else coef
    loss, grad, h_grad, _ = run(method, batch, **kw)
    base, base_grad, _, _ = run("grpo", batch)
    n = batch.mask.sum()
    assert_close(loss, base - weight * (batch.entropy * batch.mask).sum() / n)
    assert_close(grad, base_grad)
    assert_close(h_grad, -weight * batch.mask / n)


# --- masks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_masked_tokens_get_zero_gradient(method):
    batch = make_batch()
    off = batch.mask == 0
    # Garbage where the mask is 0 must neither leak into the loss nor get gradient.
    batch = replace(
        batch,
        logp=batch.logp.masked_fill(off, -math.inf),
        old=batch.old.masked_fill(off, math.nan),
        entropy=batch.entropy.masked_fill(off, math.nan),
    )
    loss, grad, h_grad, out = run(method, batch, alpha=0.5, generator=torch.Generator())
    assert torch.isfinite(loss)
    h_grad = torch.zeros_like(grad) if h_grad is None else h_grad  # None: entropy unused
    assert torch.all(grad[off] == 0) and torch.all(h_grad[off] == 0)
    assert torch.all(torch.isfinite(grad)) and torch.all(torch.isfinite(h_grad))
    assert all(math.isfinite(v) for v in out.values())


# --- EntroPIC -------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.4, -0.4, 1.0])
def test_entropic_on_policy_reweights_high_prob_tokens(alpha):
    batch = on_policy(make_batch(seed=1, b=6, t=10))
    _, grad, _, out = run("entropic", batch, alpha=alpha)
    _, base, _, _ = run("grpo", batch)
    hp = (batch.mask > 0) & (batch.logp > math.log(0.95))
    n_all, n_hp = batch.mask.sum(), hp.sum()
    sign = batch.adv.sign()[:, None].expand_as(batch.logp)
    assert 0 < n_hp < n_all and (sign[hp] > 0).any() and (sign[hp] < 0).any()
    expected = torch.where(hp, base * (1 + alpha * sign * n_all / n_hp), base)
    assert_close(grad, expected)
    assert out[M.HIGH_PROB_FRAC] == pytest.approx((n_hp / n_all).item())


def test_entropic_tau_zero_reweights_all_tokens():
    batch = on_policy(make_batch(seed=2))
    alpha = 0.3
    _, grad, _, out = run("entropic", batch, alpha=alpha, tau=0.0)
    _, base, _, _ = run("grpo", batch)
    sign = batch.adv.sign()[:, None].expand_as(batch.logp)
    assert_close(grad, base * (1 + alpha * sign))
    assert out[M.HIGH_PROB_FRAC] == 1.0


def test_entropic_without_high_prob_tokens_is_grpo():
    batch = make_batch()
    batch = replace(batch, logp=batch.logp.clamp(max=math.log(0.5)))
    loss, grad, _, out = run("entropic", batch, alpha=0.7)
    assert_same((loss, grad), run("grpo", batch))
    assert out[M.HIGH_PROB_FRAC] == 0.0


def _step_entropy(method, logits, tokens, mask, adv, lr=0.5, **kw):
    """Per-position entropy after one SGD step of a tabular softmax policy (on-policy)."""
    logits = logits.clone().requires_grad_()
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, T)
    loss, _ = compute_policy_loss(method, logp, logp.detach(), adv, mask, **kw)
    loss.backward()
    with torch.no_grad():
        # Categorical in float64: metrics.token_entropy computes in fp32, too coarse for this.
        return torch.distributions.Categorical(logits=logits - lr * logits.grad).entropy()


def test_entropic_direction_relative_to_grpo():
    g = torch.Generator().manual_seed(4)
    b, t, v = 4, 12, 6
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, v, (b, t), generator=g)
    peaked = torch.rand(b, t, generator=g) < 0.5
    logits[peaked] += 6.0 * torch.nn.functional.one_hot(tokens[peaked], v)  # p(token) > 0.95
    adv = torch.tensor([1.0, -1.0, 0.5, -0.7], dtype=torch.float64)
    mask = torch.ones(b, t, dtype=torch.float64)
    hp = torch.softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1) > 0.95
    assert hp.any() and not hp.all()
    h_grpo = _step_entropy("grpo", logits, tokens, mask, adv)
    h_sharp = _step_entropy("entropic", logits, tokens, mask, adv, alpha=0.5)
    h_flat = _step_entropy("entropic", logits, tokens, mask, adv, alpha=-0.5)
    assert torch.all(h_sharp[hp] < h_grpo[hp]) and torch.all(h_flat[hp] > h_grpo[hp])
    assert_close(h_sharp[~hp], h_grpo[~hp])
    assert_close(h_flat[~hp], h_grpo[~hp])
    assert h_sharp.mean() < h_grpo.mean() < h_flat.mean()


# --- clipping -------------------------------------------------------------------------------------
def two_tokens(log_ratio: float, adv: float) -> Batch:
    """One response of two tokens: the first at ``rho = exp(log_ratio)``, the second on-policy."""
    logp = torch.tensor([[-0.5, -1.0]])
    old = logp - torch.tensor([[log_ratio, 0.0]])
    return Batch(logp, old, torch.tensor([adv]), torch.ones(1, 2), torch.ones(1, 2))


def test_clip_higher_keeps_gradient_at_ratio_1_25():
    batch = two_tokens(math.log(1.25), 1.0)
    _, grad_grpo, _, out_grpo = run("grpo", batch)
    _, grad_ch, _, out_ch = run("clip_higher", batch)
    assert grad_grpo[0, 0] == 0.0 and out_grpo[M.PG_CLIPFRAC] == 0.5
    assert_close(grad_ch[0, 0], torch.tensor(-1.25 / 2))
    assert out_ch[M.PG_CLIPFRAC] == 0.0


def test_ppo_kl_uses_the_clamped_log_ratio():
    batch = two_tokens(30.0, 1.0)  # log-ratio 30 is clamped to 20 in the loss
    _, _, _, out = run("grpo", batch)
    assert out[M.PPO_KL] == pytest.approx(-(20.0 + 0.0) / 2)


def test_dual_clip_caps_negative_advantage():
    batch = two_tokens(3.0, -1.0)
    loss, grad, _, out = run("grpo", batch)
    assert_close(loss, torch.tensor((3.0 + 1.0) / 2))  # token 0 capped at -c A = 3
    assert grad[0, 0] == 0.0
    assert out[M.PG_CLIPFRAC_LOWER] == 0.5 and out[M.PG_CLIPFRAC] == 0.0
    loss_open, _, _, out_open = run("grpo", batch, dual_clip_c=100.0)
    assert_close(loss_open, torch.tensor((math.exp(3.0) + 1.0) / 2))
    assert out_open[M.PG_CLIPFRAC_LOWER] == 0.0


@pytest.mark.parametrize(
    "method,kw", [("clip_higher", {}), ("kl_cov", {}), ("grpo", {"dual_clip_c": 1.0})]
)
def test_on_policy_clipping_methods_are_inert(method, kw):
    batch = on_policy(make_batch(seed=5))
    result, base = run(method, batch, **kw), run("grpo", batch)
    assert_same(result, base)
    assert result[3][M.PG_CLIPFRAC] == result[3][M.PG_CLIPFRAC_LOWER] == 0.0


# --- covariance-based methods ---------------------------------------------------------------------
def _cov(batch: Batch) -> torch.Tensor:
    n = batch.mask.sum()
    adv = batch.adv[:, None].expand_as(batch.logp)
    mean_logp, mean_adv = (batch.logp * batch.mask).sum() / n, (adv * batch.mask).sum() / n
    return (batch.logp - mean_logp) * (adv - mean_adv)


def _surrogate_grad(batch: Batch) -> torch.Tensor:
    """Gradient of agg(-A rho), computed here independently of the module."""
    logp = batch.logp.clone().requires_grad_()
    loss = (-batch.adv[:, None] * (logp - batch.old).exp() * batch.mask).sum() / batch.mask.sum()
    loss.backward()
    return logp.grad


@pytest.mark.parametrize("ratio", [0.01, 1e-6])
def test_kl_cov_penalises_top_covariance_tokens(ratio):
    batch = make_batch(seed=6, b=8, t=64)
    n = int(batch.mask.sum())
    k = max(1, math.floor(ratio * n))
    _, grad, _, out = run("kl_cov", batch, kl_cov_ratio=ratio, kl_cov_coef=2.0)
    score = _cov(batch).masked_fill(batch.mask == 0, -math.inf).flatten()
    expected = torch.zeros(score.numel(), dtype=torch.bool)
    expected[score.topk(k).indices] = True
    penalised = (grad - _surrogate_grad(batch)).abs().flatten() > 1e-6
    assert torch.equal(penalised, expected)
    assert out[M.PENALISED_FRAC] == pytest.approx(k / n)
    assert out[M.PG_CLIPFRAC] == 0.0 and out[M.DETACHED_FRAC] == 0.0


def test_clip_cov_detaches_budget_among_eligible_tokens():
    batch = on_policy(make_batch(seed=7, b=8, t=64))
    ratio, n = 0.02, int(batch.mask.sum())
    k = max(1, math.floor(ratio * n))
    cov = _cov(batch)
    eligible = (batch.mask > 0) & (cov > 1.0) & (cov < 5.0)
    assert eligible.sum() > k
    kw = {"clip_cov_ratio": ratio}
    _, grad, _, out = run("clip_cov", batch, generator=torch.Generator().manual_seed(0), **kw)
    _, base, _, _ = run("grpo", batch, clip_eps_low=1.0, clip_eps_high=1.0)
    detached = (grad == 0) & (base != 0)
    assert detached.sum() == k and torch.all(eligible[detached])
    assert out[M.DETACHED_FRAC] == pytest.approx(k / n)
    again = run("clip_cov", batch, generator=torch.Generator().manual_seed(0), **kw)[1]
    other = run("clip_cov", batch, generator=torch.Generator().manual_seed(1), **kw)[1]
    assert torch.equal(grad, again) and not torch.equal(grad, other)


def _stale_batch() -> Batch:
    """Off-policy batch with negative-advantage tokens at ratio > 3, where dual-clip would bind."""
    batch = make_batch(seed=8, b=8, t=64)
    old = batch.old.clone()
    old[1, :10] = batch.logp[1, :10] - 1.5  # response 1 has A < 0 (make_batch); rho = e^1.5 ~ 4.5
    return replace(batch, old=old)


@pytest.mark.parametrize("dual_clip", [False, True])
def test_clip_cov_skips_already_clipped_tokens(dual_clip):
    batch = _stale_batch()
    eps = {"clip_eps_low": 0.2, "clip_eps_high": 0.2, "dual_clip": dual_clip}
    adv = batch.adv[:, None].expand_as(batch.logp)
    rho = (batch.logp - batch.old).exp()
    dual = (adv < 0) & (rho > 3.0) & dual_clip
    clipped = ((adv > 0) & (rho > 1.2)) | ((adv < 0) & (rho < 0.8)) | dual
    cov = _cov(batch)
    expected = (batch.mask > 0) & (cov > 1.0) & (cov < 5.0) & ~clipped
    assert expected.any() and (clipped & (cov > 1.0) & (cov < 5.0) & (batch.mask > 0)).any()
    loss, _, _, out = run("clip_cov", batch, clip_cov_ratio=0.9, **eps)  # budget > eligible
    per_token = torch.maximum(-adv * rho, -adv * rho.clamp(0.8, 1.2))
    per_token = torch.where(dual, -3.0 * adv, per_token)
    n = batch.mask.sum()
    assert_close(loss, (per_token * batch.mask * ~expected).sum() / n)
    assert out[M.DETACHED_FRAC] == pytest.approx((expected.sum() / n).item())


def test_clip_cov_default_is_cui_et_al_without_dual_clip():
    # Clip-Cov as published (Entropy-Mechanism-of-RL / verl): max(-A rho, -A clip(rho, 1 - eps, 1 + eps))
    # with eps = 1 and no cap for A < 0; only tokens the ordinary clip silenced are not candidates.
    batch = _stale_batch()
    adv = batch.adv[:, None].expand_as(batch.logp)
    rho = (batch.logp - batch.old).exp()
    stale = (adv < 0) & (rho > 3.0) & (batch.mask > 0)
    assert stale.sum() >= 10
    seeded = torch.Generator().manual_seed(0)
    loss, grad, _, out = run("clip_cov", batch, clip_cov_ratio=1e-9, generator=seeded)
    per_token = torch.maximum(-adv * rho, -adv * rho.clamp(0.0, 2.0))
    clipped = (adv > 0) & (rho > 2.0)  # the ordinary clip's zero-gradient branch
    kept = ~((grad == 0) & ~clipped & (batch.mask > 0))  # all but the one detached token
    assert (~kept).sum() == 1 and out[M.DETACHED_FRAC] == pytest.approx(1 / batch.mask.sum().item())
    assert_close(loss, (per_token * batch.mask * kept).sum() / batch.mask.sum())
    assert torch.all(grad[stale & kept] != 0)  # dual-clip would have zeroed these
    assert out[M.PG_CLIPFRAC_LOWER] == 0.0


# --- contract -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS + tuple(LOSSES))
def test_every_method_returns_all_loss_keys(method):
    loss, _, _, out = run(method, make_batch(), alpha=0.3)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(out) == set(M.LOSS_KEYS)
    assert all(type(v) is float and math.isfinite(v) for v in out.values())


def test_shared_metrics_values():
    batch = make_batch()
    _, _, _, out = run("grpo", batch)
    n = batch.mask.sum()
    kl = ((batch.old - batch.logp) * batch.mask).sum() / n
    assert out[M.PPO_KL] == pytest.approx(kl.item())
    hp = ((batch.logp > math.log(0.95)) & (batch.mask > 0)).sum()
    assert out[M.HIGH_PROB_FRAC] == pytest.approx((hp / n).item())
    assert out[M.DETACHED_FRAC] == out[M.PENALISED_FRAC] == 0.0


def test_unknown_method_lists_allowed_values():
    with pytest.raises(UserError, match="entropic_p") as info:
        run("entropix", make_batch())
    assert isinstance(info.value, ValueError) and "grpo" in str(info.value)


def test_unknown_hparam_lists_allowed_names():
    with pytest.raises(ValueError, match="clip_eps") as info:
        run("grpo", make_batch(), clip_eps=0.3)
    assert "clip_eps_high" in str(info.value) and "kl_cov_coef" in str(info.value)


@pytest.mark.parametrize("method", ["entropy_bonus", "adaptive_entropy"])
def test_entropy_required_for_bonus_losses(method):
    batch = make_batch()
    with pytest.raises(ValueError, match="entropy"):
        compute_policy_loss(method, batch.logp, batch.old, batch.adv, batch.mask)


@pytest.mark.parametrize("method", METHODS)
def test_vector_advantages_equal_broadcast(method):
    batch = make_batch()
    full = replace(batch, adv=batch.adv[:, None].expand_as(batch.logp).clone())
    kw = {"alpha": 0.3}
    a = run(method, batch, generator=torch.Generator().manual_seed(0), **kw)
    b = run(method, full, generator=torch.Generator().manual_seed(0), **kw)
    assert_same(a, b)
    assert a[3] == pytest.approx(b[3])


# issue 16: methods.LOSS_PARAMS (what --dry-run lists per trial) is what each registered loss reads.
PERTURBED = {"clip_eps_low": 0.05, "clip_eps_high": 0.05, "dual_clip_c": 1.2, "dual_clip": 0.0,
             "beta": 0.5, "tau": 0.3, "clip_cov_ratio": 0.5, "clip_cov_lb": -50.0, "clip_cov_ub": 0.0,
             "kl_cov_ratio": 0.5, "kl_cov_coef": 3.0, "positive_weight": 0.3, "entropy_quantile": 0.6}


def _loss_and_grads(name: str, batch: Batch, hp: dict) -> tuple:
    # clip_cov's random token choice is seeded alike in both calls; alpha reaches the losses that read it
    loss, grad, ent_grad, _ = run(name, batch, alpha=0.5, generator=torch.Generator().manual_seed(0), **hp)
    return loss, grad, torch.zeros_like(grad) if ent_grad is None else ent_grad


@pytest.mark.parametrize("method", METHODS)
def test_used_loss_keys_are_the_hyper_parameters_each_method_reads(method):
    from entropic_tune.config import load_config, to_flat
    from entropic_tune.methods import LOSS_DEFAULTS, LOSS_PARAMS, loss_defaults, used_keys

    assert set(PERTURBED) == set(LOSS_DEFAULTS) and set(LOSS_PARAMS) == set(LOSSES)
    used = {k.removeprefix("loss.") for k in used_keys(to_flat(load_config({"method": method})))}
    # far off-policy, large advantages: every clip, the dual clip and the covariance bands bind
    batch = make_batch(seed=3, b=8, t=16)
    batch = replace(batch, old=batch.logp + 1.5 * torch.randn(8, 16, generator=torch.Generator().manual_seed(1)),
                    adv=3.0 * batch.adv)
    base = _loss_and_grads(method, batch, {})
    flags = {"dual_clip": 1.0 - loss_defaults(method)["dual_clip"]}  # a flag is perturbed by flipping it
    for key, value in {**PERTURBED, **flags}.items():
        changed = _loss_and_grads(method, batch, {key: value})
        differs = any(not torch.allclose(a, b) for a, b in zip(base, changed, strict=True))
        assert differs == (key in used), (method, key, "changes" if differs else "no change")

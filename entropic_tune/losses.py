"""Policy losses for GRPO and the entropy-control methods, registered by name (METHOD.md 2-4).

Every loss starts from GRPO's per-token clipped surrogate with dual-clip and token-mean aggregation,
and changes as little as possible, so that ablations isolate one mechanism:

- ``grpo``: ``max(-A rho, -A clip(rho, 1-eps_low, 1+eps_high))``, capped at ``-c A`` for ``A < 0``
  (dual-clip, ``dual_clip``), times ``lambda`` on positive-advantage tokens (``positive_weight``, 1).
- ``clip_higher``: the same loss; only its preset default ``eps_high = 0.28`` differs (DAPO), which
  lets positive-advantage tokens keep rising. Inert on-policy, where ``rho == 1``.
- ``entropy_bonus``: keeps the surrogate and subtracts ``beta * agg(h)`` with gradient through ``h``;
  a fixed pressure towards high entropy with no target.
- ``adaptive_entropy``: the same bonus weighted by the controller output ``alpha = c_k * g_k``; the
  controller, not the loss, decides the weight (Skywork-OR1's AEC).
- ``clip_cov``: keeps the surrogate (its preset opens the clip, ``eps = 1``, and drops dual-clip as
  Cui et al. do) and zeroes the loss of a few random tokens whose covariance ``cov_t`` between
  log-prob and advantage lies in ``(lb, ub)``: those tokens drive entropy collapse. Acts on-policy too.
- ``kl_cov``: drops clipping and dual-clip (``-A rho`` everywhere) and adds ``coef * |logp - old_logp|``
  on the top-covariance tokens; the penalty has zero gradient on-policy, so it is inert there.
- ``entropic``: keeps the surrogate and adds ``alpha * agg_HP(-rho |A|)`` over high-probability tokens
  (``logp > log(tau)``, all tokens when ``tau = 0``). On-policy this reweights HP tokens by
  ``1 + alpha * sign(A) * N_all / N_hp``; ``alpha > 0`` sharpens, ``alpha < 0`` flattens; ``alpha = 0`` is
  GRPO exactly. ``entropic_p`` differs only in its controller.
- ``w_reinforce``: the GRPO loss; only its preset ``lambda = 0.1`` differs (Zhu et al.), so positive
  samples are reinforced ten times less than negative ones are penalised; ``nsr`` is ``lambda = 0``.
- ``forking_tokens``: the surrogate on the ``ceil(q N)`` response tokens of highest entropy only
  (Wang et al.), token-mean over those tokens; ``q = 1`` is GRPO exactly.

``compute_policy_loss(..., bonus=b)`` subtracts ``b * agg(h)`` from any loss (the ``entropy_bonus``
actuator, :mod:`entropic_tune.actuators`).

A loss is a function ``LossInputs -> (loss, metrics)``; metrics are detached 0-dim tensors keyed by
``metrics.LOSS_KEYS`` and converted to floats once, in :func:`compute_policy_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from . import metrics as M
from .distributed import Collective, token_mean
from .errors import unknown
from .methods import LOSS_DEFAULTS, METHODS, loss_defaults, method_preset

Metrics = dict[str, torch.Tensor]
LossFn = Callable[["LossInputs"], tuple[torch.Tensor, Metrics]]
LOSSES: dict[str, LossFn] = {}

LOG_RATIO_BOUND = 20.0  # keeps exp(logp - old_logp) finite for badly stale tokens


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Decorator adding a loss to :data:`LOSSES` under ``name`` (one shared signature)."""

    def decorate(fn: LossFn) -> LossFn:
        assert name not in LOSSES, f"loss '{name}' registered twice"
        LOSSES[name] = fn
        return fn

    return decorate


@dataclass(frozen=True)
class LossInputs:
    """Per-token inputs shared by every loss; all tensors ``(B, T)``, masked positions sanitised."""

    logp: torch.Tensor  # current log-probs of the sampled tokens, with grad
    old_logp: torch.Tensor  # behaviour log-probs, detached
    log_ratio: torch.Tensor  # clamp(logp - old_logp, -20, 20), 0 off the mask, with grad
    ratio: torch.Tensor  # exp(log_ratio), unclipped, with grad
    adv: torch.Tensor  # advantages broadcast over T, detached
    mask: torch.Tensor  # 1.0 on response tokens (float, logp's dtype)
    entropy: torch.Tensor | None  # full-vocabulary entropy h_t, with grad (bonus losses only)
    alpha: float  # controller output for this step, no gradient
    hp: Mapping[str, float]  # loss hyper-parameters (methods.LOSS_DEFAULTS keys)
    generator: torch.Generator | None  # random source for clip_cov's token choice
    dist: Collective | None = None  # the data-parallel group (None: this batch is the whole batch)
    rows: int | None = None  # rows of this worker's part of the global batch (default all: B)
    worker_selection: bool = False  # top-k selections over this worker's tokens only (train.selection)

    def agg(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """This worker's share of the global token-mean ``sum(m x) / N`` (``N`` all-reduced): summed
        over the workers it is the global mean; without ``dist`` it is ``metrics.aggregate``."""
        if self.dist is None:
            return M.aggregate(values, mask)
        mask = mask.to(values.dtype)
        return (values * mask).sum() / self.dist.sum(mask.sum()).clamp_min(1.0)

    def mean(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The global token-mean itself on every worker (detached when ``dist``)."""
        return token_mean(values, mask, self.dist)

    def count(self, mask: torch.Tensor) -> torch.Tensor:
        """Response tokens a selection budget is a share of, 0-dim: the global batch's, or this
        worker's own with ``worker_selection``."""
        return mask.sum() if self.dist is None or self.worker_selection else self.dist.sum(mask.sum())

    def top_k(self, score: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """:func:`top_k_mask` over the global batch: the scores are gathered in global row order, every
        worker selects from the same tensor and keeps its own rows. With ``worker_selection`` each worker
        selects among its own rows (``k`` from :meth:`count`, its own tokens). ``score`` (B, T)."""
        if self.dist is None or self.worker_selection:
            return top_k_mask(score, k)
        rows = score.shape[0] if self.rows is None else self.rows
        full, offset = self.dist.gather_rows(score, rows)
        mine = top_k_mask(full, k)[offset : offset + rows]
        return torch.cat([mine, mine.new_zeros((score.shape[0] - rows, score.shape[1]))])

    def uniform(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """Uniform noise of ``shape`` (B, T) from ``generator``, drawn for the global batch (the same
        draws on every worker: the generator is replicated) so the token choice does not depend on W."""
        if self.dist is None:
            if self.generator is None:
                return torch.rand(shape, device=device)
            return torch.rand(shape, generator=self.generator, device=self.generator.device).to(device)
        rows = shape[0] if self.rows is None else self.rows
        counts = self.dist.sizes(rows, device)
        offset = sum(counts[: self.dist.rank])
        full = torch.rand((sum(counts), shape[1]), generator=self.generator,
                          device=self.generator.device if self.generator is not None else device).to(device)
        mine = full[offset : offset + rows]
        return torch.cat([mine, mine.new_zeros((shape[0] - rows, shape[1]))])

    @property
    def high_prob(self) -> torch.Tensor:
        """Float mask of response tokens with ``logp > log(tau)`` (every token when ``tau <= 0``)."""
        tau = self.hp["tau"]
        threshold = math.log(tau) if tau > 0 else -math.inf
        return self.mask * (self.logp.detach() > threshold).to(self.mask.dtype)


@dataclass(frozen=True)
class Surrogate:
    """GRPO's per-token clipped surrogate and where each clip is active; tensors ``(B, T)``."""

    loss: torch.Tensor  # l_t, to minimise
    clipped: torch.Tensor  # bool: the clipped branch is taken (its gradient is zero)
    dual_clipped: torch.Tensor  # bool: A < 0 and l_t capped at -c A

    def metrics(self, mask: torch.Tensor, loss: torch.Tensor | None = None,
                agg: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = M.aggregate) -> Metrics:
        """pg_loss (of ``loss``, default the surrogate) and both clip fractions over ``mask``; ``agg``:
        :meth:`LossInputs.agg` (a worker's share of the global mean)."""
        pg = agg(self.loss if loss is None else loss, mask)
        return {
            M.PG_LOSS: pg.detach(),
            M.PG_CLIPFRAC: agg(self.clipped.to(mask.dtype), mask),
            M.PG_CLIPFRAC_LOWER: agg(self.dual_clipped.to(mask.dtype), mask),
        }


def clipped_surrogate(inp: LossInputs) -> Surrogate:
    """``l_t = max(-A rho, -A clip(rho, 1-eps_low, 1+eps_high))``; ``l_t = min(l_t, -c A)`` if ``A < 0``
    and ``dual_clip``; then ``l_t <- lambda * l_t`` where ``A > 0`` (``lambda = positive_weight``)."""
    eps_low, eps_high, c = inp.hp["clip_eps_low"], inp.hp["clip_eps_high"], inp.hp["dual_clip_c"]
    unclipped = -inp.adv * inp.ratio  # (B, T)
    clipped = -inp.adv * inp.ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # (B, T)
    loss = torch.maximum(unclipped, clipped)
    cap = -c * inp.adv  # (B, T)
    dual = (inp.adv < 0) & (loss > cap) & bool(inp.hp["dual_clip"])  # all False when off (Clip-Cov)
    loss = torch.where(dual, cap, loss)
    weight = inp.hp["positive_weight"]
    if weight != 1.0:  # GRPO's lambda = 1 skips the op, so its loss stays bit for bit what it was
        loss = torch.where(inp.adv > 0, weight * loss, loss)
    return Surrogate(loss, clipped > unclipped, dual)


def token_covariance(inp: LossInputs) -> torch.Tensor:
    """Detached ``cov_t = (logp_t - mean logp)(A_t - mean A)``, means over the global batch's response
    tokens. (B, T)."""
    logp = inp.logp.detach()
    return (logp - inp.mean(logp, inp.mask)) * (inp.adv - inp.mean(inp.adv, inp.mask))


def token_budget(ratio: float, count: torch.Tensor) -> torch.Tensor:
    """``max(1, floor(ratio * N))`` as a 0-dim tensor (float64 so the floor matches Python's); ``count``
    is ``N``, the global batch's response tokens (:meth:`LossInputs.count`)."""
    return torch.floor(count.double() * ratio).clamp_min(1.0)


def top_k_mask(score: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool mask of the ``k`` largest finite entries of ``score`` (``-inf`` never selected).

    Ranks are computed on device, so no host sync is needed for a data-dependent ``k``.
    """
    order = score.flatten().argsort(descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return (rank.view_as(score) < k) & torch.isfinite(score)


def require_entropy(inp: LossInputs, name: str) -> torch.Tensor:
    if inp.entropy is None:
        raise ValueError(f"loss '{name}' needs `entropy` (B, T) with grad; got None")
    return inp.entropy


@register_loss("grpo")
@register_loss("clip_higher")
@register_loss("w_reinforce")
def grpo_loss(inp: LossInputs) -> tuple[torch.Tensor, Metrics]:
    """``L = agg(l_t)`` (clip_higher only changes the ``clip_eps_high`` default, w_reinforce and nsr
    only ``positive_weight``)."""
    surrogate = clipped_surrogate(inp)
    return inp.agg(surrogate.loss, inp.mask), surrogate.metrics(inp.mask, agg=inp.agg)


@register_loss("entropy_bonus")
def entropy_bonus_loss(inp: LossInputs) -> tuple[torch.Tensor, Metrics]:
    """``L = L_grpo - beta * agg(h)``."""
    h = require_entropy(inp, "entropy_bonus")
    surrogate = clipped_surrogate(inp)
    loss = inp.agg(surrogate.loss, inp.mask) - inp.hp["beta"] * inp.agg(h, inp.mask)
    return loss, surrogate.metrics(inp.mask, agg=inp.agg)


@register_loss("adaptive_entropy")
def adaptive_entropy_loss(inp: LossInputs) -> tuple[torch.Tensor, Metrics]:
    """``L = L_grpo - alpha * agg(h)`` with ``alpha = c_k * g_k`` from the adaptive controller."""
    h = require_entropy(inp, "adaptive_entropy")
    surrogate = clipped_surrogate(inp)
    loss = inp.agg(surrogate.loss, inp.mask) - inp.alpha * inp.agg(h, inp.mask)
    return loss, surrogate.metrics(inp.mask, agg=inp.agg)


@register_loss("entropic")
def entropic_loss(inp: LossInputs) -> tuple[torch.Tensor, Metrics]:
    """``L = L_grpo + alpha * agg_HP(-rho |A|)``; token-mean over HP tokens only (0 when none)."""
    surrogate = clipped_surrogate(inp)
    reweight = inp.agg(-inp.ratio * inp.adv.abs(), inp.high_prob)
    loss = inp.agg(surrogate.loss, inp.mask) + inp.alpha * reweight
    return loss, surrogate.metrics(inp.mask, agg=inp.agg)


@register_loss("forking_tokens")
def forking_tokens_loss(inp: LossInputs) -> tuple[torch.Tensor, Metrics]:
    """``L = agg_F(l_t)``: token-mean over the forking tokens ``F``, the ``max(1, ceil(q N))`` response
    tokens of highest entropy ``h_t`` (detached; exactly k, ties broken by the sort), ``q =
    entropy_quantile``.

    As Wang et al.'s code: top-k over the whole (mini-)batch with ``k = floor(q N + 0.9999)`` (a ceil
    with float slack), and the selection becomes the loss mask, so the mean is over ``F``; keeping all
    ``N`` tokens in the denominator instead would only scale the step by ``k / N``.
    """
    h = require_entropy(inp, "forking_tokens").detach()
    surrogate = clipped_surrogate(inp)
    k = torch.floor(inp.count(inp.mask).double() * inp.hp["entropy_quantile"] + 0.9999).clamp_min(1.0)
    forking = inp.top_k(torch.where(inp.mask > 0, h, -math.inf), k).to(inp.mask.dtype)  # (B, T)
    loss = inp.agg(surrogate.loss, forking)
    out = surrogate.metrics(inp.mask, agg=inp.agg)
    out[M.PG_LOSS] = loss.detach()
    return loss, out


@register_loss("clip_cov")
def clip_cov_loss(inp: LossInputs) -> tuple[torch.Tensor, Metrics]:
    """``L = agg(l_t * (1 - d_t))``: ``d_t`` marks ``max(1, floor(r N))`` random tokens with
    ``lb < cov_t < ub`` that neither clip already silenced (fewer if fewer are eligible)."""
    surrogate = clipped_surrogate(inp)
    cov = token_covariance(inp)
    eligible = (inp.mask > 0) & ~surrogate.clipped & ~surrogate.dual_clipped
    eligible &= (cov > inp.hp["clip_cov_lb"]) & (cov < inp.hp["clip_cov_ub"])
    noise = inp.uniform(cov.shape, cov.device)
    score = torch.where(eligible, noise.to(cov.device, cov.dtype), -math.inf)
    detached = inp.top_k(score, token_budget(inp.hp["clip_cov_ratio"], inp.count(inp.mask)))
    loss_t = torch.where(detached, torch.zeros_like(surrogate.loss), surrogate.loss)
    out = surrogate.metrics(inp.mask, loss_t, agg=inp.agg)
    out[M.DETACHED_FRAC] = inp.agg(detached.to(inp.mask.dtype), inp.mask)
    return inp.agg(loss_t, inp.mask), out


@register_loss("kl_cov")
def kl_cov_loss(inp: LossInputs) -> tuple[torch.Tensor, Metrics]:
    """``l_t = -A rho + coef * |logp - old_logp| * p_t`` with no clipping; ``p_t`` marks the top
    ``max(1, floor(k N))`` response tokens by ``cov_t``."""
    cov = token_covariance(inp)
    score = torch.where(inp.mask > 0, cov, -math.inf)
    penalised = inp.top_k(score, token_budget(inp.hp["kl_cov_ratio"], inp.count(inp.mask)))
    penalty = inp.hp["kl_cov_coef"] * inp.log_ratio.abs()  # (B, T)
    loss_t = -inp.adv * inp.ratio + torch.where(penalised, penalty, torch.zeros_like(penalty))
    loss = inp.agg(loss_t, inp.mask)
    penalised_frac = inp.agg(penalised.to(inp.mask.dtype), inp.mask)
    return loss, {M.PG_LOSS: loss.detach(), M.PENALISED_FRAC: penalised_frac}


def resolve_loss(method: str) -> tuple[str, dict[str, float]]:
    """Map a method (or a bare loss name) to its registered loss name and default hparams."""
    if method in METHODS:
        return str(method_preset(method)["loss.name"]), loss_defaults(method)
    if method in LOSSES:
        return method, dict(LOSS_DEFAULTS)
    raise unknown("method or loss", method, set(METHODS) | set(LOSSES))


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of ``KL(pi_theta || pi_ref)`` from the sampled tokens, (B, T) -> (B, T).

    ``k3_t = exp(d_t) - d_t - 1`` with ``d_t = log pi_ref(y_t) - log pi_theta(y_t)`` (Schulman's "k3";
    GRPO's penalty in DeepSeekMath, Shao et al. 2024, eq. 4): unbiased for the KL when ``y_t ~ pi_theta``
    and ``>= 0`` for every ``d`` (``e^d >= 1 + d``), 0 exactly where the two policies agree. Its
    gradient is ``(1 - e^{d_t}) grad log pi_theta(y_t)``: pulls up tokens the reference likes more.
    ``d`` is clamped to ``[-20, 20]`` like the ratio's log; masked positions give 0. ``ref_logp`` is
    detached."""
    on = mask > 0
    d = torch.where(on, ref_logp.detach() - logp, torch.zeros_like(logp)).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    return torch.exp(d) - d - 1.0


def build_inputs(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    entropy: torch.Tensor | None,
    alpha: float,
    hp: Mapping[str, float],
    generator: torch.Generator | None,
    dist: Collective | None = None,
    rows: int | None = None,
    worker_selection: bool = False,
) -> LossInputs:
    """Check shapes, broadcast ``(B,)`` advantages over T and sanitise masked positions."""
    if old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must have the same (B, T) shape"
        )
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)  # (B,) -> (B, 1): one advantage per response
    on = mask > 0
    # Zero padding before any arithmetic so garbage there (even -inf) can neither leak into the
    # forward value nor send a non-zero gradient back to masked positions.
    zeros = torch.zeros_like(logprobs)
    logp = torch.where(on, logprobs, zeros)  # (B, T)
    old_logp = torch.where(on, old_logprobs.detach(), zeros)  # (B, T)
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)  # (B, T)
    if entropy is not None:
        entropy = torch.where(on, entropy, torch.zeros_like(entropy))
    return LossInputs(
        logp=logp,
        old_logp=old_logp,
        log_ratio=log_ratio,
        ratio=torch.exp(log_ratio),
        adv=advantages.detach().to(logprobs.dtype).expand_as(logprobs),
        mask=on.to(logprobs.dtype),
        entropy=entropy,
        alpha=float(alpha),
        hp=hp,
        generator=generator,
        dist=dist,
        rows=rows,
        worker_selection=worker_selection,
    )


def compute_policy_loss(
    method: str,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    entropy: torch.Tensor | None = None,
    alpha: float = 0.0,
    bonus: float = 0.0,
    generator: torch.Generator | None = None,
    dist: Collective | None = None,
    rows: int | None = None,
    worker_selection: bool = False,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    **hparams: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar token-mean policy loss of ``method`` and every ``metrics.LOSS_KEYS`` value as a float.

    Shapes: ``logprobs`` (with grad), ``old_logprobs``, ``mask`` and ``entropy`` are ``(B, T)``;
    ``advantages`` is ``(B, T)`` or ``(B,)``. ``alpha`` is the controller output for the step (EntroPIC's
    alpha, or ``c_k * g_k`` for ``adaptive_entropy``); ``bonus`` a further entropy bonus ``- bonus *
    agg(h)`` on top of any loss (the entropy_bonus actuator). ``generator`` drives clip_cov's choice.
    ``kl_coef > 0`` adds ``kl_coef * agg(k3)`` (:func:`k3_kl`) to any loss, with ``ref_logprobs`` (B, T)
    the reference policy's log-probs of the same tokens (``loss.kl_coef``; 0 leaves the loss's bits).
    ``hparams`` override the method's defaults (keys of ``methods.LOSS_DEFAULTS``).

    ``dist`` (several workers, METHOD.md 7): the inputs are this worker's first ``rows`` rows of the
    global batch (further rows are all-masked padding); the returned loss is this worker's share
    ``sum_{t in r} m_t l_t / N`` (summed over workers: the global loss) and the metrics are the global
    batch's (all-reduced). Every token-mean, count and top-k is over the global batch, except that
    ``worker_selection`` (``train.selection: worker``) makes the top-k selections of Clip-Cov, KL-Cov
    and forking tokens per worker: ``k_r`` from worker r's own token count, chosen among its own tokens
    (Cui et al.'s per-GPU selection; the means inside ``cov_t`` stay global).
    """
    name, hp = resolve_loss(method)
    for key, value in hparams.items():
        if key not in hp:
            raise unknown("loss hparam", key, hp)
        hp[key] = float(value)
    inp = build_inputs(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        entropy=entropy,
        alpha=alpha,
        hp=hp,
        generator=generator,
        dist=dist,
        rows=rows,
        worker_selection=worker_selection,
    )
    loss, out = LOSSES[name](inp)
    if bonus != 0.0:  # 0 (every actuator but entropy_bonus) skips the op: the loss keeps its bits
        h = require_entropy(inp, "bonus (entropy_bonus actuator)")
        loss = loss - bonus * inp.agg(h, inp.mask)
    if kl_coef != 0.0:  # 0 (the default) skips the op: the loss keeps its bits
        if ref_logprobs is None or ref_logprobs.shape != logprobs.shape:
            raise ValueError(f"kl_coef {kl_coef} needs ref_logprobs of shape {tuple(logprobs.shape)}")
        loss = loss + kl_coef * inp.agg(k3_kl(inp.logp, ref_logprobs, inp.mask), inp.mask)
    # The same clamped log-ratio the loss uses: a badly stale token counts as +/-20, not as its raw value.
    out.setdefault(M.PPO_KL, inp.agg(-inp.log_ratio.detach(), inp.mask))
    out.setdefault(M.HIGH_PROB_FRAC, inp.agg(inp.high_prob, inp.mask))
    zero = torch.zeros((), dtype=torch.float64, device=logprobs.device)
    stacked = torch.stack([out.get(k, zero).detach().double() for k in M.LOSS_KEYS])
    values = (stacked if dist is None else dist.sum(stacked)).tolist()
    return loss, dict(zip(M.LOSS_KEYS, values, strict=True))


__all__ = ["LOSSES", "LossInputs", "compute_policy_loss", "k3_kl", "register_loss", "resolve_loss"]

"""One typed, frozen config tree and the one strict loader that builds it.

Ray, YAML and the CLI deal in dicts; everything inside the package receives a :class:`Config`.
:func:`load_config` accepts nested dicts, flat ``section.key`` or ``section/key`` keys, YAML files and
``--set section.key=value`` strings. Unknown keys are errors that name the closest valid key; ints are
coerced to floats where a field is a float. A ``method`` expands to its preset
(:mod:`entropic_tune.methods`) before explicit keys are applied, so explicit keys win.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .actuators import ACTUATORS
from .errors import UserError, closest, unknown
from .extras import check_packages
from .methods import LOSS_DEFAULTS, METHODS, method_preset

LOSSES = ("grpo", "entropy_bonus", "clip_higher", "clip_cov", "kl_cov", "adaptive_entropy", "entropic",
          "w_reinforce", "forking_tokens")
CONTROLLERS = ("constant", "pi", "adaptive")
TASKS = ("arithmetic", "dataset", "jsonl", "paths", "reasoning_gym")
SPLITS = ("test", "validation")
ENGINES = ("native", "trl")
"""``train.engine``: the project's own trainer, or TRL's GRPOTrainer (``entropic_tune.engines.trl``)."""
ON_OFF_KEYS = ("model.compile",)  # string choices spelled on/off, which YAML (and --set) parse as booleans


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{key}: '{value}' is not allowed{closest(value, allowed)}; allowed: {', '.join(allowed)}")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"{key}: {message}")


LOGITS_CHUNK_BYTES = 2**30
"""fp32 logits one chunk of `model.logits_chunk: -1` holds: 1 GiB."""


@dataclass(frozen=True)
class ModelConfig:
    path: str | None = None
    """Local Hugging Face model directory (config + weights + tokenizer); None = built-in tiny model."""
    arch: str = "qwen2"
    """Architecture of the built-in tiny model: 'qwen2' or 'llama' (ignored when `path` is set)."""
    hidden_size: int = 64
    """Width of the built-in tiny model."""
    num_layers: int = 2
    """Decoder layers of the built-in tiny model."""
    num_heads: int = 4
    """Attention heads of the built-in tiny model."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    dtype: str = "auto"
    """Parameter dtype: 'auto' (fp32 on CPU, fp32 weights with bf16 autocast on CUDA), 'float32', 'bfloat16'."""
    trust_remote_code: bool = False
    """Passed to transformers when loading `path`; off unless the user turns it on."""
    warmstart_steps: int = 600
    """Supervised steps on worked solutions before RL (0 = none; only for the built-in model)."""
    warmstart_lr: float = 3e-3
    """Learning rate of the warm-start."""
    warmstart_corrupt_prob: float = 0.5
    """Share of warm-start examples whose worked solution contains a wrong step (sets base accuracy)."""
    cache_dir: str | None = None
    """Warm-start cache; default `$ENTROPIC_TUNE_CACHE` or `~/.cache/entropic_tune`."""
    compile: str = "auto"
    """torch.compile of the decoding step (static KV cache) and of the update's log-prob/entropy
    forward: 'off' (eager, the results of the eager code bit for bit), 'on', or 'auto' (only where it
    pays: decoding on a supported model on CUDA or for runs of >= 100 steps, the update forward on
    CUDA; see BENCHMARKS.md). Compiled: the same tokens for the same seed as 'off' and metrics equal
    up to float rounding (over long runs a near-tie can pick another token, and the runs drift apart)."""
    logits_chunk: int = -1
    """Response tokens whose LM-head logits the log-prob/entropy forward holds at once (update,
    behaviour log-probs, evaluation): a batch with more runs the head, log-softmax and entropy over
    chunks of this many tokens, recomputed in the backward, so memory grows with the chunk, not with
    rows x length x vocabulary (METHOD.md 1). -1 (default) = as many tokens as fill 1 GiB of fp32
    logits (1,766 with Qwen2.5's 151,936-token vocabulary; the built-in model's ~20-token vocabulary
    never reaches it, so its runs are unchanged bit for bit); 0 = never chunk. Values equal the
    unchunked ones up to float rounding."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the update's backward instead of keeping them
    (transformers' gradient checkpointing, non-reentrant): less memory, about one more forward of time."""
    lora_r: int = 0
    """LoRA rank through PEFT (0 = train every weight). With LoRA only the adapters train, and the KL
    reference (`loss.kl_coef`) is the model with its adapters disabled. Needs `pip install 'entropic-tune[lora]'`."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator: the adapter's update is `(lora_alpha / lora_r) B A x`."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA adapters' input in training (0 keeps the update forward deterministic)."""
    lora_target_modules: str = "all-linear"
    """Modules that get adapters: 'all-linear' (every linear layer but the output head, PEFT's shortcut)
    or comma-separated module names, e.g. 'q_proj,k_proj,v_proj,o_proj'."""

    def chunk_tokens(self, vocab: int) -> int:
        """`logits_chunk` resolved for a vocabulary of `vocab` tokens (0 = unchunked)."""
        if self.logits_chunk >= 0:
            return self.logits_chunk
        return max(1, LOGITS_CHUNK_BYTES // (4 * max(vocab, 1)))

    @property
    def lora_modules(self) -> str | list[str]:
        """`lora_target_modules` as PEFT takes it: 'all-linear', or the list of names."""
        names = [n.strip() for n in self.lora_target_modules.split(",") if n.strip()]
        return "all-linear" if names == ["all-linear"] else names

    @property
    def cache_root(self) -> Path:
        """The warm-start cache folder: `cache_dir`, else `$ENTROPIC_TUNE_CACHE`, else
        `~/.cache/entropic_tune`."""
        return Path(self.cache_dir or os.environ.get("ENTROPIC_TUNE_CACHE") or "~/.cache/entropic_tune").expanduser()

    def __post_init__(self) -> None:
        _choice("model.arch", self.arch, ("qwen2", "llama"))
        _choice("model.compile", self.compile, ("auto", "on", "off"))
        _choice("model.device", self.device, ("auto", "cpu", "cuda"))
        _choice("model.dtype", self.dtype, ("auto", "float32", "bfloat16"))
        _check(self.hidden_size > 0 and self.num_layers > 0, "model.hidden_size/num_layers", "must be positive")
        _check(self.num_heads > 0 and self.hidden_size % self.num_heads == 0, "model.num_heads",
               f"must be positive and divide model.hidden_size={self.hidden_size}")
        _check(self.logits_chunk >= -1, "model.logits_chunk", f"must be >= -1 (-1 = auto, 0 = unchunked), got {self.logits_chunk}")
        _check(self.lora_r >= 0, "model.lora_r", f"must be >= 0 (0 = no LoRA), got {self.lora_r}")
        _check(self.lora_alpha > 0, "model.lora_alpha", f"must be > 0, got {self.lora_alpha}")
        _check(0.0 <= self.lora_dropout < 1.0, "model.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        _check(bool(self.lora_modules), "model.lora_target_modules",
               "must name modules ('all-linear' or comma-separated names such as 'q_proj,v_proj')")
        _check(self.warmstart_steps >= 0, "model.warmstart_steps", f"must be >= 0, got {self.warmstart_steps}")
        _check(self.warmstart_lr > 0, "model.warmstart_lr", f"must be > 0, got {self.warmstart_lr}")
        _check(0.0 <= self.warmstart_corrupt_prob <= 1.0, "model.warmstart_corrupt_prob",
               f"must be in [0, 1], got {self.warmstart_corrupt_prob}")


@dataclass(frozen=True)
class TaskConfig:
    name: str = "arithmetic"
    """Task registry name: 'arithmetic' (embedded, generated), 'paths' (the same problems, two solution
    paths: see `direct_share`), 'jsonl' (a file of prompt/answer lines), 'dataset' (a GSM8K- or
    MATH-layout parquet/JSONL file read through Hugging Face `datasets`) or 'reasoning_gym' (a procedural
    dataset of the reasoning-gym package: `dataset`, `dataset_config`; needs the `tasks` extra)."""
    path: str | None = None
    """The training file of 'jsonl' (one {"prompt": ..., "answer": ...} object per line) or 'dataset'
    (.parquet, .jsonl or .json, optionally .gz)."""
    eval_path: str | None = None
    """Optional separate held-out file (same format as `path`); otherwise the last `eval_size` records of
    `path` are held out."""
    layout: str = "auto"
    """'dataset': the file's columns: 'gsm8k' (question; answer ending in '#### N'), 'math' (problem;
    solution with \\boxed{}; optional answer), 'prompt' (prompt, answer, optional solution) or 'auto'
    (picked from the columns)."""
    prompt_column: str | None = None
    """'dataset': rename the layout's prompt column (question / problem / prompt)."""
    answer_column: str | None = None
    """'dataset': rename the layout's answer column (gsm8k: the one with '####'; math: the optional one)."""
    solution_column: str | None = None
    """'dataset': rename the layout's worked-solution column (math: solution)."""
    chat_template: bool | None = None
    """Wrap prompts in the model's chat template: None = when the tokenizer has one (a local model),
    true = required (an error when the tokenizer has none, as the built-in model's), false = never."""
    system_prompt: str | None = None
    """A system message before each prompt: through the chat template when one is used, else written
    before the prompt with a blank line; not with the built-in model (its tokenizer has no template)."""
    verifier: str = "auto"
    """Answer check for 'jsonl': 'auto', 'exact', 'numeric', 'boxed', 'gsm8k' or 'math' (math-verify's
    equivalence, the `math` extra; 'auto' uses it for LaTeX answers)."""
    min_digits: int = 1
    """Fewest digits per operand (arithmetic)."""
    max_digits: int = 3
    """Most digits per operand (arithmetic)."""
    direct_share: float = 0.8
    """'paths': share of warm-start examples that answer at once (`>132`) instead of working the columns."""
    eval_size: int = 64
    """Held-out problems used by `evaluate()`."""
    eval_seed: int = 1234
    """Seed of the held-out set; fixed so every trial evaluates on the same problems."""
    split: str = "test"
    """Which held-out set `evaluate()` and the large evaluation score: 'test' (the comparison's) or
    'validation' (tuning's: `eval_size` further problems, disjoint from the test problems by prompt).
    The training stream is the same in both. `search` spaces run on 'validation', `compare`/`ablate`
    on 'test' (tune/spaces.py)."""
    dataset: str = "countdown"
    """'reasoning_gym': the package's dataset name (tasks/reasoning_gym.py lists those supported)."""
    dataset_config: dict[str, Any] | None = None
    """'reasoning_gym': keys of the dataset's own config class, e.g. {min_numbers: 3, max_numbers: 3};
    None = the package's defaults (`seed` and `size` are set by the task, not here)."""

    def __post_init__(self) -> None:
        _choice("task.name", self.name, TASKS)
        _choice("task.split", self.split, SPLITS)
        if self.dataset_config is not None:
            _check(isinstance(self.dataset_config, dict)
                   and all(isinstance(k, str) for k in self.dataset_config), "task.dataset_config",
                   f"expected a mapping of the dataset's config keys, got {self.dataset_config!r}")
        _choice("task.verifier", self.verifier, ("auto", "exact", "numeric", "boxed", "gsm8k", "math"))
        _check(1 <= self.min_digits <= self.max_digits <= 6, "task.min_digits/max_digits",
               f"need 1 <= min_digits <= max_digits <= 6, got {self.min_digits}, {self.max_digits}")
        _check(self.eval_size > 0, "task.eval_size", f"must be > 0, got {self.eval_size}")
        _check(0.0 <= self.direct_share <= 1.0, "task.direct_share", f"must be in [0, 1], got {self.direct_share}")
        _choice("task.layout", self.layout, ("auto", "gsm8k", "math", "prompt"))
        if self.name in ("jsonl", "dataset"):
            _check(bool(self.path), "task.path", f"is required when task.name is '{self.name}'")
        _check(self.system_prompt is None or bool(self.system_prompt.strip()), "task.system_prompt",
               "is empty; leave it unset for no system message")


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = 16
    """B: prompts per rollout step."""
    group_size: int = 8
    """G: sampled responses per prompt (a GRPO group)."""
    temperature: float = 1.0
    """Sampling temperature T; entropy is measured at the same T."""
    max_new_tokens: int = 40
    """Longest response in tokens (EOS included)."""
    eval_samples: int = 4
    """k for eval mean@k and pass@k (sampled at `temperature`)."""
    eval_every: int = 25
    """Evaluate on the held-out set every this many steps (and at the last step); 0 = only at the end."""
    final_samples: int = 64
    """n for the large evaluation of the base model (before step 1) and of the final model (after the
    last step): n samples per held-out problem at `temperature` give `final/pass@k` and `base/pass@k`
    for k = 1, 2, 4, ..., n (unbiased estimator), plus greedy `final/accuracy`; 0 = none."""

    @property
    def batch_size(self) -> int:
        """Sequences per rollout step, B * G."""
        return self.prompts_per_step * self.group_size

    def __post_init__(self) -> None:
        _check(self.prompts_per_step > 0, "rollout.prompts_per_step", f"must be > 0, got {self.prompts_per_step}")
        _check(self.group_size >= 2, "rollout.group_size", f"must be >= 2 (GRPO needs a group), got {self.group_size}")
        _check(self.temperature > 0, "rollout.temperature", f"must be > 0, got {self.temperature}")
        _check(self.max_new_tokens > 0, "rollout.max_new_tokens", f"must be > 0, got {self.max_new_tokens}")
        _check(self.eval_samples > 0, "rollout.eval_samples", f"must be > 0, got {self.eval_samples}")
        _check(self.eval_every >= 0, "rollout.eval_every", f"must be >= 0, got {self.eval_every}")
        _check(self.final_samples >= 0, "rollout.final_samples", f"must be >= 0, got {self.final_samples}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    """AdamW learning rate of the RL phase."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = no clipping); `actor/grad_norm` is the norm before clipping."""
    mini_batches_per_rollout: int = 1
    """Optimizer steps per epoch over one rollout batch; > 1 makes training off-policy."""
    ppo_epochs: int = 1
    """Passes over each rollout batch; > 1 makes training off-policy."""

    @property
    def on_policy(self) -> bool:
        """True when there is exactly one optimizer step per rollout (then rho == 1)."""
        return self.mini_batches_per_rollout == 1 and self.ppo_epochs == 1

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {self.grad_clip}")
        _check(self.mini_batches_per_rollout > 0, "optim.mini_batches_per_rollout",
               f"must be > 0, got {self.mini_batches_per_rollout}")
        _check(self.ppo_epochs > 0, "optim.ppo_epochs", f"must be > 0, got {self.ppo_epochs}")


@dataclass(frozen=True)
class LossConfig:
    name: str = "grpo"
    """Loss registry name; set by the method preset."""
    clip_eps_low: float = LOSS_DEFAULTS["clip_eps_low"]
    """Lower PPO clip: ratio floor 1 - clip_eps_low."""
    clip_eps_high: float = LOSS_DEFAULTS["clip_eps_high"]
    """Upper PPO clip: ratio ceiling 1 + clip_eps_high (clip_higher: 0.28)."""
    dual_clip_c: float = LOSS_DEFAULTS["dual_clip_c"]
    """Dual-clip bound c for negative advantages (loss <= -c A)."""
    dual_clip: bool = bool(LOSS_DEFAULTS["dual_clip"])
    """Apply the dual-clip bound (GRPO default); clip_cov's preset turns it off, as in Cui et al."""
    positive_weight: float = LOSS_DEFAULTS["positive_weight"]
    """Weight lambda of positive-advantage tokens in the clipped surrogate (1 = GRPO; w_reinforce: 0.1,
    nsr: 0)."""
    entropy_quantile: float = LOSS_DEFAULTS["entropy_quantile"]
    """forking_tokens: share of the batch's response tokens, highest entropy first, that get gradient."""
    beta: float = LOSS_DEFAULTS["beta"]
    """Entropy-bonus weight (entropy_bonus)."""
    tau: float = LOSS_DEFAULTS["tau"]
    """EntroPIC high-probability threshold: tokens with p > tau are reweighted (0 = all tokens)."""
    clip_cov_ratio: float = LOSS_DEFAULTS["clip_cov_ratio"]
    """Clip-Cov: share of tokens whose gradient is detached."""
    clip_cov_lb: float = LOSS_DEFAULTS["clip_cov_lb"]
    """Clip-Cov: lower covariance bound of candidate tokens."""
    clip_cov_ub: float = LOSS_DEFAULTS["clip_cov_ub"]
    """Clip-Cov: upper covariance bound of candidate tokens."""
    kl_cov_ratio: float = LOSS_DEFAULTS["kl_cov_ratio"]
    """KL-Cov: share of highest-covariance tokens that get the KL penalty."""
    kl_cov_coef: float = LOSS_DEFAULTS["kl_cov_coef"]
    """KL-Cov: penalty weight beta_kl."""
    kl_coef: float = 0.0
    """Weight of a KL penalty to the reference policy (the initial model; with LoRA, the adapters
    disabled), added to any method's loss: `kl_coef * agg(k3)`, k3 = exp(ref - logp) - (ref - logp) - 1
    per token (GRPO, DeepSeekMath; METHOD.md 2). 0 = none (no reference is kept or run)."""

    def __post_init__(self) -> None:
        _choice("loss.name", self.name, LOSSES)
        _check(0.0 <= self.tau < 1.0, "loss.tau", f"must be in [0, 1), got {self.tau}")
        _check(self.clip_eps_low >= 0 and self.clip_eps_high >= 0, "loss.clip_eps_low/high", "must be >= 0")
        _check(self.dual_clip_c > 1.0, "loss.dual_clip_c", f"must be > 1, got {self.dual_clip_c}")
        _check(self.beta >= 0, "loss.beta", f"must be >= 0, got {self.beta}")
        _check(self.kl_coef >= 0, "loss.kl_coef", f"must be >= 0 (0 = no KL penalty), got {self.kl_coef}")
        for key in ("clip_cov_ratio", "kl_cov_ratio"):
            value = getattr(self, key)
            _check(0.0 < value <= 1.0, f"loss.{key}", f"must be in (0, 1], got {value}")
        _check(self.clip_cov_lb < self.clip_cov_ub, "loss.clip_cov_lb", "must be < loss.clip_cov_ub")
        _check(self.kl_cov_coef >= 0, "loss.kl_cov_coef", f"must be >= 0, got {self.kl_cov_coef}")
        _check(self.positive_weight >= 0, "loss.positive_weight", f"must be >= 0, got {self.positive_weight}")
        _check(0.0 < self.entropy_quantile <= 1.0, "loss.entropy_quantile",
               f"must be in (0, 1], got {self.entropy_quantile}")


@dataclass(frozen=True)
class ControllerConfig:
    name: str = "constant"
    """Controller registry name: 'constant', 'pi' (EntroPIC) or 'adaptive' (Skywork AEC); set by the method."""
    target_entropy: float = 0.06
    """H_target in nats per token at `rollout.temperature`; also the reference for tracking metrics."""
    kp: float = 10.0
    """Proportional gain of the PI controller."""
    ki: float = 0.5
    """Integral gain of the PI controller (0 = P-only)."""
    alpha_min: float = -1.0
    """Lower bound of alpha."""
    alpha_max: float = 1.0
    """Upper bound of alpha."""
    anti_windup: bool = True
    """Clamp the integral to [alpha_min/ki, alpha_max/ki] (off = the reference's unbounded integral)."""
    update: str = "step"
    """When the controller reads entropy: 'step' (once per rollout, whole batch) or 'minibatch'."""
    value: float = 0.0
    """Output of the constant controller."""
    coef_init: float = 0.0
    """Adaptive entropy: initial coefficient c_0."""
    coef_delta: float = 1e-4
    """Adaptive entropy: step of c per rollout step."""
    coef_min: float = 0.0
    """Adaptive entropy: lower bound of c."""
    coef_max: float = 5e-3
    """Adaptive entropy: upper bound of c."""
    coef_gate: str = "current"
    """Adaptive entropy: the bonus of step k is on when H_k < target ('current') or, as in Skywork-OR1,
    when H_{k-1} < target ('previous'; off at the first step)."""
    actuator: str = "entropic"
    """What the controller output drives: 'entropic' (the loss's own alpha), 'entropy_bonus',
    'clip_high' or 'positive_weight' (METHOD.md 3.4 for signs, offsets and bounds)."""
    actuator_scale: float = 1.0
    """Units of the actuated knob per unit of controller output (k in METHOD.md 3.4)."""
    autotune: str = "off"
    """PI gains from measurements (METHOD.md 3.5): 'off' (kp/ki/alpha bounds as configured), 'probe' (a
    designed excitation of alpha for `probe_steps`, then identified gains) or 'online' (probe, then keep
    re-identifying with a dither and reschedule the gains)."""
    probe_steps: int = 80
    """Autotune: rollout steps of the probe (a square wave of alpha) before the gains are set."""
    probe_amplitude: float = 1.5
    """Autotune: the probe's alpha swings between -amplitude and +amplitude."""
    probe_hold: int = 40
    """Autotune: steps per half-period of the probe and dither square waves (>= 2x the plant's lag)."""
    closed_loop_steps: float = 5.0
    """Autotune: SIMC closed-loop time constant tau_c in rollout steps (smaller = stiffer, noisier;
    at 5 the integral follows the trainer's growing drift, METHOD.md 3.4)."""
    plant_lag: float | None = None
    """Autotune: the lag of alpha's effect in rollout steps; None = identify it from the probe."""
    filter: str = "none"
    """Entropy the PI acts on: 'none' (the measured batch entropy) or 'kalman' (filtered with the
    identified plant; needs autotune 'probe' or 'online')."""
    retune_every: int = 25
    """Autotune 'online': re-identify every this many steps after the probe."""
    retune_window: int = 200
    """Autotune 'online': steps of history each re-identification uses."""
    dither_amplitude: float = 1.0
    """Autotune 'online': amplitude of the square-wave dither added to alpha (the instrument)."""

    def __post_init__(self) -> None:
        _choice("controller.name", self.name, CONTROLLERS)
        _choice("controller.update", self.update, ("step", "minibatch"))
        _choice("controller.coef_gate", self.coef_gate, ("current", "previous"))
        _choice("controller.actuator", self.actuator, ACTUATORS)
        _check(self.actuator_scale > 0, "controller.actuator_scale", f"must be > 0, got {self.actuator_scale}")
        _choice("controller.autotune", self.autotune, ("off", "probe", "online"))
        _choice("controller.filter", self.filter, ("none", "kalman"))
        self._check_autotune()
        _check(self.target_entropy > 0 and math.isfinite(self.target_entropy), "controller.target_entropy",
               f"must be > 0, got {self.target_entropy}")
        _check(self.kp >= 0, "controller.kp", f"must be >= 0, got {self.kp}")
        _check(self.ki >= 0, "controller.ki", f"must be >= 0, got {self.ki}")
        _check(self.alpha_min < self.alpha_max, "controller.alpha_min",
               f"must be < controller.alpha_max, got {self.alpha_min} >= {self.alpha_max}")
        _check(self.coef_delta >= 0, "controller.coef_delta", f"must be >= 0, got {self.coef_delta}")
        _check(self.coef_min <= self.coef_init <= self.coef_max, "controller.coef_init",
               f"must lie in [coef_min, coef_max] = [{self.coef_min}, {self.coef_max}]")

    def _check_autotune(self) -> None:
        _check(self.probe_hold >= 1, "controller.probe_hold", f"must be >= 1, got {self.probe_hold}")
        _check(self.probe_steps >= 2 * self.probe_hold, "controller.probe_steps",
               f"must be >= 2 * controller.probe_hold = {2 * self.probe_hold} (one full period of the "
               f"probe), got {self.probe_steps}")
        _check(self.probe_amplitude > 0, "controller.probe_amplitude", f"must be > 0, got {self.probe_amplitude}")
        _check(self.closed_loop_steps > 0, "controller.closed_loop_steps",
               f"must be > 0, got {self.closed_loop_steps}")
        _check(self.plant_lag is None or self.plant_lag >= 0, "controller.plant_lag",
               f"must be >= 0 or null (identify it), got {self.plant_lag}")
        _check(self.retune_every >= 1, "controller.retune_every", f"must be >= 1, got {self.retune_every}")
        _check(self.retune_window >= 2 * self.probe_hold, "controller.retune_window",
               f"must be >= 2 * controller.probe_hold = {2 * self.probe_hold}, got {self.retune_window}")
        _check(self.dither_amplitude >= 0, "controller.dither_amplitude",
               f"must be >= 0, got {self.dither_amplitude}")
        if self.autotune != "off":
            _check(self.name == "pi", "controller.autotune",
                   f"'{self.autotune}' tunes the PI controller (method entropic or entropic_p), "
                   f"but controller.name is '{self.name}'; allowed here: off")
            _check(self.update == "step", "controller.autotune",
                   f"'{self.autotune}' needs controller.update 'step' (one entropy per rollout step)")
        _check(self.filter == "none" or self.autotune != "off", "controller.filter",
               "'kalman' uses the identified plant: set controller.autotune to 'probe' or 'online'")


@dataclass(frozen=True)
class TrainConfig:
    total_steps: int = 200
    """Rollout steps (each = one rollout + its optimizer steps)."""
    seed: int = 0
    """Seeds data order, sampling and init of the RL phase (the warm-start has its own fixed seed)."""
    log_every: int = 10
    """CLI: print a progress line every this many steps."""
    threads: int = 0
    """torch CPU threads for this process (0 = leave torch's default); with `num_workers` > 1, per worker."""
    num_workers: int = 1
    """Data-parallel workers of this one run (METHOD.md 7): the global batch (`rollout.prompts_per_step` x
    `rollout.group_size`) is split across them by prompt; gradients, entropy and every metric are those
    of the global batch. Sweeps: `--workers-per-trial` (Ray Train inside the Ray Tune trial);
    `entropic-tune train --workers` (local processes, gloo)."""
    strategy: str = "ddp"
    """How the workers hold the model: 'ddp' (every worker a full replica, gradients all-reduced). 'fsdp'
    (torch's fully_shard) is refused: torch runs it on the CPU, this trainer does not yet (METHOD.md 7.4)."""
    selection: str = "global"
    """Top-k token selections of Clip-Cov, KL-Cov and forking tokens with several workers: 'global'
    (over the global batch: the one-worker tokens) or 'worker' (each worker picks its own share of its
    own tokens, Cui et al.'s per-GPU selection; the budget's rounding then differs from one worker's).
    No effect with one worker (METHOD.md 7.3)."""
    sampling_seed: str = "auto"
    """The random stream of the rollout's sampling: 'batch' (one stream for the whole batch, as before),
    'prompt' (one stream per prompt, seeded by (seed, step, prompt index): the same samples however the
    batch is split across workers) or 'auto' (batch with one worker, prompt with more)."""
    engine: str = "native"
    """Who runs the rollout and the update: 'native' (this project's trainer) or 'trl' (TRL's GRPOTrainer
    driven one rollout step at a time, with the same losses and controllers; the `trl.*` keys; needs the
    `trl` extra; METHOD.md 8)."""

    @property
    def per_prompt_sampling(self) -> bool:
        """True when each prompt's group is sampled from its own seeded stream."""
        return self.sampling_seed == "prompt" or (self.sampling_seed == "auto" and self.num_workers > 1)

    def __post_init__(self) -> None:
        _check(self.total_steps > 0, "train.total_steps", f"must be > 0, got {self.total_steps}")
        _check(self.log_every > 0, "train.log_every", f"must be > 0, got {self.log_every}")
        _check(self.threads >= 0, "train.threads", f"must be >= 0, got {self.threads}")
        _check(self.num_workers >= 1, "train.num_workers", f"must be >= 1, got {self.num_workers}")
        _choice("train.strategy", self.strategy, ("ddp", "fsdp"))
        _check(self.strategy != "fsdp", "train.strategy",
               "'fsdp' is not supported yet (sharded weights need lockstep decoding and gathered "
               "checkpoints, METHOD.md 7.4); allowed: ddp")
        _choice("train.sampling_seed", self.sampling_seed, ("auto", "batch", "prompt"))
        _choice("train.selection", self.selection, ("global", "worker"))
        _choice("train.engine", self.engine, ENGINES)
        _check(self.num_workers == 1 or self.sampling_seed != "batch", "train.sampling_seed",
               f"'batch' draws one stream for the whole batch, which {self.num_workers} workers cannot share; "
               "allowed with train.num_workers > 1: auto, prompt")


@dataclass(frozen=True)
class TrlConfig:
    """Settings of the TRL engine (``train.engine: trl``, METHOD.md 8); refused with the native engine."""

    scale_rewards: str = "native"
    """Advantage scaling: 'native' (the project's ``(r - mean_g) / (std_g + 1e-6)``, population std: the
    native engine's advantages exactly) or TRL's own 'group' (sample std of the group, ``+ 1e-4``),
    'batch' (sample std of the whole batch) or 'none' (no scaling)."""
    loss_type: str = "dapo"
    """TRL's aggregation; only 'dapo' (token-mean over the mini-batch, every process's tokens
    together) is the project's `agg`. The others ('grpo', 'bnpo', 'dr_grpo', ...) are refused."""
    use_vllm: bool = False
    """Sample the rollouts with vLLM (TRL `use_vllm`; needs the `vllm` package and a GPU)."""
    vllm_mode: str = "colocate"
    """TRL `vllm_mode`: 'colocate' (vLLM in the trainer's processes) or 'server' (`trl vllm-serve`)."""
    vllm_server_base_url: str | None = None
    """TRL `vllm_server_base_url` for `vllm_mode: server` (default: TRL's host and port)."""
    vllm_gpu_memory_utilization: float = 0.3
    """TRL `vllm_gpu_memory_utilization` (colocate)."""
    vllm_importance_sampling_correction: bool = False
    """TRL's correction of the vLLM/trainer log-prob mismatch; only false is mapped (the project's
    losses take no per-token weight): the behaviour log-probs are the trainer's recomputed ones."""
    bf16: bool = False
    """TRL/transformers `bf16` mixed precision (CUDA); false on the CPU."""
    deepspeed: str | None = None
    """Path of a DeepSpeed JSON config handed to TRL (`deepspeed`; needs the `deepspeed` package; several
    processes through `--workers-per-trial N` or `train --workers N`; not run here: no GPU)."""

    def __post_init__(self) -> None:
        _choice("trl.scale_rewards", self.scale_rewards, ("native", "group", "batch", "none"))
        _check(self.loss_type == "dapo", "trl.loss_type",
               f"'{self.loss_type}' is not mapped: the project's losses are token-means over the mini-batch, "
               "which is TRL's 'dapo'; allowed: dapo")
        _choice("trl.vllm_mode", self.vllm_mode, ("colocate", "server"))
        _check(not self.vllm_importance_sampling_correction, "trl.vllm_importance_sampling_correction",
               "true is not mapped: the project's losses take no per-token importance weight (METHOD.md 8); "
               "allowed: false")
        _check(0.0 < self.vllm_gpu_memory_utilization <= 1.0, "trl.vllm_gpu_memory_utilization",
               f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}")


@dataclass(frozen=True)
class DebugConfig:
    fail_at_step: int = 0
    """Raise a simulated crash when this step starts (0 = never); for fault-injection tests. Fires once
    per run: a trainer restored from a checkpoint has survived it and does not fire again."""
    nan_at_step: int = 0
    """Inject a NaN into the loss at this step (0 = never); for fault-injection tests. Like
    ``fail_at_step`` it fires once per run (not again after a restore)."""


@dataclass(frozen=True)
class Config:
    method: str = "grpo"
    """One of the methods in `entropic_tune.methods.METHODS`."""
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trl: TrlConfig = field(default_factory=TrlConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        if not self.model.path:  # the built-in character tokenizer has no chat template
            _check(self.task.chat_template is not True, "task.chat_template",
                   "true needs a model with a chat template, and the built-in model has none; set "
                   "model.path to a local model whose tokenizer has one, or leave task.chat_template unset")
            _check(self.task.system_prompt is None, "task.system_prompt",
                   "needs model.path (a local model): the built-in model's character tokenizer knows only "
                   "the task's characters and has no chat template")
        ctrl = self.controller
        _check(ctrl.autotune == "off" or ctrl.probe_steps < self.train.total_steps, "controller.probe_steps",
               f"({ctrl.probe_steps}) must be < train.total_steps ({self.train.total_steps}): the probe "
               "would use the whole run")
        workers = self.train.num_workers
        _check(workers <= self.rollout.prompts_per_step, "train.num_workers",
               f"({workers}) must be <= rollout.prompts_per_step ({self.rollout.prompts_per_step}): the batch "
               "is split across the workers by prompt")
        _check(not self.train.per_prompt_sampling or self.model.compile != "on", "model.compile",
               "'on' compiles the batch sampler, which per-prompt sampling (train.num_workers > 1 or "
               "train.sampling_seed 'prompt') does not use; allowed here: auto, off")
        self._check_engine()

    def _check_engine(self) -> None:
        """Settings the chosen engine cannot honour, refused in one line (METHOD.md 8)."""
        if self.train.engine == "native":
            changed = [f"trl.{f.name}" for f in dataclasses.fields(TrlConfig)
                       if getattr(self.trl, f.name) != f.default]
            _check(not changed, changed[0] if changed else "trl",
                   "is a setting of the TRL engine; set train.engine=trl (allowed engines: native, trl)")
            return
        check_packages(to_flat(self))  # torch-free: a missing package, one line
        _check(self.loss.kl_coef == 0, "loss.kl_coef",
               "a KL term to a reference is not mapped to the TRL engine yet (TRL's `beta` is 0 there); allowed "
               "with train.engine trl: 0")
        _check(self.model.compile != "on", "model.compile",
               "'on' compiles the native engine's decoder; TRL samples with transformers' generate or vLLM; "
               "allowed with train.engine trl: auto, off")
        workers = self.train.num_workers
        prompts = self.rollout.prompts_per_step
        _check(prompts % workers == 0, "train.num_workers",
               f"({workers}) must divide rollout.prompts_per_step ({prompts}) with train.engine trl (TRL gives every "
               "process the same number of whole prompt groups); allowed: a divisor of "
               f"{prompts}")
        _check(not (self.train.per_prompt_sampling and self.trl.use_vllm),
               "train.sampling_seed" if self.train.sampling_seed == "prompt" else "train.num_workers",
               "per-prompt sampling streams (train.sampling_seed 'prompt', automatic with several workers) are "
               "not mapped to vLLM, which samples with its own seeds; allowed with trl.use_vllm: one worker, "
               "sampling_seed auto or batch")
        per_step = self.rollout.batch_size
        mb = self.optim.mini_batches_per_rollout
        _check(per_step % (mb * workers) == 0, "optim.mini_batches_per_rollout",
               f"({mb}) must divide rollout.prompts_per_step x rollout.group_size ({per_step})"
               + (f" / train.num_workers ({workers})" if workers > 1 else "")
               + " with train.engine trl (TRL's steps_per_generation splits each process's batch evenly)")
        _check(not self.trl.use_vllm or self.model.lora_r == 0 or self.trl.vllm_mode == "colocate",
               "trl.vllm_mode", "'server' with LoRA is not wired here; allowed with model.lora_r > 0: colocate")


_SECTION_TYPES = {
    "model": ModelConfig, "task": TaskConfig, "rollout": RolloutConfig, "optim": OptimConfig,
    "loss": LossConfig, "controller": ControllerConfig, "train": TrainConfig, "trl": TrlConfig,
    "debug": DebugConfig,
}


def valid_keys() -> dict[str, Any]:
    """Every dotted key with its annotated type, e.g. ``{"controller.kp": float, ...}``."""
    keys: dict[str, Any] = {"method": str}
    for section, cls in _SECTION_TYPES.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            keys[f"{section}.{f.name}"] = hints[f.name]
    return keys


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = prefix + str(raw_key).replace("/", ".")
        if key in _SECTION_TYPES and value is None:
            continue  # a YAML section whose keys are all commented out
        if key in _SECTION_TYPES and not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping of {key} keys, got {value!r}")
        if isinstance(value, dict) and key in _SECTION_TYPES:
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML/CLI/Ray value to the field's type, or raise a UserError naming the key."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if args else annotation
    if value is None or (optional and value in ("", "none", "None", "null")):
        if optional:
            return None
        raise UserError(f"{key}: a value is required")
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars from Ray or Optuna
        value = value.item()
    try:
        if base is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise TypeError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            out = float(value)
            if not math.isfinite(out):
                raise TypeError
            return out
        if base is dict or typing.get_origin(base) is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if base is str:
            if isinstance(value, bool) and key in ON_OFF_KEYS:  # YAML 1.1 reads on/off as booleans
                return "on" if value else "off"
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        name = getattr(base, "__name__", str(base))
        raise UserError(f"{key}: expected {name}, got {value!r}") from None
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """Split a ``--set key=value`` string; the value is parsed as YAML (``1e-3``, ``true``, ``null``)."""
    if "=" not in text:
        raise UserError(f"--set '{text}': expected key=value, e.g. controller.kp=2.0")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (plain YAML keeps the last one
    silently, so ``controller.kp`` written twice in a space would run only the second value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:  # not a valid key at all: the base class says so
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' repeated (first on line {seen[key]})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (safe types only, no repeated keys), with errors that name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: YAML error: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def normalize(data: dict[str, Any] | None, source: str = "config") -> dict[str, Any]:
    """Flatten nested/`a/b` keys to dotted keys and check every key exists (closest key in the error)."""
    flat = _flatten(dict(data or {}))
    allowed = valid_keys()
    for key in flat:
        if key not in allowed:
            raise UserError(f"{source}: unknown key '{key}'{closest(key, allowed)}")
    return flat


def load_config(
    data: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    files: list[str | Path] | None = None,
) -> Config:
    """Build a :class:`Config` from YAML files, then a dict, then ``key=value`` overrides (later wins).

    The method's preset is applied first, so any explicit key (from any source) overrides it.
    """
    explicit: dict[str, Any] = {}
    for path in files or []:
        explicit.update(normalize(read_yaml(path), str(path)))
    explicit.update(normalize(data))
    for text in overrides or []:
        key, value = parse_override(text)
        explicit.update(normalize({key: value}, "--set"))
    method = str(explicit.get("method", Config.method))
    if method not in METHODS:
        raise unknown("method", method, METHODS)
    merged = {**method_preset(method), **explicit, "method": method}
    allowed = valid_keys()
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_TYPES}
    for key, value in merged.items():
        if key == "method":
            continue
        section, _, name = key.partition(".")
        sections[section][name] = _coerce(key, value, allowed[key])
    try:
        built = {name: cls(**sections[name]) for name, cls in _SECTION_TYPES.items()}
    except TypeError as exc:  # pragma: no cover - normalize() rejects unknown keys first
        raise UserError(str(exc)) from None
    return Config(method=method, **built)


def to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dict (YAML/JSON friendly) that :func:`load_config` reads back to an equal config."""
    return dataclasses.asdict(config)


def to_flat(config: Config) -> dict[str, Any]:
    """Flat ``{"section.key": value}`` dict of every field (plus ``method``)."""
    flat: dict[str, Any] = {"method": config.method}
    for section in _SECTION_TYPES:
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            flat[f"{section}.{key}"] = value
    return flat


def replace(config: Config, **dotted: Any) -> Config:
    """Return a copy with dotted keys changed (``replace(cfg, **{"train.seed": 3})``), re-validated."""
    return load_config({**to_flat(config), **dotted})

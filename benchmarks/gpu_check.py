"""The GPU check (issue 29 item 7): the native engine on Qwen2.5-0.5B- and 1.5B-shaped models.

    python benchmarks/gpu_check.py                        # on a CUDA machine: both sizes, 1,024 new tokens
    python benchmarks/gpu_check.py --models 0.5b --steps 3
    python benchmarks/gpu_check.py --tiny                 # CPU smoke test: a tiny trunk, 16 new tokens

Each model is built from a transformers ``Qwen2Config`` with the published sizes of Qwen2.5-0.5B and
-1.5B (hidden, layers, heads, KV heads, MLP width, the 151,936-token vocabulary, tied embeddings;
from their ``config.json`` on the Hugging Face hub) and random weights, so nothing is downloaded;
saved once to a temporary folder with a character tokenizer, it is then an ordinary ``model.path``
for the native engine. The random model almost never emits EOS, so every response is
``--new-tokens`` long. Per case (a fresh subprocess each: its own peak memory and compiled code) the
engine's own :class:`~entropic_tune.engines.native.trainer.Trainer` runs ``--steps`` GRPO steps of 2 prompts x 4
responses; the first (the base evaluation, compilation) is a warm-up and the rest are reported:

- ``rollout_tokens_per_s`` and ``update_tokens_per_s`` (the step dict's ``perf/`` values), ``step_s``;
- ``peak_memory_gib``: ``torch.cuda.max_memory_allocated`` over the reported steps (on the CPU the
  process's maximum resident set, a different and larger quantity).

Cases: each model with the default logits chunk (``model.logits_chunk: -1``) and unchunked (``0``),
with all weights training and with LoRA (r 16). ``--out`` names the JSON file (default
``benchmarks/results/gpu_check.json``). The tests run ``--tiny``; they never need a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = {  # published Qwen2.5 sizes (config.json of Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-1.5B)
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2},
}
VOCAB = 151_936
CASES = {  # name: config overrides
    "chunked": {"model.logits_chunk": -1},
    "unchunked": {"model.logits_chunk": 0},
    "chunked_lora": {"model.logits_chunk": -1, "model.lora_r": 16, "model.lora_alpha": 32.0},
    "unchunked_lora": {"model.logits_chunk": 0, "model.lora_r": 16, "model.lora_alpha": 32.0},
}


def build_model_folder(shape: str, folder: Path) -> None:
    """A random-weight Qwen2 of ``shape`` with a character tokenizer, saved as a Hugging Face folder."""
    import torch
    import transformers

    from entropic_tune.config import TaskConfig
    from entropic_tune.model.policy import build_char_tokenizer
    from entropic_tune.tasks import build_task

    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, max_position_embeddings=32768, tie_word_embeddings=True,
                                   rope_theta=1_000_000.0, rms_norm_eps=1e-6, bos_token_id=2, eos_token_id=1,
                                   pad_token_id=0, **SHAPES[shape])
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(folder)
    build_char_tokenizer(build_task(TaskConfig()).alphabet()).save_pretrained(folder)


def run_case(folder: str, overrides: dict[str, object], steps: int) -> dict[str, object]:
    """(child process) ``steps`` trainer steps; the figures of all but the first."""
    import resource

    import torch

    from entropic_tune import metrics as M
    from entropic_tune.config import load_config
    from entropic_tune.engines.native.trainer import Trainer

    cuda = torch.cuda.is_available()
    trainer = Trainer(load_config({"model.path": folder, "method": "grpo", **overrides}))
    rows = []
    for i in range(steps):
        if cuda and i == 1:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        row = trainer.step()
        if cuda:
            torch.cuda.synchronize()
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
    reported = rows[1:] or rows
    mean = lambda key: sum(r[key] for r in reported) / len(reported)  # noqa: E731
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "rollout_tokens_per_s": mean(M.ROLLOUT_TOKENS_PER_S), "update_tokens_per_s": mean(M.UPDATE_TOKENS_PER_S),
        "step_s": mean("wall_s"), "response_length_mean": mean(M.RESPONSE_LENGTH_MEAN),
        "peak_memory_gib": peak / 2**30, "peak_memory_kind": "cuda max_memory_allocated" if cuda else "cpu maxrss",
        "decoder_compiled": trainer.policy.decoder is not None, "steps_reported": len(reported),
        "trainable_parameters": sum(p.numel() for p in trainer.params),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny trunk, 16 new tokens, 2 steps")
    parser.add_argument("--models", nargs="+", choices=("0.5b", "1.5b"), default=["0.5b", "1.5b"])
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3, help="trainer steps per case; the first is a warm-up")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu_check.json")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # (child) folder, overrides JSON, steps
    args = parser.parse_args(argv)
    if args.case:
        folder, overrides, steps = args.case
        print(json.dumps(run_case(folder, json.loads(overrides), int(steps))))
        return 0
    import _common as C

    models = ["tiny"] if args.tiny else args.models
    new_tokens, steps = (16, 2) if args.tiny else (args.new_tokens, args.steps)
    common = {"rollout.prompts_per_step": 2, "rollout.group_size": 4, "rollout.max_new_tokens": new_tokens,
              "rollout.eval_every": 0, "rollout.eval_samples": 1, "task.eval_size": 2, "model.dtype": args.dtype,
              "train.total_steps": steps + 1}
    results: dict[str, object] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                  "machine": C.machine(), "new_tokens": new_tokens, "cases": []}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        env = {**os.environ, "ENTROPIC_TUNE_CACHE": os.environ.get("ENTROPIC_TUNE_CACHE", str(Path(tmp) / "cache"))}
        for shape in models:
            folder = Path(tmp) / shape
            build_model_folder(shape, folder)
            for name in args.cases:
                overrides = {**common, **CASES[name]}
                proc = subprocess.run([sys.executable, __file__, "--case", str(folder), json.dumps(overrides),
                                       str(steps)], capture_output=True, text=True, env=env)
                entry: dict[str, object] = {"model": shape, "case": name, "overrides": CASES[name]}
                if proc.returncode == 0:
                    entry.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                else:  # an out-of-memory case is a result too: say so and go on
                    entry["error"] = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                results["cases"].append(entry)
                print(json.dumps(entry), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all("error" not in c for c in results["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())

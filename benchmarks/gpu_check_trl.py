"""Prepared GPU check: the native engine and the TRL engine (with and without vLLM) on a Qwen2.5-0.5B-shaped
model with random weights (built from its config: no download), a few steps each.

    python benchmarks/gpu_check_trl.py --out gpu_check_trl.json            # on a CUDA machine
    python benchmarks/gpu_check_trl.py --tiny --out /tmp/tiny.json         # CPU smoke (a tiny model)

Per case (``native``, ``trl``, ``trl_vllm`` when vLLM is installed and CUDA is visible) it prints and
writes: median step time, response tokens per second of the step, the generation share, and the peak
GPU memory (``torch.cuda.max_memory_allocated``; 0 on the CPU). Each case runs in its own process, so
the peaks do not mix and vLLM's memory is released. The model folder (config, random weights and a
word-level tokenizer over the model's whole vocabulary, so any sampled id decodes) is written once
under ``--workdir``. The rewards of a random model are 0, so the advantages are 0; the work of a step
(sampling, the forwards, the backward, AdamW) is the same as with any reward. Never a test's
dependency: ``tests/engines/trl`` runs ``--tiny`` only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QWEN25_05B = dict(  # Qwen/Qwen2.5-0.5B's config.json (architecture fields)
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)


def build_model_folder(folder: Path, shape: dict, alphabet: str) -> Path:
    """A Qwen2 model of ``shape`` with random weights and a word-level tokenizer (specials, the task's
    characters, then filler tokens up to the vocabulary size) saved as a Hugging Face folder."""
    import torch
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    if (folder / "config.json").is_file():
        return folder
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2}
    for ch in sorted(set(alphabet)):
        vocab.setdefault(ch, len(vocab))
    while len(vocab) < shape["vocab_size"]:
        vocab[f"<t{len(vocab)}>"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                                     bos_token="<bos>")
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**shape, pad_token_id=0, eos_token_id=1,
                                                                   bos_token_id=2))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_case(case: str, folder: Path, args: argparse.Namespace) -> dict:
    """One engine, ``args.steps`` measured steps after one warm-up step, in this process."""
    import torch

    from entropic_tune.config import load_config
    from entropic_tune.engines.base import build_engine

    cuda = torch.cuda.is_available()
    overrides = {
        "method": "entropic", "model.path": str(folder), "rollout.prompts_per_step": args.prompts,
        "rollout.group_size": args.group, "rollout.max_new_tokens": args.max_new_tokens,
        "rollout.eval_every": 0, "rollout.final_samples": 0, "train.total_steps": 1000, "model.compile": "off",
        "model.device": "cuda" if cuda else "cpu",
    }
    if case != "native":
        overrides["train.engine"] = "trl"
        overrides["trl.bf16"] = cuda
    if case == "trl_vllm":
        overrides.update({"trl.use_vllm": True, "trl.vllm_mode": "colocate"})
    engine = build_engine(load_config(overrides))
    engine.last_eval = {"eval/accuracy": 0.0, "eval/pass@k": 0.0, "eval/entropy": 0.0}  # no held-out eval
    engine.step()  # warm-up: allocator, kernels, vLLM's first weight sync
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rows = []
    for _ in range(args.steps):
        start = time.perf_counter()
        row = engine.step()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        tokens = row["rollout/response_length_mean"] * args.prompts * args.group
        rows.append({"step_s": wall, "tokens_per_s": tokens / wall,
                     "rollout_share": tokens / row["perf/rollout_tokens_per_s"] / wall})
    return {
        "case": case,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "step_s": statistics.median(r["step_s"] for r in rows),
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "rollout_share": statistics.median(r["rollout_share"] for r in rows),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else 0.0,
        "steps": args.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (smoke test of the script)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--out", default="gpu_check_trl.json")
    parser.add_argument("--workdir", default=None, help="where the model folder is written (default: a temp dir)")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case here
    args = parser.parse_args()
    if args.tiny:
        args.max_new_tokens = min(args.max_new_tokens, 16)
        args.prompts, args.group = min(args.prompts, 2), min(args.group, 2)
    workdir = Path(args.workdir or tempfile.gettempdir()) / ("et-gpu-check-tiny" if args.tiny else "et-gpu-check-0.5b")
    if args.case:
        print(json.dumps(run_case(args.case, workdir, args)))
        return
    import importlib.util

    from entropic_tune.config import load_config
    from entropic_tune.tasks import build_task

    build_model_folder(workdir, TINY if args.tiny else QWEN25_05B, build_task(load_config({}).task).alphabet())
    import torch

    cases = ["native", "trl"]
    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        cases.append("trl_vllm")
    results = []
    for case in cases:
        cmd = [sys.executable, __file__, "--case", case, "--workdir", str(workdir.parent), "--steps", str(args.steps),
               "--prompts", str(args.prompts), "--group", str(args.group), "--max-new-tokens",
               str(args.max_new_tokens)] + (["--tiny"] if args.tiny else [])
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
            results.append({"case": case, "error": tail[0]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{case:<9} " + (f"error: {r['error']}" if "error" in r else
              f"step {r['step_s']:.3f} s   {r['tokens_per_s']:.0f} tokens/s   rollout {r['rollout_share']:.0%}   "
              f"peak GPU memory {r['peak_gpu_memory_gb']:.2f} GB   ({r['device']})"), flush=True)
    payload = {"model": "tiny" if args.tiny else "Qwen2.5-0.5B-shaped, random weights", "prompts": args.prompts,
               "group": args.group, "max_new_tokens": args.max_new_tokens, "results": results}
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()

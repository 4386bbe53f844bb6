"""Peak memory of the log-prob/entropy forward and backward, chunked (``model.logits_chunk``) vs not.

    python benchmarks/bench_logits_memory.py                      # lengths 256 1024 4096, chunks 0 128 512
    python benchmarks/bench_logits_memory.py --lengths 256 1024 --chunks 0 512 --rows 2

A Qwen2 causal LM with Qwen2.5's vocabulary (151,936) and a tiny trunk (hidden 64, one layer), so the
LM head and the statistics dominate; one forward of :func:`entropic_tune.model.policy.logprobs_and_entropy`
over ``rows`` sequences of a 16-token prompt and ``length`` response tokens, then the backward of a
loss using both the log-probs and the entropies. Each case runs in a fresh subprocess; its peak is
the process's maximum resident set (``getrusage``'s ``ru_maxrss``) minus its resident set just before
the forward (tracemalloc does not see torch's allocations). The unchunked path at the longest length
is skipped when this machine's available memory could not hold it (estimated from the logits' size).
Prints a Markdown table and writes ``benchmarks/results/logits_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

VOCAB, HIDDEN, PROMPT = 151_936, 64, 16
UNCHUNKED_COPIES = 6  # (tokens, V) fp32 tensors alive at the unchunked peak, for the skip estimate


def case(rows: int, length: int, chunk: int) -> dict[str, float]:
    """One measurement, in this process (a fresh one: the parent runs ``--case``)."""
    import resource

    import torch
    import transformers

    from entropic_tune.model.policy import logprobs_and_entropy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                                   num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                                   max_position_embeddings=PROMPT + length, tie_word_embeddings=True)
    model = transformers.Qwen2ForCausalLM(cfg)
    ids = torch.randint(0, VOCAB, (rows, PROMPT + length))
    attn = torch.ones_like(ids)
    before = _rss()
    logp, ent = logprobs_and_entropy(model, ids, attn, PROMPT, 1.0, "cpu", False, chunk)
    (logp.sum() - 0.01 * ent.sum()).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    logits_bytes = rows * length * VOCAB * 4
    return {"rows": rows, "length": length, "chunk": chunk, "peak_mib": (peak - before) / 2**20,
            "logits_mib": logits_bytes / 2**20}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 128, 512])
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--case", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(case(*args.case)))
        return 0
    results = []
    for length in args.lengths:
        for chunk in args.chunks:
            need = UNCHUNKED_COPIES * args.rows * length * VOCAB * 4
            if (chunk == 0 or chunk >= args.rows * length) and need > 0.5 * _available():
                results.append({"rows": args.rows, "length": length, "chunk": chunk, "peak_mib": None,
                                "skipped": f"needs ~{need / 2**30:.1f} GiB, {_available() / 2**30:.1f} GiB free"})
                continue
            out = subprocess.run([sys.executable, __file__, "--case", str(args.rows), str(length), str(chunk)],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(results[-1], file=sys.stderr)
    print(f"| response tokens | {' | '.join(f'chunk {c}' if c else 'unchunked' for c in args.chunks)} |")
    print("|---|" + "---|" * len(args.chunks))
    for length in args.lengths:
        cells = []
        for r in (r for r in results if r["length"] == length):
            cells.append("skipped" if r["peak_mib"] is None else f"{r['peak_mib']:.0f} MiB")
        print(f"| {args.rows} x {length} | {' | '.join(cells)} |")
    path = Path(__file__).resolve().parent / "results" / "logits_memory.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

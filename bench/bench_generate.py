"""Benchmark: greedy generation with and without the KV cache, in one process.

A randomly initialised lmcore GPT (default: 6 layers, 384 wide, 6 heads, 512-token
window, 10,000-token vocabulary) greedily generates ``--new-tokens`` tokens from a
short prompt, once feeding only the new token with the KV cache and once re-reading
the whole sequence every step. Both runs must produce the same tokens. Prints
tokens per second for each and the cached / uncached speed ratio.

    python bench/bench_generate.py                  # the defaults above
    python bench/bench_generate.py --threads 1      # steadier numbers on a CPU shared with other jobs
    python bench/bench_generate.py --n-layer 12 --n-embd 768 --n-head 12 --block-size 1024
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.generate import generate_tokens  # noqa: E402
from lmcore.models import GPT, GPTConfig  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-embd", type=int, default=384)
    parser.add_argument("--n-head", type=int, default=6)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=10_000)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode; the fastest counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def timed_generation(model: GPT, prompt: list[int], new_tokens: int, use_cache: bool) -> tuple[float, list[int]]:
    """Seconds for one greedy generation of ``new_tokens`` tokens, and the tokens."""
    if model.transformer.wte.weight.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = list(generate_tokens(model, prompt, max_new_tokens=new_tokens, use_cache=use_cache))
    if model.transformer.wte.weight.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = GPTConfig(
        vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
        n_embd=args.n_embd,
    )  # fmt: skip
    model = GPT(config).to(args.device).eval()
    prompt = torch.randint(0, args.vocab_size, (args.prompt_tokens,)).tolist()

    for use_cache in (True, False):  # warm-up: allocator, kernels, first-call overheads
        timed_generation(model, prompt, min(16, args.new_tokens), use_cache)

    seconds: dict[bool, float] = {}
    outputs: dict[bool, list[int]] = {}
    for use_cache in (True, False):
        runs = [timed_generation(model, prompt, args.new_tokens, use_cache) for _ in range(args.repeats)]
        seconds[use_cache] = min(run[0] for run in runs)
        outputs[use_cache] = runs[0][1]
    if outputs[True] != outputs[False]:
        raise SystemExit("cached and uncached greedy generation disagree: the KV cache is broken")

    cached_rate = args.new_tokens / seconds[True]
    uncached_rate = args.new_tokens / seconds[False]
    report = {
        "model": f"GPT {args.n_layer} layers x {args.n_embd} wide, {args.n_head} heads, "
        f"block {args.block_size}, vocab {args.vocab_size}",
        "parameters": model.num_parameters(),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "cached_tokens_per_s": round(cached_rate, 1),
        "uncached_tokens_per_s": round(uncached_rate, 1),
        "speedup_cached_over_uncached": round(cached_rate / uncached_rate, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

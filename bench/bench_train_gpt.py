#!/usr/bin/env python
"""GPT training throughput (tokens/s) and model FLOPs utilisation (MFU).

    python bench/bench_train_gpt.py                      # the `small` preset's GPT, on the CPU
    python bench/bench_train_gpt.py --size gpt2 --batch-size 16 --block-size 1024 --bf16 --compile   # a GPU

MFU = achieved model FLOP/s / peak FLOP/s, with the model FLOPs per token of
nanoGPT / PaLM (appendix B): 6 N + 12 L H Q T (N parameters without position
embeddings, L layers, H heads, Q head size, T context). The peak is:

- on a GPU, the vendor's dense bf16 (or fp32) figure for the device (table below);
- on the CPU, a float32 2048 x 2048 matmul measured in this same process, so the ratio
  says how close training gets to what this machine's matmul can do.

Each step is a full training step: forward, backward, AdamW update, with the trainer's
settings (SDPA attention, optional bf16 autocast and torch.compile).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmcore.models import GPT, GPTConfig  # noqa: E402
from lmcore.train.presets import preset_values  # noqa: E402

# Dense peak FLOP/s by device-name fragment: (bf16, fp32).
GPU_PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12), "L4": (121e12, 30e12)}


def model_flops_per_token(model: GPT) -> float:
    config = model.config
    n_params = model.num_parameters() - model.transformer.wpe.weight.numel()
    head_size = config.n_embd // config.n_head
    return 6 * n_params + 12 * config.n_layer * config.n_head * head_size * config.block_size


def cpu_matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """float32 FLOP/s of one large matmul on this machine (the CPU's practical peak)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", help="'small' (the small preset's GPT) or a GPTConfig name (tiny, gpt2, gpt2-medium)")
    parser.add_argument("--vocab-size", type=int, default=10_000, help="PTB's 10k words; 50257 for GPT-2's tokenizer")
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPUs with bf16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.size == "small":
        preset = preset_values("gpt", "small")
        sizes = {k: preset[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}
        config = GPTConfig(vocab_size=args.vocab_size, **sizes)
    else:
        config = GPTConfig.from_name(args.size, vocab_size=args.vocab_size)
    if args.block_size:
        config.block_size = args.block_size
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    step_model = torch.compile(model) if args.compile else model
    batch = torch.randint(0, config.vocab_size, (args.batch_size, config.block_size + 1), device=device)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16)

    def step() -> None:
        with autocast:
            loss = step_model(inputs, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    tokens_per_s = args.steps * args.batch_size * config.block_size / seconds
    achieved = tokens_per_s * model_flops_per_token(model)
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peaks = next((p for key, p in GPU_PEAKS.items() if key in name), None)
        peak = None if peaks is None else peaks[0] if args.bf16 else peaks[1]
        peak_source = f"{name} dense {'bf16' if args.bf16 else 'fp32'} spec"
    else:
        peak, peak_source = cpu_matmul_peak(), f"float32 2048x2048 matmul measured here ({torch.get_num_threads()} threads)"
    print(f"device: {device}  model: {model.num_parameters() / 1e6:.2f}M parameters, {config.n_layer} layers, "
          f"{config.n_embd} wide, context {config.block_size}, batch {args.batch_size}, bf16={args.bf16}, compile={args.compile}")
    print(f"training throughput: {tokens_per_s:,.0f} tokens/s  ({achieved / 1e9:,.1f} model GFLOP/s)")
    if peak:
        print(f"MFU: {achieved / peak:.1%} of {peak / 1e9:,.0f} GFLOP/s ({peak_source})")
    else:
        print(f"MFU: unknown peak for {peak_source}")


if __name__ == "__main__":
    main()

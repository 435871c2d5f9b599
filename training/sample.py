#!/usr/bin/env python
"""Same-prompt generation comparison: every run, prompt and decoding strategy, with fixed seeds.

    python training/sample.py --runs runs/ptb-lstm-small runs/ptb-gpt-small --out reports/crossdomain \
        --reference HuggingFaceTB/SmolLM2-135M-Instruct

Prompts: the empty prompt (generation starts from the end-of-text token) and
"the meaning of life is", plus any --prompts. Strategies: greedy, temperature (T=0.8),
top-k (k=40), top-p (p=0.9), each with --seed. Writes <out>/samples.json ({"meta",
"samples"}): each text with distinct-1/-2 and the repeated n-gram rate over its
whitespace-separated words, and, with --reference (a run folder, a Hub id, a model
folder or a .gguf file), its mean log-probability per token under that model.
Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.eval.crossdomain import DEFAULT_PROMPTS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="run folders written by training/train_lm.py")
    parser.add_argument("--out", required=True, help="folder for samples.json")
    parser.add_argument("--prompts", nargs="*", default=[], help=f"prompts added to the defaults {list(DEFAULT_PROMPTS)}")
    parser.add_argument("--max-new-tokens", type=int, default=60,
                        help="tokens per text (fewer when a fixed-context model's window is shorter)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every run, prompt and strategy")
    parser.add_argument("--repeat-n", type=int, default=3, help="n of the repeated n-gram rate")
    parser.add_argument("--reference", default=None,
                        help="a run folder or pretrained model (Hub id, folder, .gguf) that scores every text")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    import torch

    from lmcore.eval.crossdomain import sample_runs
    from lmcore.io import atomic_write_json

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        samples = sample_runs(args.runs, [*DEFAULT_PROMPTS, *args.prompts], max_new_tokens=args.max_new_tokens,
                              seed=args.seed, reference=args.reference, repeat_n=args.repeat_n, device=device,
                              command=[sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    except (ValueError, OSError) as error:
        parser.error(str(error))
    path = atomic_write_json(Path(args.out) / "samples.json", samples)
    for sample in samples["samples"]:
        print(f"[{sample['run']} | {sample['strategy']} | {sample['prompt']!r}] {sample['text'][:100]!r}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

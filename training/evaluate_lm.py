#!/usr/bin/env python
"""Cross-domain evaluation: every run on every corpus, in one table.

    python training/evaluate_lm.py --runs runs/ptb-lstm-small runs/ptb-gpt-small \
        --corpora ptb,wikitext-2,wikitext-2-raw,tinyshakespeare,pubmedqa,notes.txt --split test --out reports/crossdomain

Writes into --out: results.json ({"meta", "rows"}), results.csv, and the charts
bits_per_byte.png, perplexity_ratio.png, learning_curves.png. Each run's own training
corpus is evaluated too (for the relative increase) when it is not among --corpora.
A text file corpus is split 90/5/5 like training does, so --split test scores its last 5%.
Then `python training/report.py --results <out>/results.json` writes the markdown report.
Exit codes: 0 done, 2 bad input (a missing run folder, an unreadable, empty or too short corpus, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.data import CORPUS_NAMES, SPLITS  # noqa: E402
from lmcore.reporting import format_value  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="run folders written by training/train_lm.py")
    parser.add_argument("--corpora", required=True,
                        help=f"comma-separated corpus names ({', '.join(CORPUS_NAMES)}) or UTF-8 text file paths")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="split of every corpus (the WikiText mirrors hold only valid/test)")
    parser.add_argument("--out", required=True, help="folder for results.json, results.csv and the charts")
    parser.add_argument("--streams", type=int, default=10,
                        help="recurrent models: parallel streams (the first token of each stream but one is not scored)")
    parser.add_argument("--stride", type=int, default=None,
                        help="fixed-context models: sliding-window step in tokens (default: half the model's window)")
    parser.add_argument("--window-batch", type=int, default=16, help="fixed-context models: windows per forward pass")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    corpora = [name.strip() for name in args.corpora.split(",") if name.strip()]

    import torch

    from lmcore.eval.crossdomain import evaluate_runs, write_results
    from lmcore.reporting import write_charts

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def show(row: dict) -> None:
        print(f"{row['run']:>20} on {row['corpus']:<20} perplexity {format_value(row['perplexity'], 'ppl'):>10}  "
              f"bits/byte {format_value(row['bits_per_byte'], 'bpb')}  tokens {format_value(row['tokens'], 'count')}",
              flush=True)

    try:
        results = evaluate_runs(args.runs, corpora, args.split, streams=args.streams, stride=args.stride,
                                window_batch=args.window_batch, device=device,
                                command=[sys.argv[0], *(sys.argv[1:] if argv is None else argv)], on_row=show)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    json_path, csv_path = write_results(results, args.out)
    charts = write_charts(results, args.out)
    for warning in results["meta"]["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {json_path}, {csv_path} and {', '.join(charts.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Write the cross-domain markdown report from the JSON files of evaluate_lm.py and sample.py.

    python training/report.py --results reports/crossdomain/results.json \
        --samples reports/crossdomain/samples.json --out reports/crossdomain

Writes into --out: report.md, summary.json (the averages and rankings the report derives)
and the charts it links (bits_per_byte.png, perplexity_ratio.png, learning_curves.png).
Nothing but the given JSON files is read. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="results.json written by training/evaluate_lm.py")
    parser.add_argument("--samples", default=None, help="samples.json written by training/sample.py (optional)")
    parser.add_argument("--out", required=True, help="folder for report.md, summary.json and the charts")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from lmcore.eval.crossdomain import load_results, load_samples
    from lmcore.reporting import write_report

    try:
        results = load_results(args.results)
        samples = load_samples(args.samples) if args.samples else None
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {write_report(results, args.out, samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

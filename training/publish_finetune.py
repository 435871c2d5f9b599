#!/usr/bin/env python
"""Publish finished fine-tuning runs (with their evaluation) as reference results.

    python training/publish_finetune.py --runs runs/smollm2-lora-qa runs/smollm2-lora-dpo \\
        --out assets/finetune --readme README.md

For each run: a copy under ``--out/<run name>`` with ``config.json``, ``metrics.jsonl``,
``evaluation.json`` and, for a LoRA run of a Hub model not named in ``--no-adapter``,
the adapter in fp16 (what the app's PubMedQA tab applies to the base); then ``--out/summary.json`` and ``summary.md``
with one comparison row per run (method, steps, trainable parameters, time, memory,
perplexities and PubMedQA accuracy of base and fine-tuned model, commands), and, with
``--readme``, the same table in the README between ``<!-- results:finetune -->`` and
``<!-- /results:finetune -->``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.finetune.publish import export_finetune_run, finetune_table, summarize_finetune_run  # noqa: E402
from lmcore.io import atomic_write_json, atomic_write_text  # noqa: E402
from lmcore.runs import replace_marked_block  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="finished training/finetune.py run folders")
    parser.add_argument("--out", required=True, help="folder for the exported copies and the summary")
    parser.add_argument("--readme", help="a markdown file whose results:finetune block gets the table")
    parser.add_argument("--no-adapter", nargs="+", default=[], metavar="RUN",
                        help="runs (folder names) to publish without their LoRA adapter")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        unknown = sorted(set(args.no_adapter) - {Path(run).name for run in args.runs})
        if unknown:
            raise ValueError(f"--no-adapter names runs that are not in --runs: {unknown}")
        rows = []
        for run in map(Path, args.runs):
            export_finetune_run(run, out / run.name, with_adapter=run.name not in args.no_adapter)
            rows.append(summarize_finetune_run(out / run.name))
        table = finetune_table(rows)
        atomic_write_json(out / "summary.json", rows)
        commands = "\n".join(
            f"- `{row['run']}`: `python {row['command']}`"
            + (f"; evaluated with `python {row['evaluation_command']}`" if row["evaluation_command"] else "; not evaluated")
            for row in rows
        )
        atomic_write_text(out / "summary.md", f"{table}\n\nCommands:\n\n{commands}\n")
        if args.readme:
            readme = Path(args.readme)
            text = replace_marked_block(readme.read_text(encoding="utf-8"), "results:finetune", f"{table}\n\n{commands}")
            atomic_write_text(readme, text)
    except (ValueError, FileNotFoundError, KeyError) as error:
        parser.exit(2, f"publish_finetune.py: error: {error}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

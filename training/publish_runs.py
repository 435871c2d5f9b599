#!/usr/bin/env python
"""Publish finished training runs as reference results.

    python training/publish_runs.py --runs runs/ptb-*-small --out assets/runs --readme README.md

For each run: a copy under ``--out/<run name>`` with its records and the best checkpoint
in fp16 (what the app loads); then ``--out/summary.json`` and ``summary.md`` with one row
per run (perplexities at the best validation epoch, time, hardware, command, commit),
and, with ``--readme``, the same table in the README between
``<!-- results:ptb -->`` and ``<!-- /results:ptb -->`` (``--block`` names another block).

Ablations (records only; the first run is the reference that the others change)::

    python training/publish_runs.py --runs runs/ablate-lstm-preset runs/ablate-lstm-no-carry ... --out assets/ablations \\
        --records-only --compare-to-first --block results:ablations --readme README.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmcore.io import atomic_write_json, atomic_write_text  # noqa: E402
from lmcore.runs import export_run, markdown_table, replace_marked_block, summarize_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="finished run folders (with results.json)")
    parser.add_argument("--out", required=True, help="folder for the exported copies and the summary")
    parser.add_argument("--readme", help="a markdown file whose --block gets the table")
    parser.add_argument("--block", default="results:ptb",
                        help="name of the <!-- NAME --> ... <!-- /NAME --> block in --readme to fill")
    parser.add_argument("--records-only", action="store_true",
                        help="copy only the records (config, metrics, results, samples), no checkpoint or tokenizer")
    parser.add_argument("--compare-to-first", action="store_true",
                        help="add a column: each run's test perplexity relative to the first run's (ablations)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        rows = []
        for run in map(Path, args.runs):
            export_run(run, out / run.name, with_model=not args.records_only)
            rows.append(summarize_run(out / run.name))
        table = markdown_table(rows, compare_to_first=args.compare_to_first)
        atomic_write_json(out / "summary.json", rows)
        commands = "\n".join(
            f"- `{row['run']}`: `{row['command']}` (seed {row['seed']}, commit {row['git_commit']})"
            + "".join(f"; resumed with {resume}" for resume in row["resumes"])
            for row in rows
        )
        atomic_write_text(out / "summary.md", f"{table}\n\nCommands:\n\n{commands}\n")
        if args.readme:
            readme = Path(args.readme)
            atomic_write_text(readme, replace_marked_block(readme.read_text(encoding="utf-8"), args.block, f"{table}\n\n{commands}"))
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"publish_runs.py: error: {error}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

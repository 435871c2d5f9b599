"""Benchmark: peak memory of evaluating 1 run vs N runs in one process (it should stay flat).

``lmcore.eval.crossdomain.evaluate_runs`` loads one model at a time and frees it before
the next. This makes ``--runs`` run folders of a few-MB LSTM each (random weights, a
word vocabulary of ``--vocab-size`` words, default 2-layer, 256 wide: about 9 MB),
evaluates the first one alone, then all of them, on the same synthetic corpus, and
prints the peak resident memory (ru_maxrss) after each and their ratio. For contrast it
then holds all N models at once and prints how much the resident memory grows.

    python bench/bench_eval_memory.py                 # 8 runs
    python bench/bench_eval_memory.py --runs 16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.data import WordTokenizer  # noqa: E402
from lmcore.eval.crossdomain import evaluate_runs  # noqa: E402
from lmcore.io import atomic_write_json  # noqa: E402
from lmcore.models import build_model, load_model  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8, help="number of run folders (N)")
    parser.add_argument("--vocab-size", type=int, default=5_000)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--corpus-words", type=int, default=20_000, help="words of the evaluated corpus split")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser.parse_args()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory now, in MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def make_runs(folder: Path, args: argparse.Namespace) -> tuple[list[Path], Path, float]:
    """N run folders with random LSTM weights, and a corpus file; returns them and the model size in MB."""
    vocab = [f"w{index}" for index in range(args.vocab_size - 2)]
    rng = random.Random(0)
    weights = [1 / (rank + 1) for rank in range(len(vocab))]  # Zipf-like word frequencies
    lines = [" ".join(rng.choices(vocab, weights, k=20)) for _ in range(args.corpus_words // 20)]
    corpus = folder / "corpus.txt"
    # A text file is split 90/5/5: write 20 copies so that its test split holds --corpus-words words.
    corpus.write_text("\n".join(lines * 20) + "\n", encoding="utf-8")
    tokenizer = WordTokenizer(["<eos>", "<unk>", *vocab])
    runs, size_mb = [], 0.0
    for index in range(args.runs):
        run = folder / f"run-{index}"
        torch.manual_seed(index)
        model = build_model("lstm", vocab_size=tokenizer.vocab_size, hidden_size=args.hidden_size,
                            num_layers=args.num_layers)
        size_mb = model.num_parameters() * 4 / 2**20
        model.save_pretrained(run / "checkpoints" / "best")
        tokenizer.save(run / "tokenizer")
        atomic_write_json(run / "config.json", {"config": {"model": "lstm", "tokenizer": "word", "data": str(corpus)}})
        runs.append(run)
    return runs, corpus, size_mb


def main() -> None:
    args = parse_args()
    if args.runs < 2:
        raise SystemExit("--runs must be at least 2")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs, corpus, size_mb = make_runs(Path(tmp), args)
        evaluate_runs(runs[:1], [str(corpus)])  # warm-up: imports, allocator pools, the corpus cache
        one = evaluate_runs(runs[:1], [str(corpus)])
        peak_one = peak_rss_mb()
        after: list[float] = []
        many = evaluate_runs(runs, [str(corpus)], on_row=lambda row: after.append(current_rss_mb()))
        peak_many = peak_rss_mb()
        assert many["rows"][0]["perplexity"] == one["rows"][0]["perplexity"]

        before_holding = current_rss_mb()
        held = [load_model(run / "checkpoints" / "best") for run in runs]
        holding = current_rss_mb() - before_holding
        del held

    print(json.dumps({
        "runs": args.runs, "model_mb": round(size_mb, 1), "tokens_scored": one["rows"][0]["tokens"],
        "peak_rss_mb_1_run": round(peak_one, 1), "peak_rss_mb_n_runs": round(peak_many, 1),
        "rss_mb_after_each_run": [round(value, 1) for value in after],
        "rss_growth_mb_holding_all_n_models": round(holding, 1),
    }, indent=2))
    print(f"peak RSS, {args.runs} runs / 1 run: {peak_many / peak_one:.3f}  "
          f"(holding all {args.runs} models at once instead would add {holding:.0f} MB, "
          f"{args.runs} x {size_mb:.1f} MB of weights)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Train a language model from scratch.

    python training/train_lm.py --model lstm --data ptb --preset small --out runs/lstm-ptb
    accelerate launch training/train_lm.py --model gpt --data ptb --preset medium --out runs/gpt-ptb
    torchrun --nproc_per_node 2 training/train_lm.py --cpu true ...   # several CPU processes (gloo)
    python training/train_lm.py --resume --out runs/lstm-ptb           # continue an interrupted run

`--help` lists every setting. Exit codes: 0 done, 1 diverged, 2 bad settings, 130 interrupted (checkpoint saved).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.train import TrainingDiverged, config_from_args, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config, resume = config_from_args(argv)
    try:
        summary = train(config, resume=resume, command=[sys.argv[0], *argv])
    except ValueError as error:  # bad settings found once the data or run folder is seen
        print(f"train_lm.py: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"train_lm.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if os.environ.get("RANK", "0") == "0":  # once, not once per process
        print(f"test perplexity {summary['test_ppl']:.2f} (best validation {summary['best_valid_ppl']:.2f}); "
              f"run folder: {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

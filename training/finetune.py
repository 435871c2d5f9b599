"""Fine-tune a pretrained causal LM on PubMedQA: full SFT, LoRA or DPO.

Examples (offline, with the mirrors in ../shared)::

    export HF_HUB_OFFLINE=1 LMCORE_DATA_DIR=../shared/data LMCORE_MODELS_DIR=../shared/models
    python training/finetune.py --method lora --base HuggingFaceTB/SmolLM2-135M-Instruct \\
        --data pubmedqa --mode qa --out runs/smollm2-lora --max-steps 200
    accelerate launch training/finetune.py --method dpo --lora --base runs/smollm2-lora/merged \\
        --data pubmedqa --out runs/smollm2-dpo --max-steps 100

Training uses the PubMedQA train split, evaluation (every --eval-steps, with early
stopping) the dev split; the 500 official test questions are refused. Outputs in
--out: config.json, metrics.jsonl, model/ (full fine-tuning) or adapter/ + merged/ (LoRA).
Bad arguments exit with status 2 and a message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.finetune import METHODS, MODES, QA_PROMPT_FORMATS, FinetuneSettings  # noqa: E402

DEFAULTS = FinetuneSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fine-tune a pretrained Hugging Face causal LM on PubMedQA (SFT, LoRA or DPO).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--method", choices=METHODS, required=True,
                        help="sft: train all weights; lora: train a LoRA adapter; dpo: preference optimisation")
    parser.add_argument("--base", default="gpt2",
                        help="pretrained model: Hub id, local folder or .gguf file "
                             "(offline: HuggingFaceTB/SmolLM2-135M-Instruct with LMCORE_MODELS_DIR set)")
    parser.add_argument("--gguf-file", default=None, help="GGUF file name inside --base, when it is a folder or Hub repo")
    parser.add_argument("--data", choices=("pubmedqa",), default="pubmedqa", help="training corpus")
    parser.add_argument("--mode", choices=MODES, default="qa",
                        help="lm: language modelling on contexts and long answers; qa: question -> decision + answer "
                             "(dpo needs qa)")
    parser.add_argument("--out", required=True, help="new output folder")
    parser.add_argument("--max-steps", type=int, default=DEFAULTS.max_steps,
                        help="optimizer steps (-1: run --epochs epochs)")
    parser.add_argument("--epochs", type=float, default=DEFAULTS.num_train_epochs, help="epochs when --max-steps is -1")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate (default: 5e-5 sft, 2e-4 lora, 1e-6 dpo, 5e-6 dpo --lora)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="examples per device per step")
    parser.add_argument("--grad-accum", type=int, default=DEFAULTS.gradient_accumulation_steps,
                        help="gradient accumulation steps")
    parser.add_argument("--warmup-ratio", type=float, default=DEFAULTS.warmup_ratio,
                        help="fraction of the steps with linear warmup")
    parser.add_argument("--eval-steps", type=int, default=DEFAULTS.eval_steps,
                        help="evaluate on the dev split every N steps")
    parser.add_argument("--patience", type=int, default=DEFAULTS.early_stopping_patience,
                        help="stop after this many evaluations without a lower validation loss")
    parser.add_argument("--logging-steps", type=int, default=DEFAULTS.logging_steps,
                        help="log the training loss every N steps")
    parser.add_argument("--chunk-length", type=int, default=DEFAULTS.chunk_length,
                        help="tokens per training block in --mode lm")
    parser.add_argument("--max-length", type=int, default=DEFAULTS.max_length,
                        help="truncate prompt + answer to this many tokens (qa / dpo)")
    parser.add_argument("--qa-prompt", choices=sorted(QA_PROMPT_FORMATS), default=DEFAULTS.qa_prompt,
                        help="qa / dpo prompt: question-first 'Question: ...\\nContext: ...\\nAnswer:' (the course's) "
                             "or question-last 'Context: ...\\nQuestion: ...\\nAnswer:'; evaluation uses the same")
    parser.add_argument("--lora", action="store_true", help="with --method dpo: train a LoRA adapter, not all weights")
    parser.add_argument("--lora-r", type=int, default=DEFAULTS.lora_r, help="LoRA rank")
    parser.add_argument("--lora-alpha", type=int, default=DEFAULTS.lora_alpha, help="LoRA scaling numerator (scale = alpha / r)")
    parser.add_argument("--lora-dropout", type=float, default=DEFAULTS.lora_dropout, help="dropout on the LoRA input")
    parser.add_argument("--lora-targets", default=None,
                        help="comma-separated module names to adapt, e.g. q_proj,v_proj or all-linear "
                             "(default: PEFT's choice for the architecture)")
    parser.add_argument("--beta", type=float, default=DEFAULTS.beta, help="DPO beta: pull towards the reference model")
    parser.add_argument("--max-train-records", type=int, default=None, help="use only the first N training questions")
    parser.add_argument("--max-eval-records", type=int, default=None, help="use only the first N dev questions")
    parser.add_argument("--no-eval", action="store_true", help="skip evaluation and early stopping")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed (init, data order, DPO pairs)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    parser.add_argument("--report-to", default=DEFAULTS.report_to, help="extra loggers: none, tensorboard, wandb, ...")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.lora and args.method != "dpo":
        parser.error("--lora only applies to --method dpo (use --method lora for LoRA SFT)")
    for name in ("max_train_records", "max_eval_records"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")

    from accelerate import PartialState

    from lmcore.data.pubmedqa import load_pubmedqa
    from lmcore.finetune import finetune

    try:
        train = list(load_pubmedqa("train"))[: args.max_train_records]
        dev = None if args.no_eval else list(load_pubmedqa("dev"))[: args.max_eval_records]
        result = finetune(
            args.method,
            args.base,
            train,
            args.out,
            eval_records=dev,
            mode=args.mode,
            gguf_file=args.gguf_file,
            learning_rate=args.lr,
            max_steps=args.max_steps,
            num_train_epochs=args.epochs,
            batch_size=args.batch_size,
            gradient_accumulation_steps=args.grad_accum,
            warmup_ratio=args.warmup_ratio,
            eval_steps=args.eval_steps,
            early_stopping_patience=args.patience,
            logging_steps=args.logging_steps,
            chunk_length=args.chunk_length,
            max_length=args.max_length,
            qa_prompt=args.qa_prompt,
            lora=True if args.method == "lora" else args.lora,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            lora_targets=[name.strip() for name in args.lora_targets.split(",")] if args.lora_targets else None,
            beta=args.beta,
            seed=args.seed,
            use_cpu=args.cpu,
            report_to=args.report_to,
        )
    except (ValueError, OSError) as error:
        parser.error(str(error))
    if PartialState().is_main_process:
        print(f"saved {result.model_dir}" + (f" and adapter {result.adapter_dir}" if result.adapter_dir else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start a small training run from the page, in a background process, follow it, stop it.

:class:`TrainingManager` runs ``training/train_lm.py`` (one run at a time) with the
settings a visitor picks from fixed lists, into ``<train_dir>/<name>``; the name is
checked (:func:`lmcore.app.runs.check_run_name`) so it cannot leave that folder. Stop
sends SIGINT, which the trainer turns into "save ``checkpoints/last`` and exit 130"
(the run can then be resumed with ``--resume``). The process's output goes to
``<run>/train.log``. In Space mode the manager refuses to start anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lmcore.app.runs import check_run_name, curves, load_metrics, safe_child
from lmcore.data import CORPUS_NAMES
from lmcore.models import MODEL_TYPES
from lmcore.runs import read_run

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO_ROOT / "training" / "train_lm.py"
TRAIN_TOKENIZERS = ("word", "char", "gpt2")
TRAIN_PRESETS = ("tiny", "small")
MAX_STEPS_CAP = 20_000
LOG_NAME = "train.log"
EXIT_MEANINGS = {0: "finished", 1: "stopped: the loss diverged", 2: "refused: bad settings", 130: "stopped (checkpoint saved)"}


@dataclass
class TrainingJob:
    """One background run."""

    name: str
    out: Path
    command: list[str]
    process: subprocess.Popen
    max_steps: int
    started: float
    stop_requested: bool = False

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.returncode is None


class TrainingManager:
    """At most one training process at a time, started from the page."""

    def __init__(self, train_dir: Path, *, enabled: bool = True, disabled_reason: str = "") -> None:
        self.train_dir = Path(train_dir)
        self.enabled = enabled
        self.disabled_reason = disabled_reason or "training from the page is turned off"
        self.job: TrainingJob | None = None
        self._lock = threading.Lock()

    def start(
        self, name: str, model: str, data: str, tokenizer: str, preset: str, max_steps: float
    ) -> TrainingJob:
        """Start ``train_lm.py``; ValueError (with what is allowed) for bad settings or a busy/disabled manager."""
        if not self.enabled:
            raise ValueError(f"Training from the page is off: {self.disabled_reason}.")
        name = check_run_name((name or "").strip())
        for label, value, allowed in (("model", model, MODEL_TYPES), ("data", data, CORPUS_NAMES),
                                      ("tokenizer", tokenizer, TRAIN_TOKENIZERS), ("preset", preset, TRAIN_PRESETS)):
            if value not in allowed:
                raise ValueError(f"unknown {label} {value!r}; allowed: {', '.join(allowed)}")
        if max_steps is None or int(max_steps) != max_steps or not 1 <= max_steps <= MAX_STEPS_CAP:
            raise ValueError(f"max steps must be a whole number from 1 to {MAX_STEPS_CAP:,}, got {max_steps!r}")
        with self._lock:
            if self.job is not None and self.job.running:
                raise ValueError(f"Run {self.job.name!r} is still training: stop it first (one run at a time).")
            self.train_dir.mkdir(parents=True, exist_ok=True)
            out = safe_child(self.train_dir, name)
            if out.exists():
                raise ValueError(f"A run called {name!r} already exists in {self.train_dir}: choose another name.")
            out.mkdir(parents=True)
            command = [
                sys.executable, str(TRAIN_SCRIPT), "--model", model, "--data", data, "--tokenizer", tokenizer,
                "--preset", preset, "--max-steps", str(int(max_steps)), "--epochs", "1000", "--out", str(out),
                "--report-to", "none",
            ]  # fmt: skip
            env = {**os.environ, "LMCORE_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
            with open(out / LOG_NAME, "w", encoding="utf-8") as log:
                process = subprocess.Popen(
                    command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            self.job = TrainingJob(name=name, out=out, command=command, process=process,
                                   max_steps=int(max_steps), started=time.time())
            return self.job

    def stop(self, grace_seconds: float = 20.0) -> str:
        """Ask the running job to stop (SIGINT: checkpoint and exit); kill it if it has not ended after the grace time."""
        job = self.job
        if job is None or not job.running:
            return "No training run is in progress."
        job.stop_requested = True
        job.process.send_signal(signal.SIGINT)

        def kill_if_stuck() -> None:
            try:
                job.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                job.process.kill()

        threading.Thread(target=kill_if_stuck, daemon=True).start()
        return f"Stopping {job.name!r}: it saves checkpoints/last and exits."

    def status(self) -> dict:
        """Where the current (or last) job stands: state, step, loss, progress fraction, log tail."""
        job = self.job
        if job is None:
            return {"state": "idle", "text": "No run started from this page yet.", "progress": 0.0, "name": None}
        records = load_metrics(read_run(job.out))
        series = curves(records)
        step = max((r.get("step", 0) for r in records if isinstance(r.get("step"), int)), default=0)
        loss = series.train_steps[-1][1] if series.train_steps else None
        code = job.returncode
        if code is None:
            state = "stopping" if job.stop_requested else "running"
        else:
            state = EXIT_MEANINGS.get(code, f"ended with exit code {code}")
            if job.stop_requested and code != 0:
                state = "stopped" + (" (checkpoint saved)" if code == 130 else "")
        elapsed = time.time() - job.started
        parts = [f"**{job.name}**: {state}", f"step {step:,} / {job.max_steps:,}", f"{elapsed:.0f} s"]
        if loss is not None:
            parts.append(f"train loss {loss:.3f} nats/token")
        return {
            "state": state,
            "name": job.name,
            "step": step,
            "progress": min(1.0, step / job.max_steps),
            "text": " · ".join(parts),
            "log": self.log_tail(),
            "returncode": code,
        }

    def log_tail(self, lines: int = 15) -> str:
        job = self.job
        if job is None:
            return ""
        try:
            text = (job.out / LOG_NAME).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

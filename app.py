"""Train Your Own GPT — the Gradio app (Hugging Face Space entry point).

Run with ``python app.py`` (port 7860 by default; ``GRADIO_SERVER_PORT`` changes it).
This file is the page layout and its wiring; the work is done in :mod:`lmcore.app`.
Configuration: environment variables, see README.md ("The app") and :mod:`lmcore.app.config`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import gradio as gr
from PIL import Image

from lmcore.app import AppConfig, AppState
from lmcore.app import about, generation, plots, pubmedqa, runs, scoring
from lmcore.app.training import MAX_STEPS_CAP, TRAIN_PRESETS, TRAIN_TOKENIZERS
from lmcore.data import CORPUS_NAMES
from lmcore.models import MODEL_TYPES
from lmcore.runs import read_run

CSS = """
.app-header h1 { margin-bottom: 0.1em; }
.status-box { min-height: 1.6em; }
.status-box p { margin: 0.2em 0; }
.lm-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 14px; }
.lm-card { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px 14px;
           background: var(--background-fill-primary); box-shadow: 0 1px 3px rgba(0,0,0,0.06); }
.lm-card-head { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
.lm-name { font-weight: 700; font-size: 1.02em; word-break: break-all; }
.lm-badge { font-size: 0.78em; padding: 2px 8px; border-radius: 999px; background: #eef2ff; color: #3730a3; white-space: nowrap; }
.lm-state-done .lm-badge { background: #dcfce7; color: #166534; }
.lm-state-unavailable .lm-badge, .lm-state-error .lm-badge { background: #fee2e2; color: #991b1b; }
.lm-state-stopped .lm-badge { background: #fef3c7; color: #92400e; }
.lm-desc { font-size: 0.8em; color: var(--body-text-color-subdued); margin: 2px 0 8px; }
.lm-text { white-space: pre-wrap; line-height: 1.55; font-size: 0.95em; }
.lm-prompt { color: var(--body-text-color-subdued); }
.lm-generated { font-weight: 500; }
.lm-token { border-radius: 3px; padding: 0 1px; color: #111827; }
.lm-cursor { color: #6366f1; animation: blink 1s steps(2, start) infinite; }
@keyframes blink { to { visibility: hidden; } }
.lm-error { color: #b91c1c; font-size: 0.9em; }
.lm-facts { font-size: 0.75em; color: var(--body-text-color-subdued); margin-top: 8px; }
.lm-legend { font-size: 0.8em; margin-top: 10px; display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.qa-answers .lm-grid { grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); }
.lm-empty { color: var(--body-text-color-subdued); padding: 12px; }
"""

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate")


def _error(message: str) -> str:
    return f"**⚠ {message}**"


def _notes(notes: list[str]) -> str:
    return " ".join(f"_{note}_" for note in notes)


def build_app(config: AppConfig | None = None) -> gr.Blocks:
    """The app's page for ``config`` (default: read from the environment)."""
    state = AppState.create(config or AppConfig.from_env())
    cfg, registry = state.config, state.registry

    def run_choices() -> list[str]:
        return list(state.runs)

    def default_runs() -> list[str]:
        reference = [name for name, run in state.runs.items() if run.root == "reference"]
        return reference or list(state.runs)[:4]

    def default_generation_models() -> list[str]:
        names = registry.names("run")
        reference = [name for name in names if state.runs.get(name) and state.runs[name].root == "reference"]
        return (reference or names)[:4] or registry.names()[:1]

    with gr.Blocks(title="Train Your Own GPT") as demo:
        gr.Markdown(
            "# Train Your Own GPT\nLanguage models trained from scratch with this project's code — RNN, LSTM, "
            "Transformer, GPT — next to pretrained and fine-tuned ones.",
            elem_classes="app-header",
        )
        with gr.Tabs():
            # ------------------------------------------------------------------ 1. training monitor
            with gr.Tab("Training monitor", id="monitor"):
                with gr.Row():
                    run_select = gr.CheckboxGroup(run_choices(), value=default_runs(), label="Runs",
                                                  info="reference runs from assets/ and local run folders", scale=4)
                    with gr.Column(scale=1, min_width=180):
                        refresh_button = gr.Button("↻ Look for runs", size="sm")
                        live = gr.Checkbox(value=True, label="Follow live (every 3 s)")
                monitor_status = gr.Markdown(elem_classes="status-box")
                runs_table = gr.Dataframe(label="Runs", interactive=False, wrap=True, show_label=False, elem_id="runs-table")
                loss_plot = gr.Plot(label="Loss and perplexity per step", show_label=False)
                with gr.Row():
                    epoch_plot = gr.Plot(label="Perplexity per epoch", show_label=False)
                    lr_plot = gr.Plot(label="Learning rate", show_label=False)
                with gr.Accordion("Latest generated samples", open=False):
                    samples_md = gr.Markdown()
                train_title = "Train a small model from this page" + (" (off in Space mode)" if cfg.space_mode else "")
                with gr.Accordion(train_title, open=not cfg.space_mode):
                    if cfg.space_mode:
                        gr.Markdown(f"Training from the page is off: {state.trainer.disabled_reason}. "
                                    "Run the app on your own machine to train from here.")
                    with gr.Row():
                        train_name = gr.Textbox(value="my-tiny-lstm", label="Run name", info="letters, digits, . _ -")
                        train_model = gr.Dropdown(list(MODEL_TYPES), value="lstm", label="Model")
                        train_data = gr.Dropdown(list(CORPUS_NAMES), value="ptb", label="Corpus")
                        train_tokenizer = gr.Dropdown(list(TRAIN_TOKENIZERS), value="word", label="Tokenizer")
                        train_preset = gr.Dropdown(list(TRAIN_PRESETS), value="tiny", label="Size preset")
                        train_steps = gr.Number(value=300, minimum=1, maximum=MAX_STEPS_CAP, precision=0, label="Max steps")
                    with gr.Row():
                        start_button = gr.Button("▶ Start training", variant="primary", interactive=not cfg.space_mode)
                        stop_train_button = gr.Button("■ Stop training", variant="stop", interactive=not cfg.space_mode)
                    train_status = gr.Markdown(elem_classes="status-box")
                    train_log = gr.Textbox(label="Log (last lines)", lines=4, max_lines=12, interactive=False,
                                           placeholder="The trainer's messages appear here (errors, where it saved "
                                           "its checkpoint, the final test perplexity); progress is in the plots.")
                timer = gr.Timer(3.0)
                signature = gr.State(None)

            # ------------------------------------------------------------------ 2. cross-domain perplexity
            crossdomain = scoring.load_crossdomain(cfg.crossdomain_results)
            bits_figure, ppl_figure = scoring.crossdomain_figures(crossdomain)
            with gr.Tab("Cross-domain perplexity", id="crossdomain"):
                gr.Markdown(crossdomain.message)
                with gr.Row():
                    gr.Plot(bits_figure, label="Bits per byte", show_label=False)
                    gr.Plot(ppl_figure, label="Perplexity", show_label=False)
                gr.Dataframe(crossdomain.table, label="Model × corpus", interactive=False, wrap=True)
                if crossdomain.images:
                    with gr.Accordion("Charts from the evaluation", open=False):
                        # In memory, so the files need not be under a folder Gradio serves from.
                        gr.Gallery([(Image.open(path).copy(), Path(path).stem) for path in crossdomain.images],
                                   columns=2, label="Charts", height="auto")
                gr.Markdown("### Score your own text\nPaste a text or upload a UTF-8 file; every chosen model "
                            "scores it now. Bits per byte compares models across tokenizers; perplexity is per "
                            f"token of each model's own tokenizer. At most {cfg.max_text_chars:,} characters are scored.")
                with gr.Row():
                    score_text = gr.Textbox(lines=6, max_lines=14, label="Text", placeholder="Paste a paragraph …", scale=3)
                    score_file = gr.File(label="…or upload a text file", file_count="single", type="filepath", scale=1)
                score_models = gr.CheckboxGroup(registry.names(), value=registry.names("run"), label="Models")
                score_button = gr.Button("Score the text", variant="primary")
                score_status = gr.Markdown(elem_classes="status-box")
                score_table = gr.Dataframe(scoring.scores_table([]), label="Scores", interactive=False, wrap=True,
                                           elem_id="score-table")
                score_plot = gr.Plot(plots.empty_figure("The bits per byte of each model appear here.", height=1.2),
                                     label="Bits per byte", show_label=False)

            # ------------------------------------------------------------------ 3. prompt comparison
            with gr.Tab("Prompt comparison", id="generate"):
                with gr.Row():
                    prompt = gr.Textbox(value="the meaning of life is", lines=2, label="Prompt", scale=3)
                    gen_models = gr.Dropdown(registry.names(), value=default_generation_models(), multiselect=True,
                                             label="Models (side by side)", scale=2)
                with gr.Row():
                    strategy = gr.Radio(list(generation.STRATEGIES), value="sample", label="Decoding")
                    temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="Temperature")
                    top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)")
                    top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p (1 = off)")
                with gr.Row():
                    max_new = gr.Number(value=min(60, cfg.max_new_tokens), precision=0, minimum=1,
                                        label=f"Max new tokens (capped at {cfg.max_new_tokens})")
                    seed = gr.Number(value=0, precision=0, label="Seed (empty = random)")
                    colour = gr.Checkbox(value=False, label="Colour tokens by probability")
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary")
                    stop_button = gr.Button("■ Stop", variant="stop")
                gen_status = gr.Markdown(elem_classes="status-box")
                gen_output = gr.HTML(generation.render_outputs([], ""), elem_id="generation-output")
                with gr.Accordion("Raw output (JSON)", open=False):
                    gen_json = gr.JSON(label="Outputs")

            # ------------------------------------------------------------------ 4. PubMedQA
            with gr.Tab("PubMedQA Q&A", id="pubmedqa"):
                gr.Markdown(
                    f"**Base:** `{state.pubmedqa_base}` · **Fine-tuned:** "
                    + (f"`{state.pubmedqa_finetuned}`" if state.pubmedqa_finetuned else f"unavailable: {state.finetuned_missing_reason}")
                    + f"\n\nBoth read the same prompt (`{pubmedqa.prompt_outline(state.pubmedqa_prompt_format)}`, "
                    "the format the fine-tuned model was trained on); the yes/no/maybe probabilities compare the "
                    "likelihood of each answer, as in the evaluation."
                )
                qa_source = gr.Markdown(elem_classes="status-box")
                qa_pick = gr.Dropdown([], label="A test question", info="or type your own below", allow_custom_value=False)
                qa_question = gr.Textbox(label="Question", lines=1)
                qa_context = gr.Textbox(label="Context (the abstract; blank lines separate sections)", lines=6, max_lines=14)
                with gr.Row():
                    qa_button = gr.Button("Answer", variant="primary")
                    qa_stop = gr.Button("■ Stop", variant="stop")
                qa_status = gr.Markdown(elem_classes="status-box", elem_id="qa-status")
                qa_gold = gr.Markdown()
                with gr.Row():
                    with gr.Column():
                        gr.Markdown(f"#### Base: {state.pubmedqa_base}")
                        qa_base_probs = gr.Label(label="P(answer)", num_top_classes=3)
                        qa_base_verdict = gr.Markdown()
                    with gr.Column():
                        gr.Markdown(f"#### Fine-tuned: {state.pubmedqa_finetuned or 'unavailable'}")
                        qa_tuned_probs = gr.Label(label="P(answer)", num_top_classes=3)
                        qa_tuned_verdict = gr.Markdown()
                gr.Markdown(f"#### Their answers (greedy decoding, at most {pubmedqa.ANSWER_TOKENS} tokens)")
                qa_answers = gr.HTML(elem_id="pubmedqa-answers", elem_classes="qa-answers")
                evaluation_path = pubmedqa.find_evaluation(cfg.finetune_dir, cfg.pubmedqa_eval, state.pubmedqa_finetuned_path)
                labels = {"base": f"base ({state.pubmedqa_base})",
                          "finetuned": f"fine-tuned ({state.pubmedqa_finetuned or 'unavailable'})"}
                gr.Markdown(pubmedqa.evaluation_summary(evaluation_path, labels))

            # ------------------------------------------------------------------ 5. about
            with gr.Tab("About", id="about"):
                about_md = gr.Markdown(about.about_markdown(cfg, registry, crossdomain, evaluation_path))

        # ====================================================================== wiring
        def monitor(selected: list[str], last_signature, force: bool = False):
            # Re-read config.json and results.json: a run in progress gains them as it goes.
            chosen = [read_run(state.runs[name].path, name, state.runs[name].root)
                      for name in (selected or []) if name in state.runs]
            current = runs.metrics_signature(chosen) + (tuple(selected or []),)
            training = state.trainer.status()
            train_text = training["text"]
            train_lines = training.get("log", "")
            if not force and current == last_signature:
                return (gr.skip(),) * 6 + (current, train_text, train_lines)
            if not chosen:
                message = "No run selected." if state.runs else (
                    "No run folders found: ship reference runs in assets/runs, set LMCORE_RUN_DIRS, or train one below.")
                empty = plots.empty_figure(message)
                return (message, runs.summary_table([]), empty, empty, empty, "", current, train_text, train_lines)
            records = {run.name: runs.load_metrics(run) for run in chosen}
            series = {name: runs.curves(items) for name, items in records.items()}
            table = runs.summary_table([runs.run_summary(run, records[run.name]) for run in chosen])
            samples = []
            for run in chosen:
                for sample in runs.latest_samples(run, limit=2):
                    samples.append(f"**{run.name}** ({sample.get('strategy')}, epoch {sample.get('epoch', 0):.2g}): "
                                   f"_{sample.get('prompt') or '(start of text)'}_ → {sample.get('text', '')}")
            return (
                f"{len(chosen)} run(s) · metrics read from metrics.jsonl",
                table,
                plots.loss_figure(series),
                plots.epoch_figure(series),
                plots.lr_figure(series),
                "\n\n".join(samples) or "No samples yet (a run writes samples.jsonl after each epoch).",
                current,
                train_text,
                train_lines,
            )

        monitor_outputs = [monitor_status, runs_table, loss_plot, epoch_plot, lr_plot, samples_md, signature,
                           train_status, train_log]

        def refresh(selected):
            state.refresh_runs()
            keep = [name for name in (selected or []) if name in state.runs]
            names = registry.names()
            return (gr.update(choices=run_choices(), value=keep or default_runs()),
                    gr.update(choices=names), gr.update(choices=names))

        def tick(selected, last_signature, follow):
            if not follow:
                return (gr.skip(),) * len(monitor_outputs)
            return monitor(selected, last_signature)

        def start_training(name, model, data, tokenizer, preset, steps, selected):
            try:
                job = state.trainer.start(name, model, data, tokenizer, preset, steps)
            except ValueError as error:
                return _error(str(error)), gr.skip()
            state.refresh_runs()
            chosen = list(dict.fromkeys([*(selected or []), *([job.name] if job.name in state.runs else [])]))
            return f"Started **{job.name}** → `{job.out}`", gr.update(choices=run_choices(), value=chosen)

        private = {"api_visibility": "private"}
        run_select.change(lambda selected: monitor(selected, None, force=True), [run_select], monitor_outputs,
                          show_progress="hidden", **private)
        refresh_button.click(refresh, [run_select], [run_select, score_models, gen_models], **private).then(
            lambda selected: monitor(selected, None, force=True), [run_select], monitor_outputs, **private)
        timer.tick(tick, [run_select, signature, live], monitor_outputs, show_progress="hidden", **private)
        start_button.click(start_training, [train_name, train_model, train_data, train_tokenizer, train_preset,
                                            train_steps, run_select], [train_status, run_select], **private)
        stop_train_button.click(lambda: state.trainer.stop(), None, [train_status], **private)
        demo.load(lambda selected: monitor(selected, None, force=True), [run_select], monitor_outputs, **private)

        def score(text, file_path, names):
            try:
                text, notes = scoring.read_text_input(text, file_path, max_chars=cfg.max_text_chars)
                scores = scoring.score_text(registry, names or [], text)
            except ValueError as error:
                return _error(str(error)), gr.skip(), gr.skip()
            failed = [s for s in scores if s.status != "ok"]
            summary = f"Scored {len(text):,} characters with {len(scores) - len(failed)} model(s)."
            if failed:
                summary += " " + " ".join(f"⚠ {s.model}: {s.status}" for s in failed)
            return (_notes(notes) + " " + summary).strip(), scoring.scores_table(scores), scoring.scores_figure(scores)

        score_button.click(score, [score_text, score_file, score_models], [score_status, score_table, score_plot],
                           api_name="score")

        def generate(names, prompt_text, decoding, temp, k, p, new_tokens, seed_value, colour_tokens):
            try:
                request = generation.prepare_request(
                    registry, names, prompt_text, decoding, temp, k, p, new_tokens, seed_value, colour_tokens,
                    cap=cfg.max_new_tokens)
            except ValueError as error:
                yield _error(str(error)), gr.skip(), gr.skip()
                return
            notes = _notes(request.notes)
            stream = generation.stream_side_by_side(registry, request.names, request.prompt, request.decoding,
                                                    colour=request.colour)
            with contextlib.closing(stream):
                for outputs in stream:
                    running = any(o.state in ("waiting", "loading", "generating") for o in outputs)
                    status = (notes + " " + ("Generating…" if running else "Done.")).strip()
                    yield status, generation.render_outputs(outputs, request.prompt), generation.outputs_as_dict(outputs)

        gen_event = generate_button.click(
            generate, [gen_models, prompt, strategy, temperature, top_k, top_p, max_new, seed, colour],
            [gen_status, gen_output, gen_json], api_name="generate", show_progress="hidden")
        submit_event = prompt.submit(
            generate, [gen_models, prompt, strategy, temperature, top_k, top_p, max_new, seed, colour],
            [gen_status, gen_output, gen_json], show_progress="hidden", **private)
        stop_button.click(lambda: "Stopped.", None, [gen_status], cancels=[gen_event, submit_event], queue=False,
                          **private)

        def test_questions() -> dict[str, pubmedqa.Question]:
            """The test questions by PubMed id (loaded once for all visitors)."""
            questions, _ = pubmedqa.load_test_questions(online=cfg.online)
            return {question.pubid: question for question in questions}

        def load_questions():
            questions, message = pubmedqa.load_test_questions(online=cfg.online)
            return message, gr.update(choices=pubmedqa.question_choices(questions), value=None)

        def pick_question(pubid):
            question = test_questions().get(pubid)
            if question is None:
                return gr.skip(), gr.skip()
            return question.question, pubmedqa.context_text(question)

        def answer(question_text, context, pubid):
            try:
                question, notes = pubmedqa.check_question(question_text, context, test_questions().get(pubid))
            except ValueError as error:
                yield _error(str(error)), "", None, "", None, "", gr.skip()
                return
            gold = f"**Gold answer:** {question.gold} — _{question.long_answer}_" if question.gold else ""
            names = [state.pubmedqa_base, state.pubmedqa_finetuned]
            missing = ["", state.finetuned_missing_reason]
            for step in pubmedqa.answer_side_by_side(registry, names, question, missing, state.pubmedqa_prompt_format):
                stage = {"writing": "Writing the answers…", "done": "Done."}.get(step.stage, f"{step.stage[0].upper()}{step.stage[1:]}…")
                verdicts = [_error(text) if text.startswith("unavailable") else text for text in step.verdicts]
                yield ((_notes(notes) + " " + stage).strip(), gold, step.probabilities[0], verdicts[0],
                       step.probabilities[1], verdicts[1],
                       generation.render_outputs(step.outputs, "") if step.outputs else gr.skip())

        demo.load(load_questions, None, [qa_source, qa_pick], **private)
        qa_pick.change(pick_question, [qa_pick], [qa_question, qa_context], **private)
        qa_event = qa_button.click(
            answer, [qa_question, qa_context, qa_pick],
            [qa_status, qa_gold, qa_base_probs, qa_base_verdict, qa_tuned_probs, qa_tuned_verdict, qa_answers],
            api_name="pubmedqa", show_progress="hidden")
        qa_stop.click(lambda: "Stopped.", None, [qa_status], cancels=[qa_event], queue=False, **private)
        demo.load(lambda: about.about_markdown(cfg, registry, crossdomain, evaluation_path), None, [about_md], **private)
    return demo


def launch(demo: gr.Blocks, **options) -> None:
    """Queue requests (several visitors at once) and serve the page with the app's look."""
    demo.queue(max_size=64, default_concurrency_limit=1).launch(theme=THEME, css=CSS, max_file_size="20mb", **options)


if __name__ == "__main__":
    launch(build_app(), server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))

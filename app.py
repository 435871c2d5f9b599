"""Train Your Own GPT — the Gradio app (Hugging Face Space entry point).

Run with ``python app.py`` (port 7860 by default; ``GRADIO_SERVER_PORT`` changes it).
"""

from __future__ import annotations

import gradio as gr

import lmcore
from lmcore.models import MODEL_TYPES

ABOUT = f"""
# Train Your Own GPT

Train language models from scratch (hand-written RNN, LSTM, Vaswani Transformer, GPT-2),
compare them with exact perplexity, and fine-tune pretrained ones.

- Library: `lmcore` {lmcore.__version__}
- Model types: {", ".join(f"`{name}`" for name in MODEL_TYPES)}
- Train: `accelerate launch training/train_lm.py --help`
"""


def build_app() -> gr.Blocks:
    """The app's page. Tabs are added as the results they show exist."""
    with gr.Blocks(title="Train Your Own GPT") as demo:
        with gr.Tab("About"):
            gr.Markdown(ABOUT)
    return demo


if __name__ == "__main__":
    build_app().queue().launch(server_name="0.0.0.0")

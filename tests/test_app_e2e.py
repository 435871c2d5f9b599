"""End to end: ``python app.py`` with tiny models, driven by gradio_client and by a real browser.

The app starts in a subprocess exactly as a user starts it, configured by environment
variables: two tiny runs trained here, no pretrained model, and a tiny random GPT-2 (with
the real GPT-2 tokenizer) plus a LoRA adapter as the PubMedQA base and fine-tuned models.
The browser test drives headless Chromium (Debian's ``chromium`` package, through
Playwright) through every tab and saves screenshots to ``$LMCORE_E2E_SCREENSHOTS`` (default:
a temporary folder, printed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_fixtures import gpt2_tokenizer_path, session_dir, tiny_hf_models, tiny_run

from lmcore.app.generation import fitting_new_tokens
from lmcore.data import load_tokenizer
from lmcore.eval import evaluate_text
from lmcore.generate import generate
from lmcore.models import load_model

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LMCORE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MAX_NEW_TOKENS = 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    base_dir, adapter_dir = tiny_hf_models(str(gpt2_tokenizer_path()))
    runs_dir = tiny_run("lstm").parent
    tiny_run("gpt")
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1", "LMCORE_ASSETS_DIR": str(session_dir() / "assets"),
        "LMCORE_RUN_DIRS": str(runs_dir), "LMCORE_APP_MODELS": "", "LMCORE_SPACE": "1",
        "LMCORE_PUBMEDQA_BASE": str(base_dir), "LMCORE_PUBMEDQA_FINETUNED": str(adapter_dir),
        "LMCORE_APP_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS), "LMCORE_APP_MAX_TEXT_CHARS": "2000",
    }  # fmt: skip
    log = open(session_dir() / f"app-{port}.log", "w+", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"app.py exited with code {process.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("app.py did not answer within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# ----------------------------------------------------------------------------- the API (gradio_client)


def test_api_generates_the_same_text_as_the_library_and_caps_max_new_tokens(app_url: str) -> None:
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    status, page, outputs = client.predict(
        ["toy-lstm", "toy-gpt"], "the cat", "sample", 1.0, 0, 0.9, 1000, 5, False, api_name="/generate"
    )
    assert f"Max new tokens capped at {MAX_NEW_TOKENS} (asked for 1000)." in status and "Done." in status
    for name in ("toy-lstm", "toy-gpt"):
        run = tiny_run(name.removeprefix("toy-"))
        model, tokenizer = load_model(run / "checkpoints" / "best"), load_tokenizer(run / "tokenizer")
        new_tokens, _ = fitting_new_tokens(model, tokenizer, "the cat", MAX_NEW_TOKENS)
        expected = generate(model, tokenizer, "the cat", max_new_tokens=new_tokens, do_sample=True, top_p=0.9, seed=5)
        assert outputs[name]["state"] == "done" and outputs[name]["text"] == expected.text
    assert 'data-model="toy-gpt"' in page
    # Several visitors at once: the requests queue and all complete.
    jobs = [client.submit(["toy-lstm"], "a dog", "sample", 1.0, 0, 1.0, 8, seed, False, api_name="/generate")
            for seed in range(4)]
    assert [job.result(timeout=60)[2]["toy-lstm"]["state"] for job in jobs] == ["done"] * 4
    status, _, _ = client.predict(["toy-lstm"], "", "greedy", 1.0, 0, 1.0, 5, 0, False, api_name="/generate")
    assert "The prompt is empty" in status


def test_api_scores_a_text_and_caps_a_huge_one(app_url: str) -> None:
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    text = "the cat sees a dog .\n" * 200  # 4,200 characters; the app scores the first 2,000
    status, table, _ = client.predict(text, None, ["toy-lstm"], api_name="/score")
    assert "The text was capped at its first 2,000 characters (it has 4,200)." in status
    run = tiny_run("lstm")
    expected = evaluate_text(load_model(run / "checkpoints" / "best"), load_tokenizer(run / "tokenizer"), text[:2000])
    headers, row = table["headers"], table["data"][0]
    assert row[headers.index("model")] == "toy-lstm"
    assert row[headers.index("perplexity")] == pytest.approx(round(expected.perplexity, 2))
    assert row[headers.index("bits per byte")] == pytest.approx(round(expected.bits_per_byte, 3))


# ----------------------------------------------------------------------------- the page (headless Chromium)


def test_every_tab_in_a_real_browser(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"needs Chromium at {CHROMIUM}: apt-get install chromium (or set LMCORE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = Path(os.environ.get("LMCORE_E2E_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {shots}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            sync_api.expect.set_options(timeout=30_000)  # assertions wait as long as actions (slow shared CPUs)
            page.goto(app_url)
            expect = sync_api.expect

            # 1. Training monitor: the runs table and curves of the two tiny runs.
            expect(page.get_by_role("tab", name="Training monitor")).to_be_visible()
            expect(page.get_by_text("2 run(s) · metrics read from metrics.jsonl")).to_be_visible()
            expect(page.locator("#runs-table")).to_contain_text("toy-gpt")
            expect(page.locator("#runs-table")).to_contain_text("finished")
            expect(page.get_by_text("Train a small model from this page (off in Space mode)")).to_be_visible()
            page.screenshot(path=shots / "1-training-monitor.png", full_page=True)

            # 2. Cross-domain: no shipped results here (said so); score a pasted text now.
            page.get_by_role("tab", name="Cross-domain perplexity").click()
            expect(page.get_by_text("Cross-domain results: not available yet").first).to_be_visible()
            page.get_by_label("Text", exact=True).fill("the cat sees a dog .\na dog likes the ball .")
            page.get_by_role("button", name="Score the text").click()
            expect(page.get_by_text("Scored 43 characters with 2 model(s).")).to_be_visible()
            expect(page.locator("#score-table")).to_contain_text("toy-lstm")
            page.screenshot(path=shots / "2-cross-domain.png", full_page=True)

            # 3. Prompt comparison: an empty prompt is refused; a generation streams into every card.
            page.get_by_role("tab", name="Prompt comparison").click()
            page.get_by_label("Prompt").fill("")
            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_text("The prompt is empty")).to_be_visible()
            page.get_by_label("Prompt").fill("a dog likes")
            page.get_by_label("Colour tokens by probability").check()
            page.get_by_role("button", name="Generate").click()
            expect(page.locator("#generation-output .lm-state-done")).to_have_count(2)
            expect(page.locator("#generation-output .lm-token").first).to_be_visible()
            assert page.locator('#generation-output [data-model="toy-lstm"] .lm-text').inner_text().startswith("a dog likes")
            page.screenshot(path=shots / "3-prompt-comparison.png", full_page=True)

            # 4. PubMedQA: a test question shows its gold label; base and fine-tuned answer side by side.
            page.get_by_role("tab", name="PubMedQA Q&A").click()
            if os.environ.get("LMCORE_DATA_DIR"):
                expect(page.get_by_text("500 test questions of PubMedQA")).to_be_visible()
                page.get_by_label("A test question").click()
                page.keyboard.press("ArrowDown")
                page.keyboard.press("Enter")
                expect(page.get_by_label("Question", exact=True)).not_to_have_value("")
                page.get_by_role("button", name="Answer").click()
                expect(page.get_by_text("Gold answer:")).to_be_visible()
                expect(page.locator("#pubmedqa-answers .lm-state-done")).to_have_count(2)
            page.get_by_label("Question", exact=True).fill("Does aspirin reduce the risk of stroke?")
            page.get_by_label("Context (the abstract; blank lines separate sections)").fill(
                "We followed 2,000 patients for five years.\n\nStrokes were fewer in the aspirin group.")
            page.get_by_role("button", name="Answer").click()
            expect(page.get_by_text("Gold answer:")).to_be_hidden()  # a typed question has no gold label
            expect(page.locator("#qa-status")).to_have_text("Done.")
            expect(page.locator("#pubmedqa-answers .lm-state-done")).to_have_count(2)
            expect(page.get_by_text("Answers ").first).to_be_visible()  # the verdict line under each model
            page.screenshot(path=shots / "4-pubmedqa.png", full_page=True)

            # 5. About: every model and the commands.
            page.get_by_role("tab", name="About").click()
            expect(page.get_by_text("Reproduce every result")).to_be_visible()
            expect(page.get_by_text("python training/train_lm.py --model lstm --preset tiny").first).to_be_visible()
            page.screenshot(path=shots / "5-about.png", full_page=True)
        finally:
            browser.close()
    assert sorted(path.name for path in shots.glob("*.png"))[:5] == [
        "1-training-monitor.png", "2-cross-domain.png", "3-prompt-comparison.png", "4-pubmedqa.png", "5-about.png"]

"""Drive the app in Debian's Chromium through Playwright: generate, watch cells and NFE, heatmap, replay,
Stop on a long run, and the escaping of a prompt with markup. Saves screenshots (SCREENSHOT_DIR)."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from app_server import launched
from PIL import Image
from tiny_checkpoint import write_tiny_checkpoint

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).resolve().parent.parent / "screenshots"))
EVIL = 'Hi <b id=x>broken</b> & "quotes"'


def never_stop(folder: Path) -> None:
    """Zero the stop tokens' rows of lm_head: their logit becomes 0, far below the top logits of this random
    model, so that a long run cannot end by itself before the test presses Stop."""
    import json

    from safetensors.torch import load_file, save_file

    from pangu_demo.tokenizer import PanguTokenizer

    shard = folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]["lm_head.weight"]
    tensors = load_file(shard)
    for token in PanguTokenizer.from_pretrained(folder).stop_ids:
        tensors["lm_head.weight"][token] = 0
    save_file(tensors, str(shard), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    # A little larger than the default tiny model so that a 1024-token run lasts long enough to be stopped.
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_browser"), hidden=128, layers=4, intermediate=256,
                                   context=2048, peak=8.0)
    never_stop(folder)
    with launched(str(folder)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def nfe(page) -> int:
    return int(page.locator(".pg-stats").get_attribute("data-nfe") or 0)


def status(page) -> str:
    return page.locator(".pg-status").inner_text()


def set_number(page, elem_id: str, value: int) -> None:
    """Type a slider's value and wait until the slider holds it, so that a click on Generate sends it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.locator(f"#{elem_id} input[type=number]")
    for _ in range(5):
        box.fill(str(value))
        box.press("Enter")
        held = "([id, v]) => document.querySelector(`#${id} input[type=range]`)?.value === v"
        try:  # the track follows the component's value
            page.wait_for_function(held, arg=[elem_id, str(value)], timeout=2_000)
            page.wait_for_timeout(300)  # and still holds it a moment on (a mounting slider may take its own back)
            if page.evaluate(held, [elem_id, str(value)]):
                return
        except PlaywrightTimeout:
            # A value typed while the slider mounts (its accordion just opened) gives way to the initial one.
            continue
    raise AssertionError(f"#{elem_id} did not take the value {value}")


def send(page, text: str) -> None:
    # Blank the status first: until the new run's first update arrives it still reads the last run's "finished",
    # and wait_finished would return at once.
    page.evaluate("document.querySelector('.pg-status') && (document.querySelector('.pg-status').textContent = '')")
    page.fill("#pg-prompt textarea", text)
    page.click("#pg-generate")


def wait_finished(page, timeout: float = 120_000, pattern: str = "finished|reached|stopped") -> None:
    page.wait_for_function("p => { const s = document.querySelector('.pg-status');"
                           " return s && new RegExp(p).test(s.textContent) }", arg=pattern, timeout=timeout)


def assert_tokens_take_their_cells_colour(page) -> None:
    """Token text shows in its cell's contrasting colour (white on dark steps), not the page's text colour."""
    colours = page.locator("#pg-grid .pg-cell.pg-done").evaluate_all(
        "cells => cells.map(c => [getComputedStyle(c).color, getComputedStyle(c.querySelector('.pg-tok')).color])")
    assert colours and all(cell == tok for cell, tok in colours), colours


def test_generate_replay_stop_and_escaping(browser, app_url):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    failed = []  # the page's own requests answered with an error (a load event once got a 500 on every visit)
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.goto(app_url)
    page.wait_for_selector("#pg-prompt textarea")
    page.wait_for_timeout(1500)  # the load events
    assert failed == []
    page.screenshot(path=str(SHOTS / "00-start.png"), full_page=True)
    # Short replies (this model never stops by itself), so that the chat's turns stay within its context.
    page.click("#pg-settings")
    set_number(page, "pg-max-new", 256)
    # A value typed beyond a slider's end shows as the end the run will take (the box kept 1.5 while 1 was sent).
    box = page.locator("#pg-threshold input[type=number]")
    box.fill("1.5")
    box.press("Enter")
    page.wait_for_function("() => document.querySelector('#pg-threshold input[type=number]').value === '1'",
                           timeout=5_000)
    set_number(page, "pg-threshold", 0.9)
    box = page.locator("#pg-max-new input[type=number]")  # ... and one between its steps, the step it will take
    box.fill("40")
    box.press("Enter")
    page.wait_for_function("() => document.querySelector('#pg-max-new input[type=number]').value === '32'",
                           timeout=5_000)
    set_number(page, "pg-max-new", 256)

    # The example buttons show their whole labels; a click puts the whole prompt in the textbox at once, so
    # Generate pressed right after it sends that prompt (on a fresh server it once went out empty).
    from pangu_demo.ui import GENERAL_EXAMPLES as EXAMPLES  # this host's model is not the teaching one

    assert page.locator("#pg-examples-teaching").is_hidden()
    buttons = page.locator("#pg-examples-general button.pg-example")
    assert buttons.all_inner_texts() == [label for label, _ in EXAMPLES]
    buttons.first.click()
    page.click("#pg-generate")
    page.wait_for_function("() => /finished|reached/.test(document.querySelector('.pg-status').textContent)"
                           " || document.querySelector('.pg-notice').textContent.trim() !== ''", timeout=120_000)
    assert page.locator(".pg-notice").inner_text().strip() == ""
    assert page.locator("#pg-chat").get_by_text(EXAMPLES[0][1]).count() >= 1
    buttons.last.click()
    page.wait_for_function("t => document.querySelector('#pg-prompt textarea').value === t", arg=EXAMPLES[-1][1])

    # A generation: committed cells and a non-zero NFE appear while it runs; the heatmap renders. The grid's
    # how-to, opened before, stays open through the run's frames, each of which replaces the grid.
    page.click("#pg-grid details.pg-howto > summary")
    send(page, EVIL)
    page.wait_for_function("() => +(document.querySelector('.pg-stats')?.dataset.nfe || 0) > 0", timeout=60_000)
    page.wait_for_selector("#pg-grid .pg-cell.pg-done")
    wait_finished(page)
    assert page.eval_on_selector("#pg-grid details.pg-howto", "d => d.open")
    page.click("#pg-grid details.pg-howto > summary")
    assert page.locator("#pg-grid .pg-cells .pg-cell").count() == 32
    assert_tokens_take_their_cells_colour(page)
    page.wait_for_selector("#pg-heatmap .js-plotly-plot .main-svg", timeout=30_000)
    assert page.locator("#pg-heatmap .js-plotly-plot .hm, #pg-heatmap .js-plotly-plot .heatmaplayer").count() > 0
    total = nfe(page)
    assert total > 1
    # This random model is rarely sure: tokens committed below the threshold are marked, as many as the stats count.
    below = int(page.locator('[data-stat="below threshold"]').inner_text().split()[0])
    assert below > 0 and page.locator("#pg-grid .pg-below").count() == below
    # No notice, no box: the empty notice takes no room in the column.
    assert page.locator("#pg-notice").is_hidden()
    page.fill("#pg-prompt textarea", "   ")
    page.click("#pg-generate")
    page.wait_for_selector("#pg-notice", state="visible")
    assert "Type a message first" in page.locator("#pg-notice").inner_text()

    # The prompt shows as typed: no element from its markup exists, the literal text is there.
    assert page.locator("#x").count() == 0
    assert page.locator("#pg-chat").get_by_text("<b id=x>broken</b>", exact=False).count() >= 1
    page.screenshot(path=str(SHOTS / "01-after-run.png"), full_page=True)

    # Replay: move the slider back; the stats and grid show that forward.
    set_number(page, "pg-replay", 3)
    page.wait_for_function("() => /forward 3 of/.test(document.querySelector('.pg-status').textContent)",
                           timeout=30_000)
    assert nfe(page) == 3
    # After 3 forwards no cell of any block can have been committed later than its block's step 2.
    steps_shown = [int(v) for v in page.locator("#pg-grid .pg-cell.pg-done").evaluate_all(
        "cells => cells.map(c => c.dataset.step)")]
    assert steps_shown and max(steps_shown) <= 2
    page.screenshot(path=str(SHOTS / "02-replay-step3.png"), full_page=True)
    page.click("#pg-play")
    page.wait_for_function("() => +document.querySelector('.pg-stats').dataset.nfe > 3", timeout=30_000)
    page.click("#pg-play")  # pause

    # Stop on a long run: it ends early, keeps what was decoded and the app is ready again.
    # Controls that do not apply are hidden: AR has no algorithm or threshold; entropy has no threshold.
    page.get_by_label("Autoregressive (AR)").check()
    page.locator("#pg-threshold").wait_for(state="hidden")
    assert page.locator("#pg-algorithm").is_hidden()
    page.get_by_label("Block diffusion").check()
    page.locator("#pg-threshold").wait_for(state="visible")
    page.get_by_label("Coding").check()
    page.locator("#pg-threshold").wait_for(state="hidden")
    assert page.locator("#pg-max-new input[type=range]").get_attribute("max") == "2016"  # context less a block
    set_number(page, "pg-max-new", 1024)
    send(page, "Tell me a long story.")
    page.wait_for_function("() => +(document.querySelector('.pg-stats')?.dataset.nfe || 0) > 5 &&"
                           " /decoding/.test(document.querySelector('.pg-status').textContent)", timeout=60_000)
    page.click("#pg-stop")
    wait_finished(page, timeout=30_000)
    assert "stopped by you" in status(page)
    stopped_at = nfe(page)
    assert 0 < stopped_at < 1024  # 32 small blocks: a full run would need 1024 forwards
    page.screenshot(path=str(SHOTS / "03-stopped.png"), full_page=True)
    assert page.locator("#pg-generate").is_enabled()
    set_number(page, "pg-max-new", 32)
    send(page, "And now a short one?")
    wait_finished(page, pattern="finished|reached")  # the previous run's status was "stopped by you"
    assert nfe(page) > 0
    page.get_by_text("And now a short one?").wait_for()
    assert page.locator("#pg-chat .message-row, #pg-chat [data-testid='user']").count() >= 3

    # Escape stops a run as Stop does.
    set_number(page, "pg-max-new", 1024)
    send(page, "Tell me another long story.")
    page.wait_for_function("() => +(document.querySelector('.pg-stats')?.dataset.nfe || 0) > 5 &&"
                           " /decoding/.test(document.querySelector('.pg-status').textContent)", timeout=60_000)
    page.keyboard.press("Escape")
    wait_finished(page, timeout=30_000)
    assert "stopped by you" in status(page) and nfe(page) < 1024
    set_number(page, "pg-max-new", 32)

    # Slow-motion replay (the app's default; this server starts with it off): once the run is over, the grid
    # plays it again from the first forward and stops on the finished block.
    page.locator("#pg-slow-replay input").check()
    send(page, "One more.")
    wait_finished(page, pattern="replay: forward 1 of")
    wait_finished(page, pattern="^(finished|reached)")  # the replay's own status mentions "the finished reply"
    page.wait_for_function("() => document.querySelector('#pg-play').textContent.includes('Play')", timeout=10_000)
    page.close()


def test_dark_mode_screenshot(browser, app_url):
    """Not an assertion on taste: a screenshot of the dark theme after a run, for a human to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
    page.goto(app_url + "?__theme=dark")
    page.wait_for_selector("#pg-prompt textarea")
    page.click("#pg-settings")
    set_number(page, "pg-max-new", 96)
    send(page, "Quote Shakespeare on love.")
    wait_finished(page)
    page.wait_for_selector("#pg-heatmap .js-plotly-plot .main-svg", timeout=30_000)
    assert page.locator("#pg-grid .pg-cells .pg-cell").count() == 32
    assert_tokens_take_their_cells_colour(page)
    page.screenshot(path=str(SHOTS / "04-dark.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_no_serious_accessibility_violations(browser, app_url, theme):
    """axe-core over the whole page after a run, its AR comparison and the whole-reply view, with every accordion
    open: no violation that axe rates serious or critical (text contrast, unnamed or nested controls, ...)."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright", reason="pip install axe-playwright-python")
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme=theme)
    page.goto(app_url + ("?__theme=dark" if theme == "dark" else ""))
    page.wait_for_selector("#pg-prompt textarea")
    choose_embedded(page)  # its replies open with a thinking trace: the chat shows a thought panel
    page.click("#pg-settings")
    send(page, "Ann has 12 pens and buys 7 more. How many pens does she have?")
    wait_finished(page)
    page.wait_for_selector("#pg-chat [role=button]")
    page.click("#pg-compare")
    page.wait_for_function("() => /Speed-up over AR|Slower than AR/.test("
                           "document.querySelector('#pg-compare-out').textContent)", timeout=60_000)
    page.get_by_text("Whole reply: step", exact=True).click()
    page.click("#pg-how")
    page.wait_for_selector(".pg-att", state="visible")
    page.wait_for_selector("#pg-model-choice", state="visible")
    violations = axe.Axe().run(page).response["violations"]
    serious = [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]} {v['help']}"
               for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, "\n".join(serious)
    page.close()


def test_tab_reaches_every_control(browser, app_url):
    """Tab walks through the page's controls after a run; the chat thought's fold arrow, a nameless button
    inside the thought's title, is not a stop of its own."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("#pg-prompt textarea")
    choose_embedded(page)
    send(page, "Ann has 12 pens and buys 7 more. How many pens does she have?")
    wait_finished(page)
    page.wait_for_selector("#pg-chat [role=button]")  # the thought panel's title
    page.mouse.click(2, 2)
    stops = []
    for _ in range(120):
        page.keyboard.press("Tab")
        stops.append(page.evaluate("() => { const e = document.activeElement;"
                                   " return [e.closest('[id^=pg-]')?.id || '', e.tagName === 'BUTTON' &&"
                                   " e.parentElement.closest('[role=button]') !== null] }"))
    ids = {i for i, _ in stops}
    for control in ("pg-settings", "pg-prompt", "pg-generate", "pg-clear", "pg-think", "pg-replay", "pg-play",
                    "pg-compare", "pg-sweep", "pg-rules", "pg-trace", "pg-gif-btn", "pg-open", "pg-how", "pg-model"):
        assert control in ids, (control, sorted(ids))
    assert not [s for s in stops if s[1]], "a button inside another control took the focus"
    # The current block is one stop; its arrow keys walk the cells (8 to a row in this column: wide enough for a
    # word) and show each one's details.
    assert "pg-grid" in ids
    cols = page.eval_on_selector("#pg-grid .pg-cells", "g => getComputedStyle(g).gridTemplateColumns.split(' ').length")
    assert cols == 8
    # A cell holds a word of 7 characters at 9 px or more (at 16 to a row, "␣answer" came out at 5-7 px).
    assert page.locator("#pg-grid .pg-cells .pg-cell").first.bounding_box()["width"] >= 7 * 9 * 0.62 + 6
    page.focus("#pg-grid .pg-cells")
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "ArrowLeft"):
        page.keyboard.press(key)
    cell = page.locator("#pg-grid .pg-cell").nth(1 + cols)
    assert "pg-focus" in cell.get_attribute("class")
    assert page.locator(".pg-inspect").inner_text() == cell.get_attribute("title").replace("\n", " · ")
    page.keyboard.press("End")
    assert page.locator(".pg-inspect").inner_text().startswith("token ") and "position 31 of" in \
        page.locator(".pg-inspect").inner_text()
    # A clicked cell is where the arrow keys go on from (the focus ring once stayed on the first cell).
    page.locator("#pg-grid .pg-cells .pg-cell").nth(9).click()
    page.keyboard.press("ArrowRight")
    assert page.locator("#pg-grid .pg-cells .pg-focus").evaluate_all("cs => cs.map(c => c.dataset.pos)") == ["10"]
    assert "position 10 of" in page.locator(".pg-inspect").inner_text()
    page.close()


def test_a_link_opens_the_page_with_its_question_and_settings(browser, app_url):
    """A link fills the message box and the settings (it does not run them); "Link to this question" writes one
    that gives the same page back; a broken link says what it left out."""
    query = "?prompt=Ann+has+12+pens+%26+7+more%3F&think=off&algorithm=elastic&threshold=0.7&max_new_tokens=64"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url + query)
    page.wait_for_function("() => document.querySelector('#pg-prompt textarea')?.value.startsWith('Ann')")
    assert page.locator("#pg-prompt textarea").input_value() == "Ann has 12 pens & 7 more?"
    assert page.locator("#pg-think input:checked").get_attribute("value") == "off"
    assert page.locator(".pg-status").inner_text().startswith("ready")  # filled in, not run
    # The settings stay folded so that the question and Generate are on the first screen; the notice says.
    said = "The link set Algorithm elastic, Threshold 0.7 and Max new tokens 64."
    page.locator("#pg-notice").get_by_text(said).wait_for()
    page.get_by_test_id("toast-text").get_by_text(said).wait_for()  # in sight too, where the notice may not be
    assert page.locator("#pg-generate").bounding_box()["y"] < 1000
    page.click("#pg-settings")
    assert page.locator("#pg-threshold input[type=number]").input_value() == "0.7"
    assert page.locator("#pg-max-new input[type=number]").input_value() == "64"
    assert page.locator("#pg-algorithm input").input_value() == "elastic"
    page.wait_for_timeout(1000)  # and they stay (a mounting slider could take its starting value back)
    assert page.locator("#pg-threshold input[type=range]").input_value() == "0.7"
    page.click("#pg-generate")
    wait_finished(page)
    page.click("#pg-link-btn")
    page.wait_for_function("() => document.querySelector('#pg-link textarea')?.value.startsWith('http')")
    link = page.locator("#pg-link textarea").input_value()
    assert link.startswith(app_url.rstrip("/") + "/?prompt=Ann+has+12+pens+%26+7+more%3F&think=off&")
    assert "algorithm=elastic&threshold=0.7&" in link and "max_new_tokens=64" in link
    page.goto(app_url + "?threshold=3")
    page.locator("#pg-notice").get_by_text("This page's link was not taken whole.").wait_for()
    page.close()


def test_the_grid_steps_a_recorded_run_by_its_buttons_and_the_arrow_keys(browser, app_url):
    """◀ ▶ by the grid's caption and ← → anywhere the keys have no use of their own move the replay slider."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    send(page, "A farm has 72 cows and 45 sheep. How many animals are on the farm?")
    wait_finished(page)
    end = nfe(page)

    def shows(k: int) -> None:
        page.wait_for_function("k => document.querySelector('.pg-forward')?.textContent.startsWith(`Forward ${k}:`)",
                               arg=k, timeout=10_000)
        assert page.locator("#pg-replay input[type=range]").input_value() == str(k)

    page.click("#pg-grid .pg-stepper button[data-delta='-1']")
    shows(end - 1)
    page.keyboard.press("ArrowLeft")  # the focus is on the button: no use of its own for the key
    shows(end - 2)
    page.keyboard.press("ArrowRight")
    shows(end - 1)
    page.locator("#pg-prompt textarea").focus()
    page.keyboard.press("ArrowLeft")  # in the message box the key moves the caret, not the replay
    page.wait_for_timeout(1000)
    shows(end - 1)
    # The chat's retry button asks the question again, by the settings as they are now, in place of its answer.
    page.click("#pg-settings")
    page.get_by_label("Autoregressive (AR)").check()
    page.evaluate("document.querySelector('.pg-status').textContent = ''")
    page.locator("#pg-chat button[aria-label='Retry']").click()
    wait_finished(page)
    assert page.locator("#pg-chat [data-testid=user]").count() == 1
    assert page.locator(".pg-stats").get_attribute("data-nfe") == page.locator(".pg-stats").evaluate(
        "s => s.textContent.match(/TOKENS\\s*(\\d+)/i)?.[1]")  # AR: a forward per token
    page.close()


def test_large_text_enlarges_the_grid_and_the_stats_and_lasts_across_runs(browser, app_url):
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(app_url)
    size = "s => parseFloat(getComputedStyle(document.querySelector(s)).fontSize)"
    send(page, "Tom has 3 apples.")
    wait_finished(page)
    small = page.evaluate(size, ".pg-forward"), page.evaluate(size, ".pg-stat-v")
    page.locator("#pg-large input").check()
    page.wait_for_function(f"() => ({size})('.pg-forward') >= 1.4 * {small[0]}", timeout=5_000)
    assert page.evaluate(size, ".pg-stat-v") >= 1.4 * small[1]
    send(page, "Ann has 12 pens and buys 7 more. How many pens does she have?")  # new HTML in the same boxes
    wait_finished(page)
    assert page.evaluate(size, ".pg-forward") >= 1.4 * small[0]
    page.locator("#pg-large input").uncheck()
    page.wait_for_function(f"() => ({size})('.pg-forward') === {small[0]}", timeout=5_000)
    page.goto(app_url + "?prompt=Hi&large=1")  # a lecture's link turns it on
    page.wait_for_function("() => document.querySelector('#pg-grid')?.classList.contains('pg-large')",
                           timeout=10_000)
    page.close()


def test_the_slow_motion_replay_is_off_for_reduced_motion(browser):
    """The replay plays the grid by itself after a fast run: on by default, off where the system asks for less
    motion."""
    from pangu_demo.loading import EMBEDDED_MODEL

    with launched(str(EMBEDDED_MODEL), slow_replay=True) as url:
        for motion, replay in (("reduce", False), ("no-preference", True)):
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, reduced_motion=motion)
            page.goto(url)
            page.click("#pg-settings")
            box = page.locator("#pg-slow-replay input[type=checkbox]")
            box.wait_for()
            page.wait_for_timeout(500)  # the page's load events have run
            assert box.is_checked() is replay, motion
            page.close()


def test_teaching_note_examples_and_max_new_tokens_follow_the_model(browser, app_url):
    """The note about the embedded teaching model and its examples show only while that model is selected, Max
    new tokens goes up to the selected model's context, and the chat so far stays."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("#pg-prompt textarea")
    # Checked by its words, not its id, so that the check holds for any way of showing the note.
    note = page.get_by_text("small teaching model trained by this project")
    assert note.count() == 0 or not note.first.is_visible()
    page.click("#pg-settings")
    set_number(page, "pg-max-new", 32)
    send(page, "Still here after the switch?")
    wait_finished(page)
    choose_embedded(page)
    assert "small teaching model" in page.locator("#pg-teaching").inner_text()
    page.locator("#pg-examples-teaching").wait_for(state="visible")
    assert page.locator("#pg-examples-general").is_hidden()
    page.wait_for_function("() => document.querySelector('#pg-max-new input[type=range]')?.max === '992'",
                           timeout=10_000)  # the teaching model's context less a block (the host's: 2048)
    assert page.locator("#pg-max-new input[type=number]").input_value() == "256"  # its default
    assert page.locator("#pg-chat").get_by_text("Still here after the switch?").count() == 1
    page.close()


def test_a_phone_opens_on_the_chat_with_the_embedded_model(browser):
    """With the embedded model as the app's default the note is on the page from the start: on a phone it is
    folded at load, so the message field is on the first screen."""
    from pangu_demo.loading import EMBEDDED_MODEL

    with launched(str(EMBEDDED_MODEL)) as url:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(url)
        page.wait_for_selector("#pg-prompt textarea")
        page.wait_for_function("() => document.querySelector('#pg-teaching details')?.open === false",
                               timeout=10_000)
        box = page.locator("#pg-prompt textarea").bounding_box()  # the field itself, not only its label
        assert box["y"] + box["height"] <= 844, box
        # The reply fits in the chat: the open trace's title (its text scrolls in two lines) and the answer.
        send(page, "Ann has 12 pens and buys 7 more. How many pens does she have?")
        wait_finished(page)
        chat = page.locator("#pg-chat").bounding_box()
        thought = page.locator("#pg-chat .thought-group .title").last.bounding_box()
        answer = page.locator("#pg-chat [data-testid=bot]").last.bounding_box()
        assert chat["y"] <= thought["y"] and answer["y"] + answer["height"] <= chat["y"] + chat["height"], \
            (chat, thought, answer)
        # A phone shows no hover titles: a tapped cell shows its details under the grid.
        cell = page.locator("#pg-grid .pg-cell.pg-done").nth(3)
        cell.click()
        expected = cell.get_attribute("title").replace("\n", " · ")
        assert expected.startswith("token ") and page.locator(".pg-inspect").inner_text() == expected
        page.close()


def choose_embedded(page) -> None:
    """Select the embedded teaching model in the Model panel and wait for its note."""
    from pangu_demo.models import EMBEDDED_LABEL

    page.click("#pg-model")
    page.click("#pg-model-choice input")
    page.get_by_role("option", name=EMBEDDED_LABEL).click()
    page.wait_for_selector("#pg-teaching", state="visible", timeout=60_000)


@pytest.mark.parametrize("width, height, folded", [(390, 844, True), (1366, 768, True), (1400, 1000, True),
                                                   (1600, 1200, False)])
def test_the_teaching_note_folds_on_a_phone(browser, app_url, width, height, folded):
    """On a phone the note shows its first sentence and folds the rest (unfolded it filled the first screen
    and pushed the chat below it); a tap unfolds it. On a desktop it is open."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(app_url)
    page.wait_for_selector("#pg-prompt textarea")
    choose_embedded(page)
    summary = page.locator("#pg-teaching summary")
    rest = page.get_by_text("press Clear before a new question", exact=False)
    assert "small teaching model trained by this project" in summary.inner_text()
    if folded:
        page.wait_for_function("() => document.querySelector('#pg-teaching details')?.open === false",
                               timeout=10_000)
    else:
        page.wait_for_timeout(500)  # time for a wrong fold to run, which runs after the note appears
    assert rest.is_visible() is not folded
    if folded:
        assert page.locator("#pg-teaching").bounding_box()["height"] < 120
        box = page.locator("#pg-prompt textarea").bounding_box()
        assert box["y"] + box["height"] <= height  # the message box is on the first screen
        summary.click()
        rest.wait_for(state="visible", timeout=5_000)
    page.close()


def test_compare_with_ar_trace_and_gif(browser, app_url, tmp_path):
    """After a block-diffusion run, "Compare with AR" decodes the same prompt by AR and shows both speeds;
    the recorded run stays on screen and downloads as a trace and a GIF."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("#pg-prompt textarea")
    page.click("#pg-settings")
    set_number(page, "pg-max-new", 256)  # the GIF keeps every forward up to animation.MAX_FRAMES
    send(page, "Compare me.")
    wait_finished(page)
    before = nfe(page)
    page.click("#pg-compare")
    page.wait_for_function("() => /Speed-up over AR|Slower than AR/.test("
                           "document.querySelector('#pg-compare-out').textContent)",
                           timeout=60_000)
    text = page.locator("#pg-compare-out").inner_text()
    assert "This run's settings (block diffusion)" in text and "The same prompt by AR" in text
    assert re.search(r"by AR: (\d+) tokens in \1 forwards", text), text  # AR: one token per forward
    assert nfe(page) == before
    # Both runs as lines: block diffusion and AR, against forwards and against seconds.
    page.wait_for_selector("#pg-race .js-plotly-plot .main-svg", timeout=30_000)
    assert page.locator("#pg-race .js-plotly-plot .scatterlayer .trace").count() == 4

    # The run downloads as a trace: one record per forward, the same NFE as the stats.
    with page.expect_download(timeout=30_000) as download:
        page.click("#pg-trace")
    trace = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert trace["version"] == 2 and trace["result"]["nfe"] == before == len(trace["steps"])

    # Opened in another page, the file alone brings back the chat and the run, ready to replay.
    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.goto(app_url)
    saved = tmp_path / "run.json"  # the picker takes .json files only
    download.value.save_as(saved)
    other.locator("#pg-open-row input[type=file]").set_input_files(saved)
    other.wait_for_function("() => /Opened a trace/.test(document.querySelector('#pg-notice').textContent)",
                            timeout=30_000)
    assert other.locator("#pg-chat").get_by_text("Compare me.").count() == 1
    other.wait_for_function(f"() => document.querySelector('.pg-stats').dataset.nfe === '{before}'", timeout=30_000)
    assert other.locator("#pg-replay").is_visible()
    other.click("#pg-compare")  # this page's model recorded it: its prompt is decoded again by AR
    other.wait_for_function("() => /The same prompt by AR/.test(document.querySelector('#pg-compare-out')"
                            ".textContent)", timeout=60_000)
    # A file larger than any trace is refused before the server stores it, with the limit in words.
    from pangu_demo.trace import MAX_BYTES

    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (MAX_BYTES + 1))
    other.locator("#pg-open-row input[type=file]").set_input_files(huge)
    other.get_by_text("exceed the maximum allowed size of 20.0 Mb").wait_for(timeout=30_000)
    assert other.locator("#pg-chat").get_by_text("Compare me.").count() == 1  # the opened run stays
    other.close()

    # ... and as a GIF shown on the page: one frame per forward.
    page.click("#pg-gif-btn")
    image = page.locator("#pg-gif img")
    image.wait_for(timeout=30_000)
    gif = Image.open(io.BytesIO(page.request.get(image.get_attribute("src")).body()))
    assert gif.format == "GIF" and gif.n_frames == before

    # The same prompt at other thresholds: a row and a line for each, this run's among them.
    page.click("#pg-sweep")
    page.wait_for_function("() => document.querySelectorAll('#pg-compare-out table.pg-sweep tr').length === 6",
                           timeout=60_000)
    assert page.locator("#pg-compare-out tr.pg-this-run").inner_text().startswith("0.9 · this run")
    page.wait_for_function("() => document.querySelectorAll('#pg-race .scatterlayer .trace').length === 10",
                           timeout=30_000)
    # On a phone the table fits its width, each answer on a line of its own under its figures.
    page.set_viewport_size({"width": 390, "height": 844})
    fits, answer_below = page.evaluate("""() => {
        const table = document.querySelector('#pg-compare-out table.pg-sweep');
        const cells = table.querySelectorAll('tr.pg-this-run td');
        return [table.scrollWidth <= table.parentElement.clientWidth,
                cells[4].getBoundingClientRect().top >= cells[0].getBoundingClientRect().bottom];
    }""")
    assert fits and answer_below
    page.set_viewport_size({"width": 1400, "height": 1000})

    # ... and by every rule and AR.
    page.click("#pg-rules")
    page.wait_for_function("() => document.querySelector('#pg-compare-out th')?.textContent === 'rule'"
                           " && document.querySelectorAll('#pg-compare-out table.pg-sweep tr').length === 7",
                           timeout=60_000)
    assert page.locator("#pg-compare-out tr.pg-this-run").inner_text().startswith("confidence_threshold 0.9")
    page.wait_for_function("() => document.querySelectorAll('#pg-race .scatterlayer .trace').length === 12",
                           timeout=30_000)

    send(page, "Again.")  # a new run clears the stale comparison and GIF
    page.wait_for_function("() => document.querySelector('#pg-compare-out').textContent.trim() === ''",
                           timeout=30_000)
    page.locator("#pg-gif").wait_for(state="hidden", timeout=30_000)
    page.locator("#pg-race").wait_for(state="hidden", timeout=30_000)
    page.close()


def test_the_chats_trash_icon_forgets_the_conversation(browser, app_url):
    """The chat's own trash icon clears like Clear: the next question goes out without the earlier turns."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("#pg-prompt textarea")
    send(page, "First question.")
    wait_finished(page)
    assert page.locator("#pg-chat").get_by_text("First question.").count() == 1
    # The label and the icon sit above the messages' scrolling box: over it, they covered a message's first line.
    over = page.evaluate("""() => { const c = document.querySelector('#pg-chat');
        const messages = c.querySelector('[aria-label="chatbot conversation"]').getBoundingClientRect();
        return [...c.querySelectorAll('label[data-testid="block-label"], button[aria-label*="clear" i]')]
            .map(e => e.getBoundingClientRect()).filter(r => r.height && r.bottom > messages.top + 1).length; }""")
    assert over == 0
    page.click("#pg-chat button[aria-label*='clear' i], #pg-chat button[title*='clear' i]")
    page.wait_for_function("() => !document.querySelector('#pg-chat').textContent.includes('First question.')",
                           timeout=30_000)
    send(page, "Second question.")
    wait_finished(page)
    assert page.locator("#pg-chat").get_by_text("Second question.").count() == 1
    assert page.locator("#pg-chat").get_by_text("First question.").count() == 0  # not brought back
    page.close()


def test_phone_layout_keeps_the_grid_near_generate_and_aligns_the_sampling_sliders(browser, app_url):
    """On a phone the examples scroll sideways in one line (seven wrapped lines pushed the grid far below
    Generate), and sending scrolls to the run; on a desktop the sampling sliders' tracks share one baseline
    whatever their labels' lengths."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(app_url)
    page.wait_for_selector("#pg-prompt textarea")
    row = page.locator("#pg-examples-general")
    one_button = row.locator(".pg-example").first.bounding_box()["height"]
    assert row.bounding_box()["height"] < 2 * one_button
    assert row.evaluate("r => r.scrollWidth > r.clientWidth")
    gap = page.locator("#pg-stats").bounding_box()["y"] - page.locator("#pg-generate").bounding_box()["y"]
    assert gap < 450, gap
    # Sending scrolls to the run (stats, then the grid), which is below the message box on a phone.
    send(page, "Tom has 3 apples.")
    page.wait_for_function("() => Math.abs(document.querySelector('#pg-stats').getBoundingClientRect().top) < 40",
                           timeout=5_000)
    page.close()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.click("#pg-settings")
    # The accordion opens with an animation: wait until the tracks settle on one line (they never do without
    # the layout rule).
    page.wait_for_function("""() => {
        const ys = [...document.querySelectorAll('#pg-sampling input[type=range]')]
            .map(t => { const r = t.getBoundingClientRect(); return r.top + r.height / 2; });
        return ys.length === 3 && Math.max(...ys) - Math.min(...ys) <= 2; }""", timeout=10_000)
    page.close()

"""The page's handlers called directly (no server, no browser) on the tiny random checkpoint."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from pangu_demo import controls, models, ui
from pangu_demo.loading import LoadedModel

DEFAULTS = ("diffusion", "confidence_threshold", 0.9, 1, 0.0, 1.0, 0, 64, 0)  # the settings controls, in order


@pytest.fixture
def app(tiny_model: LoadedModel, tiny_checkpoint) -> ui.DemoApp:
    app = ui.DemoApp(models.ModelRegistry(str(tiny_checkpoint), preloaded=tiny_model))
    app.build()
    return app


def request(name: str = "s1") -> SimpleNamespace:
    return SimpleNamespace(session_hash=name)


def generate(app: ui.DemoApp, sess: ui.Session, text: str = "Tom has 3 apples.", settings: tuple = DEFAULTS):
    return app.generate(text, True, "", *settings, app.models.default, ui.VIEWS[0], sess, request())


def test_a_run_files_its_turn_in_the_session(app: ui.DemoApp) -> None:
    sess = ui.Session()
    updates = list(generate(app, sess))
    assert len(sess.history) == 1 and sess.history[0][0] == "Tom has 3 apples."
    assert updates[-1][app.session] is sess and sess.recording is not None
    assert updates[-1][app.generate_btn].interactive is True
    # A reply cut off at Max new tokens (this random model never stops by itself) says so, in the chat as sent
    # and as kept for replay.
    cut = sess.recording.result.stop_reason == "length"
    for chat in (updates[-1][app.chatbot], sess.chat):
        assert chat[-1].get("metadata", {}).get("title", "").startswith("Reached max new tokens") == cut
    assert cut


def test_the_chats_retry_asks_the_last_question_again_by_the_settings_now(app: ui.DemoApp) -> None:
    sess = ui.Session()
    list(generate(app, sess, text="First?"))
    list(generate(app, sess, text="Second?"))
    first_turn = sess.chat[:sess.chat.index(next(m for m in sess.chat if m["content"] == "Second?"))]
    ar = ("ar", *DEFAULTS[1:])
    updates = list(app.ask_again(True, "", *ar, app.models.default, ui.VIEWS[0], sess, request()))
    # The second answer is replaced, not added to: two turns, the first as it was, and the new run decoded by AR.
    assert [q for q, _ in sess.history] == ["First?", "Second?"]
    assert sess.chat[:len(first_turn)] == first_turn
    assert [m["content"] for m in sess.chat if m["role"] == "user"] == ["First?", "Second?"]
    assert sess.recording.config.mode == "ar" and updates[-1][app.chatbot] == sess.chat
    # Nothing to ask again: said, and nothing changes.
    empty = ui.Session()
    said = list(app.ask_again(True, "", *DEFAULTS, app.models.default, ui.VIEWS[0], empty, request()))
    assert "no question to ask again" in said[-1][app.notice] and empty.chat == [] and empty.history == []


def test_clear_during_a_run_forgets_the_turn_for_good(app: ui.DemoApp) -> None:
    sess = ui.Session(history=[("earlier", "reply")], chat=[{"role": "user", "content": "earlier"}])
    run = generate(app, sess, settings=DEFAULTS[:7] + (256, 0))
    next(run)  # the run has started
    next(run)  # and drawn a frame
    cleared = app.clear(sess, request())
    assert cleared[app.chatbot] == [] and cleared[app.session] is sess
    rest = list(run)
    # The stopped run neither redraws the chat nor puts its turn (or the earlier one) back.
    assert rest and all(app.chatbot not in u and app.session not in u for u in rest)
    assert rest[-1][app.generate_btn].interactive is True
    assert sess.history == [] and sess.chat == [] and sess.recording is None and not sess.running


def test_a_question_cleared_while_it_waited_in_the_queue_is_not_answered(app: ui.DemoApp, tmp_path: Path) -> None:
    """The page sends its count of Clear presses with each question; Clear counts on before a queued run starts."""
    sess = ui.Session()
    cleared = app.clear(sess, request())
    assert cleared[app.page_clears] == sess.clears == 1

    def ask(page_clears: int) -> list[dict]:
        return list(app.generate("Tom has 3 apples.", True, "", *DEFAULTS, app.models.default, ui.VIEWS[0], sess,
                                 request(), page_clears=page_clears))

    late = ask(0)  # asked before the Clear
    assert len(late) == 1 and app.chatbot not in late[0] and sess.history == [] and sess.recording is None
    assert ask(1)[-1][app.session] is sess and len(sess.history) == 1  # asked after it
    assert app.clear(None, request())[app.page_clears] == 1  # Clear before any question: a first one may wait too
    # Opening a trace forgets the conversation too, but is no Clear: the next question is answered.
    saved = tmp_path / "run.json"
    saved.write_text(ui.trace.dumps(sess.recording, sess.token_text, sess.mask_id, model="tiny"), encoding="utf-8")
    app.open_trace(str(saved), ui.VIEWS[0], sess)
    assert ask(1)[-1][app.session] is sess and len(sess.history) == 1


def test_clear_during_a_replay_stops_it_and_resets_the_play_button(app: ui.DemoApp) -> None:
    sess = ui.Session()
    list(generate(app, sess))
    playing, _, timer, button = app.toggle_play(False, 1, 5, sess)
    assert playing is True and timer.active is True and "Pause" in button.value
    cleared = app.clear(sess, request())
    assert cleared[app.playing] is False and cleared[app.timer].active is False
    assert "Play" in cleared[app.play_btn].value


def test_a_tick_after_pause_moves_nothing_and_play_works_again(app: ui.DemoApp) -> None:
    """Play's ticks never set `playing` again: one still in flight when Pause was pressed used to, and the next
    Play press then read as a Pause and did nothing."""
    sess = ui.Session()
    list(generate(app, sess))
    playing, start, _, _ = app.toggle_play(False, 1, 5, sess)
    k, *_, still, timer, _ = app.tick(start, 5, ui.VIEWS[0], sess, playing)
    assert k > start and still == gr.skip() and timer == gr.skip()  # moves on, and leaves `playing` as it is
    paused, *_ = app.toggle_play(True, k, 5, sess)
    late = app.tick(k, 5, ui.VIEWS[0], sess, paused)  # sent before the Pause reached the browser
    assert late[0] == gr.skip() and late[4] is False and late[5].active is False
    again, *_ = app.toggle_play(paused, k, 5, sess)
    assert again is True


@pytest.mark.parametrize(("seed", "words"), [(-1, "Seed must be from 0 to 9,007,199,254,740,991 here (got -1)."),
                                             (2**60, "Seed must be from 0 to 9,007,199,254,740,991 here (got 1,152"),
                                             (3.7, "Seed must be a whole number (got 3.7)"),
                                             (None, "Seed must be a number (got nothing: an empty box, or text)")])
def test_a_seed_the_box_cannot_hold_is_refused_by_name_and_the_chat_stays(app: ui.DemoApp, seed: object,
                                                                          words: str) -> None:
    # The Seed box has no minimum or maximum (Gradio would put error badges over the page): the handler checks it.
    sess = ui.Session(history=[("earlier", "reply")], chat=[{"role": "user", "content": "earlier"}])
    updates = list(generate(app, sess, settings=DEFAULTS[:8] + (seed,)))
    assert len(updates) == 1 and set(updates[0]) == {app.notice} and words in updates[0][app.notice]
    assert sess.history == [("earlier", "reply")] and sess.recording is None
    assert app.seed.minimum is None and app.seed.maximum is None and app.seed.precision is None  # 3.7 not rounded


def test_max_new_tokens_is_lowered_to_fit_the_context_with_a_note(app: ui.DemoApp, tiny_model: LoadedModel) -> None:
    sess = ui.Session()
    too_many = DEFAULTS[:7] + (1024, 0)  # the tiny model's context is 512
    first = next(generate(app, sess, settings=too_many))
    note = first[app.notice]
    assert "lowered from 1,024 to" in note
    lowered = int(note.split("lowered from 1,024 to ")[1].split(":")[0])
    assert lowered % 32 == 0 and 0 < lowered < tiny_model.context_length
    # The API is strict instead: it says what would fit.
    with pytest.raises(gr.Error, match=f"Lower max new tokens to {lowered}"):
        next(app.api_generate("Tom has 3 apples.", max_new_tokens=1024))


def test_a_failure_inside_the_run_gives_a_message_and_the_page_recovers(app: ui.DemoApp, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")
        yield

    monkeypatch.setattr(ui, "stream_frames", broken)
    sess = ui.Session()
    last = list(generate(app, sess))[-1]
    assert "Decoding failed: RuntimeError: out of memory" in last[app.notice]
    assert "ready:" in last[app.stats_box] and "decoding…" not in last[app.stats_box]
    assert last[app.generate_btn].interactive is True and last[app.stop_btn].interactive is False
    assert not sess.running and sess.history == []


def test_warnings_show_typed_markup_as_text(monkeypatch) -> None:
    shown = []
    monkeypatch.setattr(gr, "Warning", shown.append)
    ui.warn("Could not load <b id=x>bold</b><img src=x onerror=alert(1)>")
    assert "<b" not in shown[0] and "<img" not in shown[0] and "&lt;b id=x&gt;" in shown[0]


def test_a_typed_model_path_with_markup_is_warned_about_as_text(app: ui.DemoApp, monkeypatch) -> None:
    shown = []
    monkeypatch.setattr(gr, "Warning", shown.append)
    app.models.allow_custom = True
    _, info = app.load_custom("./<b id=x>missing</b>")
    assert shown and "<b id=x>" not in shown[0] and "&lt;b id=x&gt;" in shown[0]
    assert "<b id=x>" not in info
    # A folder that failed is not offered: every visitor sees the list (and would see every path anyone typed).
    assert app.models.labels() == [models.EMBEDDED_LABEL, app.models.default]


def test_visitors_models_never_push_the_hosts_model_out_of_the_cache(app: ui.DemoApp, tiny_checkpoint,
                                                                       tmp_path: Path) -> None:
    import shutil

    app.models.allow_custom = True
    for k in range(3):  # a cache of 2: each new one used to push out the least recently used, the host's too
        shutil.copytree(tiny_checkpoint, tmp_path / f"m{k}")
        app.models.add_custom(str(tmp_path / f"m{k}"))
    assert app.models.default in app.models._loaded and len(app.models._loaded) == 2


@pytest.mark.parametrize("history", ["abc", 5, [["only one"]], [[["x"], {"y": 1}]], [["q", "a", "b"]], {"q": "a"}])
def test_the_api_refuses_a_history_of_the_wrong_shape(app: ui.DemoApp, history: object) -> None:
    with pytest.raises(gr.Error, match=r"history must be a list of \[user message, answer\] pairs"):
        next(app.api_generate("Hi", history=history))


def test_the_api_takes_a_history_of_pairs(app: ui.DemoApp) -> None:
    pairs = [("Hi", "Hello!"), ("And you?", "Fine.")]
    assert controls.check_history([["Hi", "Hello!"], ("And you?", "Fine.")]) == pairs
    assert controls.check_history(None) == controls.check_history([]) == []
    last = list(app.api_generate("And then?", history=[["Hi", "Hello!"]], max_new_tokens=16, think="auto",
                                 system="Be brief."))[-1]
    assert last["done"]
    saved = json.loads(last["trace"])  # how it was asked, as the page's and the CLI's traces say it
    assert (saved["prompt"], saved["think"], saved["system"]) == ("And then?", "auto", "Be brief.")


@pytest.mark.parametrize(("kwargs", "message"), [({"model": "nope"}, "Unknown model 'nope'; this host offers: "),
                                                 ({"prompt": 12345}, "The message must be text"),
                                                 ({"prompt": ["Hi"]}, "The message must be text")])
def test_the_api_refuses_an_unknown_model_and_a_prompt_that_is_not_text(app: ui.DemoApp, kwargs: dict,
                                                                       message: str) -> None:
    with pytest.raises(gr.Error, match=message):
        next(app.api_generate(**({"prompt": "Hi"} | kwargs)))


def test_the_threshold_slider_spans_what_the_engine_accepts(app: ui.DemoApp) -> None:
    slider = app.threshold
    assert (slider.minimum, slider.maximum) == (0.0, 1.0)
    for end in (slider.minimum, slider.maximum):  # both ends run as shown, not clamped elsewhere
        assert controls.make_config(DEFAULTS[0], DEFAULTS[1], end, *DEFAULTS[3:]).threshold == end
    for outside in (slider.minimum - 0.01, slider.maximum + 0.01):
        with pytest.raises(ValueError, match="between 0 and 1"):
            controls.make_config(DEFAULTS[0], DEFAULTS[1], outside, *DEFAULTS[3:])


def test_every_preset_sets_controls_the_engine_accepts() -> None:
    for name, preset in controls.PRESETS.items():
        mode, algorithm, threshold, small_blocks, temperature, top_p = ui.apply_preset(name)
        # A preset without a threshold leaves the slider as it is (a skip update): keep the default.
        threshold = threshold if isinstance(threshold, float) else DEFAULTS[2]
        cfg = controls.make_config(mode, algorithm, threshold, small_blocks, temperature, top_p, *DEFAULTS[6:])
        assert (cfg.algorithm, cfg.num_small_blocks) == (preset["algorithm"], preset["num_small_blocks"])
        assert cfg.threshold == preset.get("threshold", DEFAULTS[2])
    assert ui.apply_preset("Custom") == (gr.skip(),) * 6  # Custom leaves every control as it is


def test_a_trace_names_the_model_not_the_menu_label(app: ui.DemoApp, tiny_model: LoadedModel) -> None:
    sess = ui.Session()
    list(generate(app, sess))
    path = app.trace_file(sess)  # what the download button gets after the run
    assert json.loads(Path(path).read_text(encoding="utf-8"))["model"] == tiny_model.name != sess.model_label


def test_make_a_gif_shows_the_recorded_run_one_frame_per_forward(app: ui.DemoApp, monkeypatch) -> None:
    warned = []
    monkeypatch.setattr(ui, "warn", warned.append)
    sess = ui.Session()
    assert isinstance(app.gif_file(5, sess), type(gr.skip())) and "Generate a reply first" in warned[0]
    sess.recording = ui.Recording()  # a run that failed before its result: nothing to draw
    assert isinstance(app.gif_file(5, sess), type(gr.skip())) and len(warned) == 2
    list(generate(app, sess))
    update = app.gif_file(10, sess)
    assert update.visible is True and update.value["path"].endswith(".gif")
    gif = Image.open(update.value["path"])
    assert gif.n_frames == len(sess.recording.steps) and gif.info["duration"] == 100
    # A run the drawing cannot take is said in a warning; the handler does not raise.
    monkeypatch.setattr(ui.animation, "recording_gif", lambda *a, **k: 1 / 0)
    assert isinstance(app.gif_file(10, sess), type(gr.skip()))
    assert warned[-1].startswith("This run could not be drawn as a GIF: ZeroDivisionError")


def test_an_opened_trace_fills_the_chat_grid_and_replay(app: ui.DemoApp, tiny_model: LoadedModel) -> None:
    sess = ui.Session()
    list(generate(app, sess, "Tom <b>has</b> 3 apples."))
    path = app.trace_file(sess)
    n = len(sess.recording.steps)
    expected = app.show_step(n, ui.VIEWS[0], sess)
    other = ui.Session(history=[("An older question", "4")])
    update = app.open_trace(path, ui.VIEWS[0], other)
    assert update[app.chatbot][0] == {"role": "user", "content": "Tom &lt;b&gt;has&lt;/b&gt; 3 apples."}
    assert update[app.chatbot][1:] == sess.chat[1:]  # the same reply, thought and answer
    assert (update[app.grid], update[app.stats_box]) == (expected[0], expected[2])
    assert update[app.replay].maximum == n and update[app.replay].value == n and update[app.replay_row].visible
    assert other.history == sess.history and other.opened == tiny_model.name
    assert f"Opened a trace of {tiny_model.name}: {n} forwards" in update[app.notice]
    assert 'class="pg-notice pg-info"' in update[app.notice]  # a report, not a warning
    assert update[app.preset] == "Throughput"  # its settings are that preset's
    assert json.loads(Path(update[app.trace_btn]).read_text(encoding="utf-8"))["steps"] == json.loads(
        Path(path).read_text(encoding="utf-8"))["steps"]  # Download trace now gives this run
    list(generate(app, other))  # a follow-up question is this model's run again
    assert other.opened is None and len(other.history) == 2


def test_an_opened_trace_sets_the_controls_and_compares_on_its_own_model(app: ui.DemoApp, tmp_path: Path) -> None:
    sess = ui.Session()
    settings = ("diffusion", "elastic", 0.7, 4, 0.0, 0.9, 20, 64, 7)
    list(app.generate("Tom has 3 apples.", "off", "Be brief.", *settings, app.models.default, ui.VIEWS[0], sess,
                      request()))
    path = app.trace_file(sess)
    other = ui.Session()
    update = app.open_trace(path, ui.VIEWS[0], other, app.models.default)
    # A link made now, or the next Generate, asks as the opened run did.
    assert tuple(update[c] for c in app.settings) == settings and update[app.preset] == "Custom"
    assert (update[app.think], update[app.system]) == ("off", "Be brief.")
    # This page's model is the one that recorded it: the prompt can be decoded again.
    text, race, *_ = list(app.compare_with_ar(other, request()))[-1]
    assert race.visible is True and "opened from a trace" not in text
    # A trace of another model (or one with another MASK id) is not decoded by this one.
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for key, value in (("model", "another-model"), ("mask_id", data["mask_id"] + 1)):
        changed = tmp_path / f"{key}.json"
        changed.write_text(json.dumps(data | {key: value}), encoding="utf-8")
        app.open_trace(str(changed), ui.VIEWS[0], other, app.models.default)
        text, race, *_ = list(app.compare_with_ar(other, request()))[-1]
        assert "opened from a trace" in text and race.visible is False
        assert "opened from a trace" in list(app.sweep_thresholds(other, request()))[-1][0]
    # A trace that does not say how it was asked (the CLI's before, or any writer's) leaves thinking and system,
    # and its download does not claim them either.
    data.pop("think"), data.pop("system")
    (tmp_path / "old.json").write_text(json.dumps(data), encoding="utf-8")
    update = app.open_trace(str(tmp_path / "old.json"), ui.VIEWS[0], other, app.models.default)
    assert app.think not in update and app.system not in update and update[app.algorithm] == "elastic"
    again = json.loads(Path(update[app.trace_btn]).read_text(encoding="utf-8"))
    assert (again["think"], again["system"]) == (None, None)
    # Settings the engine ran but the page's controls cannot hold (from the CLI or the API) are brought to the
    # nearest value the control holds, and said: Gradio would refuse the next Generate otherwise.
    data["result"]["config"] |= {"temperature": 3.0, "max_new_tokens": 100_000}
    (tmp_path / "wide.json").write_text(json.dumps(data), encoding="utf-8")
    update = app.open_trace(str(tmp_path / "wide.json"), ui.VIEWS[0], other, app.models.default)
    top = app.models.max_new_tokens(app.models.default)[0]
    assert (update[app.temperature], update[app.max_new]) == (2.0, top)
    said = html.unescape(update[app.notice])
    assert "Temperature 3, which this page's control does not hold (it takes from 0 to 2): 2 is set" in said
    assert f"Max new tokens 100,000, which this page's control does not hold (it takes from 32 to {top})" in said
    assert "does not say how the question was asked" in said  # this file has no think or system
    data["result"]["config"] |= {"temperature": 0.0, "max_new_tokens": 40, "fused_commit": True}
    (tmp_path / "cut.json").write_text(json.dumps(data), encoding="utf-8")
    update = app.open_trace(str(tmp_path / "cut.json"), ui.VIEWS[0], other, app.models.default)
    said = html.unescape(update[app.notice])
    assert update[app.max_new] == 64 and "(it takes whole blocks of 32 up to" in said and "fused commit" in said
    # A trace that names no model cannot be decoded again, and the page does not ask for the impossible.
    data["model"] = ""
    (tmp_path / "unnamed.json").write_text(json.dumps(data), encoding="utf-8")
    app.open_trace(str(tmp_path / "unnamed.json"), ui.VIEWS[0], other, app.models.default)
    assert "names no model" in list(app.compare_with_ar(other, request()))[-1][0]


def test_a_bad_trace_gives_a_notice_and_keeps_the_conversation(app: ui.DemoApp, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    warned = []
    monkeypatch.setattr(ui, "warn", warned.append)
    sess = ui.Session(history=[("Tom has 3 apples.", "3")])
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 2, "steps": "many"}')
    for path, words in ((str(bad), "damaged"), (None, "No file"), (str(tmp_path / "gone.json"), "could not be read")):
        update = app.open_trace(path, ui.VIEWS[0], sess)
        assert words in update[app.notice] and words in warned[-1] and set(update) == {app.notice, app.session}
    sess.running = True  # a reply is streaming: it must not be drawn over
    assert "still being written" in app.open_trace(str(bad), ui.VIEWS[0], sess)[app.notice]
    assert sess.history == [("Tom has 3 apples.", "3")]


def test_compare_with_ar_draws_both_runs_as_lines(app: ui.DemoApp) -> None:
    sess = ui.Session()
    first = list(app.compare_with_ar(sess, request()))[-1]
    assert "Generate a reply first" in first[0] and first[1].visible is False
    list(generate(app, sess))
    updates = list(app.compare_with_ar(sess, request()))
    # Both decoded again, one after the other (the recorded run was timed while the page drew it).
    assert "by block diffusion (1 of 2)" in updates[0][0] and "by AR (2 of 2)" in updates[1][0]
    text, race, *_ = updates[-1]
    assert "The same prompt by AR" in text and race.visible is True
    figure = json.loads(race.value["plot"])
    run_line, _, ar_line, _ = figure["data"]
    assert run_line["x"][-1] == sess.recording.result.nfe and run_line["y"][-1] == len(sess.recording.result.tokens)
    assert ar_line["y"] == list(range(1, len(ar_line["y"]) + 1))  # AR: one token per forward


def test_other_thresholds_decode_the_same_prompt_and_keep_this_run(app: ui.DemoApp) -> None:
    sess = ui.Session()
    assert "Generate a reply first" in list(app.sweep_thresholds(sess, request()))[-1][0]
    list(generate(app, sess, settings=("diffusion", "confidence_threshold", 0.8, 1, 0.0, 1.0, 0, 40, 0)))
    updates = list(app.sweep_thresholds(sess, request()))
    # This run is decoded again first, so that every row is timed alike.
    assert "threshold 0.8 (1 of 5)" in updates[0][0] and updates[0][2].interactive is False  # busy, Stop on
    assert "threshold 0.5 (2 of 5)" in updates[1][0]
    text, race, button, stop = updates[-1]
    rows = re.findall(r"<tr[^>]*><td>([^<]*)</td><td>(\d+)", text.replace("<wbr>", ""))
    assert [r[0] for r in rows] == ["0.5", "0.7", "0.8 · this run", "0.9", "0.95"]
    assert int(rows[2][1]) == sess.recording.result.nfe and button.interactive and not stop.interactive
    names = [line["name"] for line in json.loads(race.value["plot"])["data"][::2]]
    assert names == ["threshold 0.5", "threshold 0.7", "threshold 0.8", "threshold 0.9", "threshold 0.95"]


def test_stop_ends_a_threshold_sweep_with_what_it_has(app: ui.DemoApp) -> None:
    sess = ui.Session()
    list(generate(app, sess))
    sweep = app.sweep_thresholds(sess, request())
    assert "at threshold 0.9 (1 of 5)" in next(sweep)[0]  # this run, decoded again
    assert "at threshold 0.5 (2 of 5)" in next(sweep)[0]
    app.request_stop(request())  # pressed while the second run is about to decode
    text, race, button, stop = list(sweep)[-1]
    rows = re.findall(r"<tr[^>]*><td>([^<]*)</td><td>([^<]*)</td>", text.replace("<wbr>", ""))
    assert rows == [("0.5", rows[0][1]), ("0.9 · this run", str(sess.recording.result.nfe))]
    assert rows[0][1].endswith("(stopped)") and button.interactive and not stop.interactive


def test_other_rules_decode_the_same_prompt_by_every_rule_and_ar(app: ui.DemoApp) -> None:
    sess = ui.Session()
    assert "Generate a reply first" in list(app.sweep_rules(sess, request()))[-1][0]
    list(generate(app, sess, settings=("diffusion", "entropy", 0.8, 1, 0.0, 1.0, 0, 40, 0)))
    updates = list(app.sweep_rules(sess, request()))
    assert "by entropy (1 of 6)" in updates[0][0] and updates[0][2].interactive is False  # this run first
    text, race, button, stop = updates[-1]
    rows = re.findall(r"<tr[^>]*><td>([^<]*)</td><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>",
                      text.replace("<wbr>", ""))
    assert [r[0] for r in rows] == ["confidence_threshold 0.8", "entropy · this run", "low_confidence",
                                    "topk_margin", "elastic 0.8", "AR"]
    assert int(rows[1][1]) == sess.recording.result.nfe and button.interactive and not stop.interactive
    assert rows[5][2] == "1.00"  # AR: one token per forward
    assert [r[3] != "—" for r in rows] == [True, False, False, False, True, False]  # guesses need a threshold
    names = [line["name"] for line in json.loads(race.value["plot"])["data"][::2]]
    assert names == ["confidence_threshold 0.8", "entropy", "low_confidence", "topk_margin", "elastic 0.8", "AR"]


def test_other_rules_after_an_ar_run_mark_ar_as_this_run(app: ui.DemoApp) -> None:
    sess = ui.Session()
    list(generate(app, sess, settings=("ar", "confidence_threshold", 0.9, 1, 0.0, 1.0, 0, 16, 0)))
    text, *_ = list(app.sweep_rules(sess, request()))[-1]
    rows = re.findall(r"<tr[^>]*><td>([^<]*)</td><td>(\d+)", text.replace("<wbr>", ""))
    assert [r[0] for r in rows][-1] == "AR · this run" and int(rows[-1][1]) == sess.recording.result.nfe
    assert sum("this run" in r[0] for r in rows) == 1


def test_other_rules_fit_whole_blocks_into_the_context_an_ar_run_left(app: ui.DemoApp, tiny_model: LoadedModel,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """AR fits any reply length; block diffusion needs whole blocks: the reruns take the whole blocks that fit,
    and say so in words when none does."""
    sess = ui.Session()
    list(generate(app, sess, settings=("ar", "confidence_threshold", 0.9, 1, 0.0, 1.0, 0, 40, 0)))
    prompt_len = len(sess.recording.result.prompt_ids)
    monkeypatch.setattr(tiny_model.model.config, "max_position_embeddings", prompt_len + 40)
    text, race, button, stop = list(app.sweep_rules(sess, request()))[-1]
    rows = re.findall(r"<tr[^>]*><td>([^<]*)</td><td>(\d+)", text.replace("<wbr>", ""))
    assert len(rows) == 6 and race.visible and button.interactive and not stop.interactive
    lengths = [len(t["x"]) for t in json.loads(race.value["plot"])["data"][::2]]
    assert max(lengths[:-1]) <= 33  # one block (and the prefill's point) for every rule, AR as it was
    monkeypatch.setattr(tiny_model.model.config, "max_position_embeddings", prompt_len + 16)
    text, race, button, stop = list(app.sweep_rules(sess, request()))[-1]
    assert "leaves no room for a block of 32 new tokens" in text
    assert race.visible is False and button.interactive and not stop.interactive


def test_a_failed_rerun_is_said_and_the_buttons_come_back(app: ui.DemoApp, monkeypatch: pytest.MonkeyPatch) -> None:
    sess = ui.Session()
    list(generate(app, sess))

    def broken(*args: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ui, "run", broken)
    for handler in (app.compare_with_ar, app.sweep_rules, app.sweep_thresholds):
        text, race, button, stop = list(handler(sess, request()))[-1]
        assert "Decoding again failed: RuntimeError: out of memory" in text
        assert race.visible is False and button.interactive and not stop.interactive


@pytest.mark.parametrize("settings, words", [(("ar", "confidence_threshold"), "no threshold (AR)"),
                                             (("diffusion", "entropy"), "no threshold (entropy)")])
def test_other_thresholds_need_a_run_with_a_threshold(app: ui.DemoApp, settings: tuple, words: str) -> None:
    sess = ui.Session()
    list(generate(app, sess, settings=(*settings, 0.9, 1, 0.0, 1.0, 0, 16, 0)))
    text, race, *_ = list(app.sweep_thresholds(sess, request()))[-1]
    assert words in text and race.visible is False


def test_a_third_turn_with_the_teaching_model_says_it_gets_worse(tiny_model: LoadedModel) -> None:
    app = ui.DemoApp(models.ModelRegistry(preloaded=tiny_model))  # shown as the embedded teaching model
    app.build()
    for turns, warned in ((1, False), (2, True)):
        sess = ui.Session(history=[("Tom has 3 apples.", "3")] * turns)
        first = next(generate(app, sess))
        assert ("third turn" in first[app.notice]) is warned


def test_a_finished_run_is_replayed_in_slow_motion_when_asked(app: ui.DemoApp) -> None:
    sess = ui.Session()
    list(generate(app, sess))
    def skipped(on: bool = True) -> bool:
        return all(isinstance(v, type(gr.skip())) for v in app.replay_after_run(on, 5, ui.VIEWS[0], sess))

    assert skipped(on=False) and sess.fresh  # the box is off: nothing happens
    playing, k, grid, _, stats, timer, button = app.replay_after_run(True, 5, ui.VIEWS[0], sess)
    assert playing is True and k == 1 and timer.active is True and "Pause" in button.value
    assert "replay: forward 1 of" in stats and 'data-nfe="1"' in stats and grid
    assert skipped()  # once per run
    # A send that is refused leaves the last run recorded, but it is not replayed over the refusal.
    list(generate(app, sess))
    assert list(generate(app, sess, text="   ")) and skipped()
    list(generate(app, sess))
    sess.recording.result.stop_reason = "cancelled"  # nor is a run the user stopped
    assert skipped()
    list(generate(app, sess))
    sess.recording.result.seconds = ui.SLOW_REPLAY_MAX_SECONDS + 1  # nor one slow enough to watch as it ran
    assert skipped()
    list(generate(app, sess))
    assert not skipped()


def test_max_new_tokens_follows_the_chosen_model(app: ui.DemoApp) -> None:
    assert (app.max_new.maximum, app.max_new.value) == (480, 480)  # context 512, less a block
    _, _, slider, *_ = app.choose_model(models.EMBEDDED_LABEL)
    assert (slider.maximum, slider.value) == (992, 256)  # the teaching model: its context, short replies
    _, _, slider, *_ = app.choose_model(app.models.labels()[1])
    assert (slider.maximum, slider.value) == (480, 480)
    embedded_host = ui.DemoApp(models.ModelRegistry())
    embedded_host.build()
    assert (embedded_host.max_new.maximum, embedded_host.max_new.value) == (992, 256)


def test_the_examples_and_the_chat_placeholder_follow_the_model(app: ui.DemoApp) -> None:
    teaching, general = app.examples[True], app.examples[False]
    assert not teaching.visible and general.visible  # the host's model is not the teaching one
    *_, chat, teaching_row, general_row = app.choose_model(models.EMBEDDED_LABEL)
    assert teaching_row.visible and not general_row.visible and "word problem" in chat.placeholder
    *_, chat, teaching_row, general_row = app.choose_model(app.models.labels()[1])
    assert not teaching_row.visible and general_row.visible and "Ask anything" in chat.placeholder


@pytest.mark.parametrize(("choice", "suffix"), [("on", "Hi"), ("off", "Hi /no_think"), ("auto", "Hi /auto_think"),
                                                (True, "Hi"), (False, "Hi /no_think")])
def test_each_thinking_choice_ends_the_users_text_as_the_template_expects(app: ui.DemoApp, choice, suffix) -> None:
    req = app.prepare("Hi", choice, DEFAULTS, None, [])
    assert app.models.get(None)[0].tokenizer.decode(req.ids).endswith(f"用户：{suffix}[unused10][unused9]助手：")


@pytest.mark.parametrize("choice", ["yes", None, 1, "AUTO"])
def test_an_unknown_thinking_choice_is_refused_in_words(app: ui.DemoApp, choice) -> None:
    with pytest.raises(ValueError, match="Thinking must be one of on, off or auto"):
        app.prepare("Hi", choice, DEFAULTS, None, [])


def test_a_system_message_goes_first_and_a_blank_one_is_none(app: ui.DemoApp) -> None:
    decode = app.models.get(None)[0].tokenizer.decode
    with_system = decode(app.prepare("Hi", "on", DEFAULTS, None, [], system="You are <b>terse</b>.").ids)
    assert "系统：You are <b>terse</b>.[unused10]" in with_system
    assert with_system.index("系统") < with_system.index("用户：Hi")
    blank = decode(app.prepare("Hi", "on", DEFAULTS, None, [], system="  ").ids)
    assert blank == decode(app.prepare("Hi", "on", DEFAULTS, None, []).ids) and "系统：[unused10]" in blank
    with pytest.raises(ValueError, match="The system message has 20,001 characters"):
        app.prepare("Hi", "on", DEFAULTS, None, [], system="x" * 20_001)


# -- links --------------------------------------------------------------------------------------


def test_a_page_opened_from_a_link_fills_the_controls(app: ui.DemoApp) -> None:
    update = app.from_link(SimpleNamespace(query_params={"prompt": "Hi <b>", "algorithm": "elastic",
                                                         "threshold": "0.7", "think": "off"}))
    assert update[app.prompt] == "Hi <b>" and update[app.think] == "off"
    assert (update[app.algorithm], update[app.threshold]) == ("elastic", 0.7)
    assert app.temperature not in update  # only what the link gives
    # The settings stay folded, so that the question is in sight; the notice says what the link set.
    assert update[app.preset] == "Custom" and app.settings_box not in update
    assert "The link set Algorithm elastic and Threshold 0.7." in update[app.notice]
    assert list(app.from_link(SimpleNamespace(query_params={})).values()) == [gr.skip()]  # changes nothing
    system = app.from_link(SimpleNamespace(query_params={"system": "Be brief."}))
    assert system[app.system] == "Be brief." and "system message" in system[app.notice]
    assert app.preset not in system  # no decoding setting changed
    # Settings that amount to a preset name it (the others at the page's starting values).
    elastic = app.from_link(SimpleNamespace(query_params={"algorithm": "elastic"}))
    assert elastic[app.preset] == "Elastic (ours)" and "(the Elastic (ours) preset)" in elastic[app.notice]
    coding = app.from_link(SimpleNamespace(query_params={"algorithm": "entropy", "small_blocks": "32",
                                                         "top_p": "0.8", "temperature": "1"}))
    assert coding[app.preset] == "Coding"
    ar = app.from_link(SimpleNamespace(query_params={"mode": "ar"}))
    assert "The link set Mode Autoregressive (AR)." in ar[app.notice]  # as the control shows it, not "ar"
    assert app.from_link(SimpleNamespace(query_params={"algorithm": "entropy", "small_blocks": "32",
                                                       "top_p": "0.8"}))[app.preset] == "Custom"  # T stays 0
    bad = app.from_link(SimpleNamespace(query_params={"threshold": "<b>2</b>"}))
    assert "not taken whole" in bad[app.notice] and "<b>" not in bad[app.notice]  # escaped
    rounded = app.from_link(SimpleNamespace(query_params={"max_new_tokens": "40"}))  # taken, as 64
    assert "was taken, so: Its Max new tokens 40 is taken as 64" in rounded[app.notice]


def test_the_link_button_takes_the_last_question_when_the_box_is_empty(app: ui.DemoApp) -> None:
    sess = ui.Session()
    assert app.make_link("", "on", "", *DEFAULTS, False, sess).value.startswith("No link: Type a message first")
    list(generate(app, sess, text="Tom has 3 apples."))
    query = app.make_link("", "off", "", *DEFAULTS, False, sess).value
    assert query.startswith("?prompt=Tom+has+3+apples.&think=off&")
    assert app.make_link("New one?", "on", "", *DEFAULTS, False, sess).value.startswith("?prompt=New+one%3F")
    # Large text goes with the link (a lecture's slides), and comes back from it.
    large = app.make_link("New one?", "on", "", *DEFAULTS, True, sess).value
    assert large.endswith("&large=1") and "large" not in query
    assert app.from_link(SimpleNamespace(query_params={"prompt": "Hi", "large": "1"}))[app.large] is True
    assert app.large not in app.from_link(SimpleNamespace(query_params={"prompt": "Hi", "large": "<b>"}))

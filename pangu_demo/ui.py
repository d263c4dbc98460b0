"""The Gradio 6 app: chat, live token grid, confidence heatmap, stats, controls, replay, model panel.

The page's components and their handlers. What the handlers do is elsewhere: `controls` checks settings,
messages and links, `models` loads and caches the models, `streaming` runs the engine and builds the frames,
`render` and `animation` draw them, `trace` and `downloads` read and write files. Per-session data lives in
gr.State; the Stop flag of a running generation is kept per browser session (its session hash), so sessions
never see each other's runs.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import gradio as gr
from gradio.components.plot import PlotData

from . import animation, downloads, render, trace
from .chat import THINK_NAMES, prompt_ids, think_mode, think_name
from .controls import (
    BLOCK,
    LABELS,
    LINK_SETTINGS,
    MAX_PROMPT_CHARS,
    MODE_NAMES,
    PRESETS,
    RANGES,
    SMALL_BLOCKS,
    check_history,
    check_prompt,
    check_system,
    config_values,
    controls_error,
    describe_preset,
    link_query,
    link_settings_said,
    make_config,
    outside_controls,
    preset_of,
    read_link,
    shown,
)
from .engine import (
    ALGORITHMS,
    THRESHOLD_ALGORITHMS,
    DecodeConfig,
    Decoder,
    Result,
    Step,
    check_context,
    fit_context,
    run,
)
from .explainer import explainer_html
from .loading import EMBEDDED_MODEL, OFFICIAL_HUB_ID, LoadedModel, ModelLoadError
from .models import ModelRegistry, allow_custom_default
from .streaming import Frame, FrameOptions, Recording, build_frame, stream_frames

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CSS_PATH = ASSETS / "app.css"
HEAD_PATH = ASSETS / "head.html"  # the page's meta description and script
SWEEP_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)  # "Try other thresholds" (the recorded run's own is kept)
SLOW_REPLAY_MAX_SECONDS = 3.0  # a longer run could be watched as it ran: no replay after it
THINK_CHOICES = dict(zip(("Think first", "Answer at once", "Model decides"), THINK_NAMES, strict=True))
ALGORITHM_HELP = (
    "Which MASKs a forward commits. confidence_threshold: every one whose probability clears the threshold, and at "
    "least the most probable. entropy (lowest entropy), low_confidence (highest probability; the name says that the "
    "less sure positions stay MASK) and topk_margin "
    "(widest lead of the top candidate over the second) commit one token per forward, as in the reference: never "
    "faster than AR, chosen for accuracy. elastic (this demo's extension, not the reference's) commits the leftmost "
    "MASK, then the run after it that clears the threshold. The confidences on this page are the candidates' "
    "probabilities, whatever the rule ranks by."
)
THRESHOLD_HELP = (
    "confidence_threshold commits every MASK of the small block whose probability is above this (at least the most "
    "probable one); elastic, the leftmost MASK and the run after it above this. Lower commits more per forward, and "
    "more wrongly."
)
# (button label, prompt). Labels stay under 60 characters, where Gradio cuts them; the word problems are ones
# the embedded model answers right by block diffusion at the default settings.
EXAMPLES = [
    ("Add: 72 cows and 45 sheep", "A farm has 72 cows and 45 sheep. How many animals are on the farm?"),
    ("Subtract: 57 coins, 48 spent",
     "Will had 57 coins. He spent 48 coins on a plant. How many coins does he have now?"),
    ("Multiply: 26 tables of 7 chairs",
     "A cafe has 26 tables with 7 chairs at each table. How many chairs are there?"),
    ("Divide: 96 stickers among 8 friends",
     "96 stickers are shared equally among 8 friends. How many stickers does each friend get?"),
    ("Two steps: 43 rolls, 8 sold, 7 bags", "A baker makes 43 rolls. 8 of them are sold and the rest are packed "
                                            "equally into 7 bags. How many rolls are in each bag?"),
    ("Free text, hard for it: Sonnet 18",
     "Continue this passage:\nShall I compare thee to a summer's day?\nThou art more lovely and more temperate:"),
]
# For any other model (the real one): prompts that show what block diffusion does with open text. Lists and code
# are predictable, so many tokens clear the threshold per forward; a proof and a word problem think first.
GENERAL_EXAMPLES = [
    ("A list: the planets", "Name the eight planets of the solar system in order from the Sun, one per line."),
    ("Code: is it prime?", "Write a Python function is_prime(n) that says whether n is a prime number."),
    ("Word problem: a train", "A train leaves at 9:40 and arrives at 13:15. How long is the journey?"),
    ("A proof: √2", "Prove that the square root of 2 is irrational."),
    ("中文：块扩散", "用三句话解释块扩散语言模型是怎样生成文本的。"),
    ("Rewrite in French", "Translate into French: The library opens at nine and closes at six."),
]
PLACEHOLDER = {True: "Ask a word problem: the examples below show the kind it knows. It gets some answers wrong.",
               False: "Ask anything, in English or Chinese: the examples below are a start."}
# The note's first sentence stays in view; the rest folds away on a phone or a short screen (closed on load, see
# FOLD_NOTE_ON_SMALL_SCREENS) so that the message box is on the first screen.
TEACHING_SUMMARY = (
    "<strong>About the default model.</strong> A <em>small teaching model trained by this project</em> (6.5M "
    "parameters); it decodes exactly like openPangu-R-7B-Diffusion."
)
TEACHING_DETAIL = (
    "It was trained for about 12 hours of CPU on synthetic word problems with a thinking trace and on Shakespeare. "
    "By block diffusion (the Throughput preset) it solves nearly 9 in 10 one-step and 3 "
    "in 4 two-step problems, fewer than in AR mode: it sometimes commits a wrong digit in parallel (red marks in the "
    "grid: commits below the threshold, wrong most often). The **Elastic (ours)** preset commits the leftmost mask "
    "first and solves more than 9 in 10 one-step problems, with more tokens per forward. It cannot copy a name or word "
    "from the question, so it fails \"who has more?\" and counting questions; its Shakespeare comes out garbled, "
    "and slower than AR (little clears the threshold, and the padding after a short reply takes forwards of its "
    "own). It knows one- and two-turn chats: press **Clear** before a new question. To load the real model, see "
    "**Model** below."
)
TEACHING_NOTE = (f'<details class="pg-teaching-more" open>\n<summary>{TEACHING_SUMMARY}</summary>\n\n'
                 f"{TEACHING_DETAIL}\n\n</details>")
# Where the stylesheet says so (a phone, a short screen), the teaching note opens folded to its first sentence.
FOLD_NOTE_ON_SMALL_SCREENS = ("() => document.querySelectorAll('#pg-teaching details').forEach(d => { "
                              "if (getComputedStyle(d).getPropertyValue('--pg-fold-note').trim() === '1') "
                              "d.open = false; })")
LARGE_TEXT = ("(on) => { ['#pg-grid', '#pg-stats', '#pg-how'].forEach(id => "
              "document.querySelector(id)?.classList.toggle('pg-large', on)); }")
# The slow-motion replay plays the grid by itself after a run: not for a reader whose system asks for less motion.
NO_AUTOPLAY_FOR_REDUCED_MOTION = "(on) => window.matchMedia('(prefers-reduced-motion: reduce)').matches ? false : on"
HOW_TO_GET = (
    "**To run the real openPangu-R-7B-Diffusion** (about 16 GB, from "
    f"[Hugging Face](https://huggingface.co/{OFFICIAL_HUB_ID}) or "
    "[GitCode](https://ai.gitcode.com/ascend-tribe/openPangu-R-7B-Diffusion)), download it and start the app on "
    "its folder (or set `PANGU_DEMO_MODEL`):\n\n"
    f"```\nhf download {OFFICIAL_HUB_ID} --local-dir ~/models/openPangu-R-7B-Diffusion\n"
    "python app.py --model ~/models/openPangu-R-7B-Diffusion\n```\n\n"
    "A GPU or Ascend NPU is strongly recommended; on a CPU it is very slow."
)


# -- per-session data ---------------------------------------------------------------------------
@dataclass
class Session:
    history: list[tuple[str, str]] = field(default_factory=list)  # (user, answer) for the chat template
    chat: list[dict] = field(default_factory=list)  # the messages shown
    recording: Recording | None = None
    options: FrameOptions = field(default_factory=FrameOptions)
    mask_id: int = 0
    token_text: render.TokenText | None = None  # the loaded tokenizer's token_text, for replay
    running: bool = False  # a generation is streaming: replay and view changes must not draw over it
    epoch: int = 0  # bumped by Clear: a run started before it must not put its turn back
    clears: int = 0  # Clear presses only (an opened trace resets too): the page's copy goes with each question
    model_label: str | None = None  # the model of the recorded run, for "Compare with AR"
    opened: str | None = None  # the recording came from an opened trace of this model: only it may rerun it
    fresh: bool = False  # the recording is the run that just finished (not one from before a refused send)
    plays: int = 0  # Play and Pause presses so far: a Play frame drawn across one of them is dropped
    think: str | None = None  # how the recorded run's question was asked ("on", "off", "auto"), for its trace:
    system: str | None = None  # both None for a run opened from a trace that does not say

    def reset(self) -> None:
        """Forget the conversation and the recorded run (Clear)."""
        self.history, self.chat, self.recording, self.model_label, self.opened = [], [], None, None, None
        self.think = self.system = None
        self.epoch += 1


def warn(text: str) -> None:
    """A pop-up warning. Gradio renders its message as HTML, and the text may quote what the user typed."""
    gr.Warning(html.escape(text))


def inform(text: str) -> None:
    """A pop-up note, escaped as `warn`'s."""
    gr.Info(html.escape(text))


def plot_value(figure: dict | None) -> PlotData | None:
    return None if figure is None else PlotData(type="plotly", plot=json.dumps(figure))


def write_trace(sess: Session, model: str | None) -> str | None:
    """The session's recorded run as a trace file (the CLI's --trace format) for the download button; None
    without a finished run."""
    rec = sess.recording
    if rec is None or rec.result is None:
        return None
    prompt = sess.history[-1][0] if sess.history else None
    content = trace.dumps(rec, sess.token_text or str, sess.mask_id, model=model or "", prompt=prompt,
                          think=sess.think, system=sess.system)
    return downloads.new_file("trace", ".json", content.encode("utf-8"))


def write_gif(rec: Recording | None, token_text: render.TokenText, mask_id: int, speed: float | None) -> str | None:
    """The recorded run as an animated GIF, one frame per forward at the replay speed; None without a run."""
    if rec is None or rec.result is None or not rec.steps:
        return None
    gif = animation.recording_gif(rec, token_text, mask_id, forwards_per_second=float(speed or 5))
    return downloads.new_file("run", ".gif", gif)


def empty_grid() -> str:
    """The grid before any run, with the legend of the default settings."""
    return render.grid_html([], 0, str, -1, threshold=render.commit_threshold(DecodeConfig()))


def empty_stats(live: bool = False) -> str:
    """The stats before a run's first forward (`live`: "decoding…", else "ready")."""
    return render.stats_html(render.stats([], 0), live=live)


def empty_plot() -> PlotData:
    return plot_value(render.heatmap_figure([], 0))


INFO = "pg-notice pg-info"  # a notice with nothing wrong to say


def message_html(text: str, css: str = "pg-notice") -> str:
    """Plain text in a styled box (a notice by default); escaped, since it may quote what the user typed."""
    return f'<div class="{css}">{html.escape(text)}</div>'


# -- the app ------------------------------------------------------------------------------------
log = logging.getLogger(__name__)
VIEWS = ["Current block", "Whole reply: confidence", "Whole reply: step"]


def options_for(view_label: str) -> FrameOptions:
    """The heatmap view's label as frame options."""
    if view_label == VIEWS[0]:
        return FrameOptions("block")
    return FrameOptions("answer", "step" if view_label.endswith("step") else "confidence")


def play_interval(speed: float | None) -> float:
    """Seconds between replay ticks (at most 10 ticks/s; faster speeds skip steps per tick)."""
    return max(0.1, 1.0 / float(speed or 5))


def rerun(decoder: Decoder, prompt_ids: list[int], cfg: DecodeConfig,
          stop: threading.Event) -> tuple[list[Step], Result]:
    """A recorded run's prompt decoded again with other settings. Block diffusion decodes whole blocks, so a
    reply length that fit AR may be lowered to the whole blocks that still fit the context."""
    return run(decoder, prompt_ids, fit_context(len(prompt_ids), cfg, decoder.context), stop)


def rerun_failed(error: Exception) -> str:
    """What a failed rerun says on the page (the engine's own checks say it in words; anything else is logged)."""
    if isinstance(error, ValueError):
        return str(error)
    log.error("decoding again failed", exc_info=error)
    return f"Decoding again failed: {type(error).__name__}: {error}"


class SweepPlan(NamedTuple):
    label: str  # the table's first column
    doing: str  # the progress message's words: "at threshold 0.7", "by entropy"
    config: DecodeConfig
    threshold: float | None  # the rule's threshold, to count commits below it


def recording_of(sess: object) -> Recording | None:
    return sess.recording if isinstance(sess, Session) else None


def applicable(mode: str, algorithm: str) -> tuple:
    """Show only the controls that the chosen mode and algorithm use."""
    diffusion = mode == "diffusion"
    return (gr.Dropdown(visible=diffusion), gr.Slider(visible=diffusion and algorithm in THRESHOLD_ALGORITHMS),
            gr.Dropdown(visible=diffusion))


def apply_preset(name: str) -> tuple:
    p = PRESETS.get(name)
    if p is None:  # "Custom": leave the controls as they are
        return (gr.skip(),) * 6
    return ("diffusion", p["algorithm"], p.get("threshold", gr.skip()), p["num_small_blocks"],
            p.get("temperature", 0.0), p.get("top_p", 1.0))


class Prepared(NamedTuple):
    """A checked request."""
    lm: LoadedModel
    decoder: Decoder
    cfg: DecodeConfig
    ids: list[int]
    text: str
    think: str  # "on", "off" or "auto"
    system: str | None
    note: str = ""  # what was adjusted to make it fit, for the page's notice


class DemoApp:
    """The page. Layout methods create the components; `_wire_*` methods connect them to the handlers, which
    share the model registry and the Stop event of each browser session's running decode."""

    def __init__(self, models: ModelRegistry, concurrency: int = 2, slow_replay: bool = True) -> None:
        self.models = models
        self.concurrency = concurrency
        self.slow_replay_default = slow_replay
        self.stops: dict[str, threading.Event] = {}

    def build(self, max_queue: int = 16) -> gr.Blocks:
        # delete_cache: Gradio keeps its own copy of every download and upload; an hour on, as for ours.
        keep = (downloads.KEEP_SECONDS, downloads.KEEP_SECONDS)
        with gr.Blocks(title="openPangu block diffusion, live", delete_cache=keep) as demo:
            self.session = gr.State(None)  # a Session, created by the first generation
            # Session.clears as the page knows it, sent with each question: one asked before a Clear and still
            # waiting in the queue must not be answered in the cleared chat.
            self.page_clears = gr.Number(0, visible=False)
            self.playing = gr.State(False)
            self._header()
            # Closed, one line each: the explainer in sight of a newcomer, the settings in reach of the grid.
            with gr.Accordion("How block diffusion works", open=False, elem_id="pg-how"):
                gr.HTML(explainer_html())
            self._settings_panel()
            with gr.Row(equal_height=False):
                self._chat_column()
                self._run_column()
            self._model_panel()
            self._wire_generation()
            self._wire_replay()
            self._wire_settings()
            self._wire_model_panel()
            demo.load(None, None, None, js=FOLD_NOTE_ON_SMALL_SCREENS, queue=False)
            demo.load(None, [self.slow_replay], [self.slow_replay], js=NO_AUTOPLAY_FOR_REDUCED_MOTION, queue=False)
            demo.load(self.from_link, None, [self.prompt, self.think, self.system, *self.settings, self.preset,
                                             self.notice, self.large], api_visibility="private",
                      show_progress="hidden")  # queued: only then does a pop-up reach the page
            gr.api(self.api_generate, api_name="generate", concurrency_limit=self.concurrency,
                   concurrency_id="decode")
        demo.queue(default_concurrency_limit=self.concurrency, max_size=max_queue)
        return demo

    # -- layout ---------------------------------------------------------------------------------
    def _header(self) -> None:
        gr.Markdown("# Block diffusion, live: watch a diffusion language model write\n"
                    "openPangu-R-7B-Diffusion writes 32 tokens at a time and fills each block in parallel, "
                    "most confident tokens first. This page shows the real run as it happens: which token "
                    "was decided at which forward pass, how sure the model was, and how many forward passes "
                    "it saved over left-to-right decoding.", elem_id="pg-header")
        # The note describes the embedded model only: it is hidden while another model is selected.
        self.teaching = gr.Markdown(TEACHING_NOTE,
                                    visible=self.models.is_embedded(self.models.default),
                                    elem_classes=["pg-teaching"], elem_id="pg-teaching")

    def _chat_column(self) -> None:
        with gr.Column(scale=5, min_width=360):
            embedded = self.models.is_embedded(self.models.default)
            self.chatbot = gr.Chatbot(label="Chat", height=460, buttons=["copy"], elem_id="pg-chat",
                                      render_markdown=False, feedback_options=None, autoscroll=True,
                                      placeholder=PLACEHOLDER[embedded])
            # One line that grows: Gradio sends a one-line box on Enter (a taller one only on Shift+Enter).
            self.prompt = gr.Textbox(label="Message", placeholder="Type a message and press Enter", lines=1,
                                     info="Enter sends, Shift+Enter starts a new line. The conversation and the reply "
                                          "must fit the model's context (Model below; the teaching model's 1,024 "
                                          "tokens hold about 2,000 characters of English, question and reply "
                                          "together). Pastes are cut at "
                                          f"{MAX_PROMPT_CHARS:,} characters.",
                                     max_lines=8, max_length=MAX_PROMPT_CHARS, elem_id="pg-prompt")
            with gr.Row():
                # min_width: at Gradio's own 160 px the three did not fit a laptop's chat column, and Clear wrapped.
                self.generate_btn = gr.Button("Generate", variant="primary", elem_id="pg-generate", min_width=100)
                self.stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="pg-stop", min_width=80)
                self.clear_btn = gr.Button("Clear", elem_id="pg-clear", min_width=80)
            self.think = gr.Radio(list(THINK_CHOICES.items()), value="on", label="Thinking", elem_id="pg-think",
                                  info="Adds /no_think or /auto_think to your message; the teaching model never saw "
                                       "/auto_think.")
            self.notice = gr.HTML(message_html(""), elem_id="pg-notice")
            # Example buttons fill the prompt in the browser (js, no server round trip): with gr.Examples a
            # Generate click sent before the example's round trip returned went out with the old, empty prompt.
            # The teaching model's examples while it is selected, open-text ones for any other model.
            with gr.Column(elem_id="pg-examples", variant="panel"):
                gr.Markdown("**Examples** (click one, then Generate)")
                self.examples = {True: self._example_row(EXAMPLES, embedded, "pg-examples-teaching"),
                                 False: self._example_row(GENERAL_EXAMPLES, not embedded, "pg-examples-general")}

    def _example_row(self, examples: list[tuple[str, str]], visible: bool, elem_id: str) -> gr.Row:
        with gr.Row(elem_classes=["pg-example-row"], visible=visible, elem_id=elem_id) as row:
            for label, text in examples:
                button = gr.Button(label, size="sm", variant="secondary", scale=0, elem_classes=["pg-example"])
                button.click(None, None, [self.prompt], js=f"() => {json.dumps(text)}", queue=False)
        return row

    def _run_column(self) -> None:
        with gr.Column(scale=7, min_width=480):
            self.stats_box = gr.HTML(empty_stats(), elem_id="pg-stats")
            self.grid = gr.HTML(empty_grid(), elem_id="pg-grid")
            with gr.Row():
                self.view = gr.Radio(VIEWS, value=VIEWS[0], label="Heatmap view", scale=3,
                                     info="Current block: confidence of every candidate at every denoising "
                                          "forward. Whole reply (thinking trace and answer): when each token "
                                          "was committed.")
                # In the browser only: a class on the page that the stylesheet reads (no round trip).
                self.large = gr.Checkbox(False, label="Large text", info="For a projector: the grid, its lines "
                                         "and the stats.", scale=1, min_width=160, elem_id="pg-large")
                self.large.change(None, [self.large], None, js=LARGE_TEXT, api_visibility="private")
            # An empty figure of the full height, so the page does not jump when the first one arrives.
            self.plot = gr.Plot(empty_plot(), label="Decoding heatmap", elem_id="pg-heatmap")
            with gr.Column(visible=False, elem_id="pg-replay-row") as self.replay_row:  # shown after a run
                with gr.Row():
                    # min_width: on a phone the speed goes under the slider, which keeps the whole width.
                    self.replay = gr.Slider(1, 2, value=1, step=1, label="Replay: forward", scale=4, min_width=300,
                                            info="Scrub through every recorded forward; nothing is recomputed.",
                                            elem_id="pg-replay")
                    self.speed = gr.Dropdown([1, 2, 5, 10, 20, 50], value=5, label="Forwards/s", scale=1,
                                             elem_id="pg-speed")
                    self.play_btn = gr.Button("▶ Play", scale=1, elem_id="pg-play")
                with gr.Row():  # the same prompt decoded again, other ways
                    self.compare_btn = gr.Button("Compare with AR", size="sm", elem_id="pg-compare")
                    self.sweep_btn = gr.Button("Try other thresholds", size="sm", elem_id="pg-sweep")
                    self.rules_btn = gr.Button("Try other rules", size="sm", elem_id="pg-rules")
                with gr.Row():  # the run as files
                    self.trace_btn = gr.DownloadButton("Download trace (JSON)", size="sm", elem_id="pg-trace",
                                                       variant="secondary")
                    self.gif_btn = gr.Button("Make a GIF", size="sm", elem_id="pg-gif-btn")
                    self.link_btn = gr.Button("Link to this question", size="sm", elem_id="pg-link-btn")
                self.link_box = gr.Textbox(visible=False, label="Link", buttons=["copy"], interactive=False,
                                           info="Opens this page with the question and the settings filled in; "
                                                "press Generate there.", elem_id="pg-link")
                # For slides and posts: the grid, one frame per forward, at the replay speed.
                self.gif = gr.Image(visible=False, type="filepath", interactive=False, buttons=["download"],
                                    label="GIF: one frame per forward, at the replay's Forwards/s",
                                    elem_id="pg-gif")
            self.compare_out = gr.HTML("", elem_id="pg-compare-out")
            # After "Compare with AR", "Try other thresholds" or "Try other rules".
            self.race = gr.Plot(visible=False, show_label=False, elem_id="pg-race")
            self.timer = gr.Timer(0.2, active=False)
            # Always shown, below the run: a saved run replays here with no model (on a phone, below the grid).
            with gr.Column(elem_id="pg-open-row"):
                gr.Markdown("**Replay a saved run:** a file from *Download trace*, or one written elsewhere by "
                            "`generate --trace` (a run of the 7B model, say). No model needed.")
                self.open_btn = gr.UploadButton("Open a trace (JSON)", file_types=[".json"], size="sm",
                                                variant="secondary", elem_id="pg-open")

    def _settings_panel(self) -> None:
        with gr.Accordion("Decoding settings", open=False, elem_id="pg-settings") as self.settings_box:
            self.preset = gr.Radio(list(PRESETS) + ["Custom"], value="Throughput",
                                   label="Preset (the model card's three, and one of ours)",
                                   info=" · ".join(f"{name}: {describe_preset(p)}" for name, p in PRESETS.items()))
            self._rule_controls()
            self._sampling_controls()
            self._length_controls()
            self.slow_replay = gr.Checkbox(self.slow_replay_default, label="Slow-motion replay after a fast run",
                                           elem_id="pg-slow-replay",
                                           info="A run of the teaching model takes well under a second: after a run "
                                                f"of less than {SLOW_REPLAY_MAX_SECONDS:g} s, the grid and heatmap "
                                                "play it again, forward by forward, at the replay speed (the chat "
                                                "keeps the answer).")
        self.settings = [self.mode, self.algorithm, self.threshold, self.small_blocks, self.temperature, self.top_p,
                         self.top_k, self.max_new, self.seed]

    def _rule_controls(self) -> None:
        with gr.Row():
            self.mode = gr.Radio([(label, value) for value, label in MODE_NAMES.items()],
                                 value="diffusion", label="Mode",
                                 info="AR decodes one token per forward, for comparison.")
            self.algorithm = gr.Dropdown(list(ALGORITHMS), value="confidence_threshold", label="Algorithm",
                                         elem_id="pg-algorithm", info=ALGORITHM_HELP)
            self.threshold = gr.Slider(*RANGES["threshold"], value=0.9, step=0.01, label="Threshold",
                                       elem_id="pg-threshold", info=THRESHOLD_HELP)
            self.small_blocks = gr.Dropdown(SMALL_BLOCKS, value=1, label="Small blocks per block",
                                            info=f"The {BLOCK}-token block is filled small block by small block, "
                                                 "left to right.")

    def _sampling_controls(self) -> None:
        with gr.Row(equal_height=True, elem_id="pg-sampling"):
            self.temperature = gr.Slider(*RANGES["temperature"], value=0.0, step=0.05, label="Temperature",
                                         info="0 = greedy (deterministic).")
            # As in the reference, confidence is read after the filter, also at temperature 0: the token stays,
            # its confidence rises, and more tokens clear the threshold.
            self.top_p = gr.Slider(*RANGES["top_p"], value=1.0, step=0.05, label="top_p",
                                   info="1 = off. Confidence is read after the filter: lower top_p, "
                                        "more tokens clear the threshold.")
            self.top_k = gr.Slider(*RANGES["top_k"], value=0, step=1, label="top_k",
                                   info="0 = off. As top_p, it raises the confidence of what it keeps.")
            # No minimum or maximum: Gradio would refuse a value beyond them before the handler, with error
            # badges over the whole page; and no precision, which would round 3.7 to 4 unsaid. The handler's
            # check names the Seed box instead.
            self.seed = gr.Number(0, label="Seed", info="Same seed + settings = same answer.")

    def _length_controls(self) -> None:
        with gr.Row(equal_height=True):
            # Whole blocks: the reference decodes whole blocks of 32 and cuts the result.
            top, start = self.models.max_new_tokens(self.models.default)
            self.max_new = gr.Slider(BLOCK, top, value=start, step=BLOCK, label="Max new tokens",
                                     elem_id="pg-max-new",
                                     info="Whole blocks. A run lowers it to what the model's context "
                                          "leaves after the prompt, and says so.",
                                     scale=1, min_width=240)
            self.system = gr.Textbox(label="System message", lines=1, max_lines=4, max_length=MAX_PROMPT_CHARS,
                                     elem_id="pg-system", scale=3,
                                     placeholder="None. For example: You are a helpful assistant.",
                                     info="Goes before the chat, for every turn. The teaching model saw a few "
                                          "short ones in training.")

    def _model_panel(self) -> None:
        models = self.models
        with gr.Accordion("Model", open=False, elem_id="pg-model"):
            self.model_info = gr.Markdown(models.describe(models.default))
            self.model_choice = gr.Dropdown(models.labels(), value=models.default, label="Model",
                                            info="The models this host offers.", elem_id="pg-model-choice")
            with gr.Row(visible=models.allow_custom):
                self.custom_source = gr.Textbox(label="Local folder or Hugging Face id", scale=4,
                                                placeholder="~/models/openPangu-R-7B-Diffusion")
                self.custom_btn = gr.Button("Load", scale=1)
            if not models.allow_custom:
                gr.Markdown("This page offers the models above. (Running the demo yourself? Start it with "
                            "`--allow-custom-models` or `PANGU_DEMO_ALLOW_CUSTOM=1` to load any folder or hub id.)")
            gr.Markdown(HOW_TO_GET)

    # -- wiring ---------------------------------------------------------------------------------
    def _wire_generation(self) -> None:
        outputs = [self.chatbot, self.grid, self.plot, self.stats_box, self.replay_row, self.replay, self.notice,
                   self.prompt, self.generate_btn, self.stop_btn, self.session]
        triggers = [self.generate_btn.click, self.prompt.submit]
        asked = [self.think, self.system, *self.settings, self.model_choice, self.view, self.session, self.page_clears]
        # The chat's retry button under the last answer asks its question again, by the settings as they are now.
        # The page's own names: without them Gradio names the first after its function, "generate", and the public
        # API's /generate becomes /generate_1.
        for runs, handler, inputs, name in ((triggers, self.generate, [self.prompt, *asked], "ui_generate"),
                                            ([self.chatbot.retry], self.ask_again, asked, "ui_ask_again")):
            gr.on(runs, handler, inputs=inputs, outputs=outputs, api_name=name, api_visibility="private",
                  concurrency_limit=self.concurrency, concurrency_id="decode").then(
                self.trace_file, [self.session], [self.trace_btn], api_visibility="private",
                show_progress="hidden").then(
                self.replay_after_run, [self.slow_replay, self.speed, self.view, self.session],
                [self.playing, self.replay, self.grid, self.plot, self.stats_box, self.timer, self.play_btn],
                api_visibility="private", show_progress="hidden")
            gr.on(runs, self._stale, None, list(self._stale()), queue=False,
                  show_progress="hidden", api_visibility="private")
        self.gif_btn.click(self.gif_file, [self.speed, self.session], [self.gif], api_visibility="private",
                           concurrency_limit=self.concurrency, concurrency_id="decode")
        # The server knows the query, the page its own address: the browser puts the two together.
        self.link_btn.click(self.make_link, [self.prompt, self.think, self.system, *self.settings, self.large,
                                             self.session],
                            [self.link_box], api_visibility="private", show_progress="hidden").then(
            None, [self.link_box], [self.link_box], show_progress="hidden",
            js="(q) => q.startsWith('?') ? window.location.origin + window.location.pathname + q : q")
        for button, handler in ((self.compare_btn, self.compare_with_ar), (self.sweep_btn, self.sweep_thresholds),
                                (self.rules_btn, self.sweep_rules)):
            button.click(handler, [self.session], [self.compare_out, self.race, button, self.stop_btn],
                         api_visibility="private", concurrency_limit=self.concurrency, concurrency_id="decode")
        self.stop_btn.click(self.request_stop, None, None, queue=False, api_visibility="private")
        self.open_btn.upload(
            self.open_trace, [self.open_btn, self.view, self.session, self.model_choice],
            [self.chatbot, self.grid, self.plot, self.stats_box, self.replay_row, self.replay, self.notice,
             self.session, self.trace_btn, self.timer, self.play_btn, self.playing, *self._stale(), *self.settings,
             self.preset, self.think, self.system],
            api_visibility="private").then(
            self.replay_after_run, [self.slow_replay, self.speed, self.view, self.session],
            [self.playing, self.replay, self.grid, self.plot, self.stats_box, self.timer, self.play_btn],
            api_visibility="private", show_progress="hidden")
        for trigger in (self.clear_btn.click, self.chatbot.clear):
            trigger(self.clear, [self.session], [self.chatbot, self.grid, self.plot, self.stats_box, self.replay_row,
                                                 self.notice, self.session, self.timer, self.play_btn, self.playing,
                                                 self.page_clears, *self._stale()],
                    api_visibility="private", queue=False)  # at once, also while the queue is full

    def _wire_replay(self) -> None:
        frame_outputs = [self.grid, self.plot, self.stats_box]
        self.replay.input(self.show_step, [self.replay, self.view, self.session], frame_outputs,
                          api_visibility="private", trigger_mode="always_last", show_progress="hidden")
        self.view.change(self.change_view, [self.view, self.replay, self.session], frame_outputs,
                         api_visibility="private")
        self.play_btn.click(self.toggle_play, [self.playing, self.replay, self.speed, self.session],
                            [self.playing, self.replay, self.timer, self.play_btn], api_visibility="private")
        self.timer.tick(self.tick, [self.replay, self.speed, self.view, self.session, self.playing],
                        [self.replay, *frame_outputs, self.playing, self.timer, self.play_btn],
                        api_visibility="private", show_progress="hidden")
        self.speed.change(lambda s, playing: gr.Timer(value=play_interval(s), active=bool(playing)),
                          [self.speed, self.playing], [self.timer], api_visibility="private")

    def _wire_settings(self) -> None:
        for trigger in (self.mode.change, self.algorithm.change):
            trigger(applicable, [self.mode, self.algorithm], [self.algorithm, self.threshold, self.small_blocks],
                    api_visibility="private")
        # Changing a setting by hand leaves the preset: say so.
        for control in (self.mode, self.algorithm, self.threshold, self.small_blocks, self.temperature, self.top_p,
                        self.top_k):
            control.input(lambda: "Custom", None, [self.preset], queue=False, show_progress="hidden",
                          api_visibility="private")
        self.preset.input(apply_preset, [self.preset], [self.mode, self.algorithm, self.threshold,
                                                        self.small_blocks, self.temperature, self.top_p],
                          api_visibility="private")

    def _wire_model_panel(self) -> None:
        # The note is drawn afresh (open) when it reappears: fold it again on a phone.
        self.model_choice.change(self.choose_model, [self.model_choice],
                                 [self.model_info, self.teaching, self.max_new, self.chatbot, *self.examples.values()],
                                 api_visibility="private").then(None, None, None, js=FOLD_NOTE_ON_SMALL_SCREENS)
        self.custom_btn.click(self.load_custom, [self.custom_source], [self.model_choice, self.model_info],
                              api_visibility="private")

    # -- generation -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def stop_event(self, request: gr.Request) -> Iterator[threading.Event]:
        """The event this session's Stop button sets while the block runs (one decode per session at a time)."""
        key = request.session_hash or "direct"
        event = self.stops[key] = threading.Event()
        try:
            yield event
        finally:
            if self.stops.get(key) is event:
                del self.stops[key]

    def prepare(self, text: str | None, think: object, settings: tuple, model_label: str | None,
                history: list[tuple[str, str]], fit: bool = False, system: str | None = None) -> Prepared:
        """Check a request, or raise ValueError / ModelLoadError saying what is wrong. With `fit` (the page's
        requests), the settings must be ones the page's controls hold (a number box takes what is typed), and max
        new tokens is lowered to what the context leaves after the prompt (and a note says so) instead of refused."""
        text, system, asked = check_prompt(text), check_system(system), think_mode(think)
        if fit and (error := controls_error(settings)):  # before a model loads: it may take minutes
            raise ValueError(error)
        cfg = make_config(*settings)
        lm, decoder = self.models.get(model_label)
        ids = prompt_ids(lm.tokenizer, history, text, asked, system)
        think = think_name(asked)
        if not fit:
            check_context(len(ids), cfg, lm.context_length)
            return Prepared(lm, decoder, cfg, ids, text, think, system)
        fitted = fit_context(len(ids), cfg, lm.context_length)  # a long conversation may need Clear to fit
        notes = [] if fitted is cfg else [
            f"Max new tokens lowered from {cfg.max_new_tokens:,} to {fitted.max_new_tokens:,}: the prompt is "
            f"{len(ids):,} tokens and the model's context is {lm.context_length:,}."]
        if len(history) >= 2 and self.models.is_embedded(model_label):
            notes.append("The teaching model was trained on single questions and two-turn chats; from the third "
                         "turn on its answers get worse. Clear starts a new chat.")
        return Prepared(lm, decoder, fitted, ids, text, think, system, " ".join(notes))

    def _buttons(self, running: bool) -> dict:
        """Generate is off and Stop on while a decode runs, and the other way round after it."""
        return {self.generate_btn: gr.Button(interactive=not running), self.stop_btn: gr.Button(interactive=running)}

    def _failed(self, message: str, sess: Session, text: str) -> dict:
        """A run that could not finish: say why, give the prompt back, and put the page back to ready."""
        warn(message)
        return {self.chatbot: sess.chat, self.stats_box: empty_stats(), self.notice: message_html(message),
                self.prompt: text, **self._buttons(running=False), self.session: sess}

    def generate(self, text: str | None, think_on: str | bool, system: str | None, mode_v: str, alg: str,
                 thr: float, sb: int | str, temp: float, tp: float, tk: int | float, mx: int | float, sd: int | float,
                 model_label: str | None, view_label: str, sess: Session, request: gr.Request,
                 page_clears: float | None = None, again: bool = False) -> Iterator[dict]:
        """Ask `text` (with `again`: the last question once more, in place of its answer) and stream the run."""
        sess = sess if isinstance(sess, Session) else Session()
        if page_clears is not None and int(page_clears) != sess.clears:  # asked, then cleared while it waited
            yield {self.notice: gr.skip()}  # nothing changes (a generator that yields nothing blanks its outputs)
            return
        sess.fresh = False  # what follows this request (trace file, slow replay) is for a run that finishes now
        try:
            if again and not sess.history:
                raise ValueError("There is no question to ask again: type one.")
            text, history = (sess.history[-1][0], sess.history[:-1]) if again else (text, sess.history)
            req = self.prepare(text, think_on, (mode_v, alg, thr, sb, temp, tp, tk, mx, sd), model_label,
                               history, fit=True, system=system)
        except (ValueError, ModelLoadError) as e:
            warn(str(e))
            yield {self.notice: message_html(str(e))}
            return
        if again:  # the old answer goes; the question is asked anew below
            sess.history.pop()
            sess.chat = sess.chat[:max(i for i, m in enumerate(sess.chat) if m["role"] == "user")]
        with self.stop_event(request) as stop:
            sess.options = options_for(view_label)
            sess.mask_id, sess.token_text = req.decoder.mask_id, req.lm.tokenizer.token_text
            sess.opened = None  # this run is the selected model's, even after an opened trace
            sess.running, epoch = True, sess.epoch
            base = sess.chat + [{"role": "user", "content": render.escape_chat(req.text)}]
            # The session goes out now, so that the view switch reaches this run's options; the last run's
            # figures go at once: its "finished" must not stand beside the new prompt.
            yield {self.chatbot: base + [{"role": "assistant", "content": "…"}], self.stats_box: empty_stats(live=True),
                   self.replay_row: gr.Column(visible=False), self.notice: message_html(req.note), self.prompt: "",
                   **self._buttons(running=True), self.session: sess}
            try:
                for frame in stream_frames(req.decoder, req.ids, req.cfg, stop, options=sess.options):
                    if sess.epoch != epoch:  # Clear was pressed: this run's turn must not come back
                        yield self._buttons(running=False)
                        return
                    yield self._frame_update(frame, req, sess, base, model_label)
            except ValueError as e:  # the engine's own check of the settings
                yield self._failed(str(e), sess, req.text)
            except Exception as e:  # anything else: logged, and the page must recover
                log.exception("decoding failed")
                yield self._failed(f"Decoding failed: {type(e).__name__}: {e}", sess, req.text)
            finally:
                sess.running = False

    def ask_again(self, think_on: str | bool, system: str | None, mode_v: str, alg: str, thr: float, sb: int | str,
                  temp: float, tp: float, tk: int | float, mx: int | float, sd: int | float, model_label: str | None,
                  view_label: str, sess: Session, request: gr.Request,
                  page_clears: float | None = None) -> Iterator[dict]:
        """The chat's retry button: the last question again, by the settings as they are now."""
        yield from self.generate(None, think_on, system, mode_v, alg, thr, sb, temp, tp, tk, mx, sd, model_label,
                                 view_label, sess, request, page_clears, again=True)

    def _frame_update(self, frame: Frame, req: Prepared, sess: Session, base: list[dict],
                      model_label: str | None) -> dict:
        """A streamed frame as component updates; the final one also files the run in the session."""
        rec = frame.recording
        stop_reason = rec.result.stop_reason if frame.final and rec.result is not None else None
        update = {self.chatbot: base + render.assistant_messages(frame.reply, rec.thinking_seconds(),
                                                                 not frame.final, stop_reason),
                  self.grid: frame.grid, self.stats_box: render.stats_html(frame.stats, live=not frame.final)}
        if frame.figure is not None or frame.final:
            update[self.plot] = plot_value(frame.figure)
        if not frame.final:
            return update
        sess.history.append((req.text, frame.reply.answer))
        sess.chat, sess.recording, sess.running = update[self.chatbot], rec, False
        sess.think, sess.system = req.think, req.system
        sess.model_label = model_label  # the recording's model, whatever is selected later
        sess.fresh = True
        n = len(rec.steps)
        return update | {self.replay_row: gr.Column(visible=True),
                         self.replay: gr.Slider(minimum=1, maximum=max(n, 2), value=n), **self._buttons(running=False),
                         self.session: sess}

    def make_link(self, text: str | None, think: str, system: str | None, *values: object) -> gr.Textbox:
        """A link to the question in the message box (else the last one asked) with the current settings."""
        *settings, large, sess = values
        asked = sess.history[-1][0] if isinstance(sess, Session) and sess.history else ""
        try:
            query = link_query((text or "").strip() or asked, think, system, tuple(settings), bool(large))
        except ValueError as e:
            return gr.Textbox(value=f"No link: {e}", visible=True)
        return gr.Textbox(value=query, visible=True)

    def from_link(self, request: gr.Request) -> dict:
        """The page opened from a link: its question and settings in the controls, and what was wrong with it."""
        query = dict(request.query_params) if request is not None else {}
        values, problems, changes = read_link(query, self.models.max_new_tokens(self.models.default)[0])
        controls = {"prompt": self.prompt, "think": self.think, "system": self.system, "large": self.large,
                    **dict(zip(LINK_SETTINGS, self.settings, strict=True))}
        update: dict = {controls[name]: value for name, value in values.items()}
        given = {name: values[name] for name in LINK_SETTINGS if name in values}
        if given:
            update[self.preset] = preset_of(given)
        # The settings stay folded (open, they pushed the question a screen down); the notice says what was set.
        said = [link_settings_said(values)] if given else []
        if "system" in values:
            said.append("It set a system message (Decoding settings).")
        if problems or changes:
            heading = "This page's link was not taken whole." if problems else "This page's link was taken, so:"
            said = [heading, *problems, *changes, *said]
        if said:
            update[self.notice] = message_html(" ".join(said), "pg-notice" if problems or changes else INFO)
            # And in a pop-up: the notice is by Generate, often below the first screen of a page just opened.
            (warn if problems or changes else inform)(" ".join(said))
        return update or {self.notice: gr.skip()}  # Gradio answers an empty update with an error (500)

    def compare_with_ar(self, sess: Session, request: gr.Request) -> Iterator[tuple]:
        """Decode the recorded run's prompt again, by its own settings and by AR, one after the other, and show
        both speeds and both runs as lines of tokens against forwards and seconds (the recording is kept). Both are
        timed here and alike: the recorded run was timed while the page drew it, or on another machine."""
        rec = recording_of(sess)
        decoder, refusal = self._rerun_decoder(sess, "comparing")
        if refusal:
            yield self._said(refusal)
            return
        if rec.config.mode == "ar":
            yield self._said("This reply was decoded by AR already: generate one by block diffusion (Decoding "
                             "settings → Mode), then compare.")
            return
        with self.stop_event(request) as stop:
            runs = []
            for name, cfg in (("block diffusion", rec.config), ("AR", replace(rec.config, mode="ar"))):
                yield self._said(f"Decoding the same prompt by {name} ({len(runs) + 1} of 2)…", running=True)
                try:
                    runs.append(rerun(decoder, rec.result.prompt_ids, cfg, stop))
                except Exception as e:
                    yield self._said(rerun_failed(e))
                    return
            (own_steps, own), (ar_steps, ar) = runs
            figure = render.race_figure([("block diffusion", own_steps), ("AR", ar_steps)], rec.stop_ids)
            yield render.comparison_html(own, ar), gr.Plot(value=plot_value(figure), visible=True), *self._idle()

    def sweep_thresholds(self, sess: Session, request: gr.Request) -> Iterator[tuple]:
        """Decode the recorded run's prompt again at other thresholds, the other settings the same."""
        def plans(cfg: DecodeConfig) -> list[SweepPlan] | str:
            if render.commit_threshold(cfg) is None:
                return (f"This run has no threshold ({'AR' if cfg.mode == 'ar' else cfg.algorithm}): generate one "
                        "with confidence_threshold or elastic (Decoding settings), then try.")
            others = [t for t in SWEEP_THRESHOLDS if not math.isclose(t, cfg.threshold)]
            return [SweepPlan(f"{t:g}", f"at threshold {t:g}", replace(cfg, threshold=t), t)
                    for t in sorted([*others, cfg.threshold])]

        yield from self._sweep(sess, request, "trying other thresholds", plans, "threshold")

    def sweep_rules(self, sess: Session, request: gr.Request) -> Iterator[tuple]:
        """Decode the recorded run's prompt again by every commit rule and by AR, the other settings the same."""
        def plans(cfg: DecodeConfig) -> list[SweepPlan]:
            out = []
            for algorithm in ALGORITHMS:
                rule = replace(cfg, mode="diffusion", algorithm=algorithm)
                threshold = render.commit_threshold(rule)
                label = algorithm + ("" if threshold is None else f" {threshold:g}")
                out.append(SweepPlan(label, f"by {label}", rule, threshold))
            return [*out, SweepPlan("AR", "by AR", replace(cfg, mode="ar"), None)]

        yield from self._sweep(sess, request, "trying other rules", plans, "rule")

    def _sweep(self, sess: Session, request: gr.Request, doing: str,
               make_plans: Callable[[DecodeConfig], list[SweepPlan] | str], varies: str) -> Iterator[tuple]:
        """Decode the recorded run's prompt once per plan (a plan with this run's settings is this run, decoded again
        first, so that every row is timed here and alike): a table and a figure of every run in the plans' order.
        Stop keeps the runs finished so far, and this one (as recorded, if it was not decoded again yet)."""
        rec = recording_of(sess)
        decoder, refusal = self._rerun_decoder(sess, doing)
        plans = make_plans(rec.config) if not refusal else []
        if refusal or isinstance(plans, str):
            yield self._said(refusal or plans)
            return
        rows = {i: render.SweepRow(p.label, rec.steps, rec.result, p.threshold, this_run=True)
                for i, p in enumerate(plans) if p.config == rec.config}
        todo = sorted(range(len(plans)), key=lambda i: i not in rows)  # this run first
        with self.stop_event(request) as stop:
            for n, i in enumerate(todo, 1):
                plan = plans[i]
                yield self._said(f"Decoding the same prompt {plan.doing} ({n} of {len(todo)})…", running=True)
                try:
                    steps, result = rerun(decoder, rec.result.prompt_ids, plan.config, stop)
                except Exception as e:
                    yield self._said(rerun_failed(e))
                    return
                if not (i in rows and stop.is_set()):  # this run cut short: it stays as recorded
                    rows[i] = render.SweepRow(plan.label, steps, result, plan.threshold, this_run=i in rows)
                if stop.is_set():
                    break
        table, figure = render.sweep_view([rows[i] for i in sorted(rows)], rec.stop_ids, varies)
        yield table, gr.Plot(value=plot_value(figure), visible=True), *self._idle()

    def _rerun_decoder(self, sess: Session, doing: str) -> tuple[Decoder | None, str | None]:
        """The decoder of the recorded run's model, or why its prompt cannot be decoded again now."""
        rec = recording_of(sess)
        if rec is None or rec.result is None or rec.config is None or sess.running:
            return None, "Generate a reply first, and wait for it to finish."
        try:
            lm, decoder = self.models.get(sess.model_label)
        except ModelLoadError as e:
            return None, str(e)
        if sess.opened == trace.UNNAMED:
            return None, f"This run was opened from a trace that names no model; {doing} needs the model that wrote it."
        if sess.opened is not None and (lm.name != sess.opened or decoder.mask_id != sess.mask_id):
            return None, (f"This run was opened from a trace of {sess.opened}; {doing} needs that model to decode "
                          "again: where this host offers it under Model, choose it and open the trace again.")
        return decoder, None

    @staticmethod
    def _idle() -> tuple:
        return gr.Button(interactive=True), gr.Button(interactive=False)

    def _said(self, text: str, running: bool = False) -> tuple:
        """A message under the run (escaped), the figure hidden, and the buttons: the clicked one and Stop."""
        buttons = (gr.Button(interactive=False), gr.Button(interactive=True)) if running else self._idle()
        return message_html(text, "pg-compare"), gr.skip() if running else gr.Plot(visible=False), *buttons

    def open_trace(self, path: str | None, view_label: str, sess: Session | None, model_label: str | None = None
                   ) -> dict:
        """Replace the conversation with a saved run: its prompt and reply in the chat, its last forward in the
        grid, heatmap and stats, ready to scrub or play, and its settings in the controls, so that a link or a new
        run asks as it did. The file is untrusted: a bad one only gives a notice."""
        sess = sess if isinstance(sess, Session) else Session()
        try:
            if sess.running:
                raise trace.TraceError("A reply is still being written: wait for it (or press Stop), then open "
                                       "the trace.")
            t = trace.load(path)
            options = options_for(view_label)
            frame = build_frame(t.recording, t.token_text, t.mask_id, options, final=True)
        except trace.TraceError as e:
            warn(str(e))
            return {self.notice: message_html(str(e)), self.session: sess}
        except Exception as e:  # a file the checks let through but the drawing cannot take
            log.exception("opening a trace failed")
            message = f"This trace could not be drawn: {type(e).__name__}: {e}"
            warn(message)
            return {self.notice: message_html(message), self.session: sess}
        sess.reset()
        rec = t.recording
        sess.recording, sess.token_text, sess.mask_id = rec, t.token_text, t.mask_id
        sess.opened, sess.options, sess.fresh = t.model or trace.UNNAMED, options, True
        sess.model_label = model_label  # the model that may decode it again, if it is the trace's
        sess.think, sess.system = t.think, t.system
        user = [{"role": "user", "content": render.escape_chat(t.prompt)}] if t.prompt else []
        sess.chat = user + render.assistant_messages(frame.reply, rec.thinking_seconds(), False,
                                                     rec.result.stop_reason)
        sess.history = [(t.prompt, frame.reply.answer)] if t.prompt else []
        n = len(rec.steps)
        controls, outside = self._controls_of(t, model_label)
        note = " ".join([f"Opened a trace of {sess.opened}: {n} forwards, {len(rec.result.tokens)} tokens. Scrub or "
                         "play it below; nothing is recomputed.", *([outside] if outside else [])])
        timer, play = self._pause()
        return {self.chatbot: sess.chat, self.grid: frame.grid, self.plot: plot_value(frame.figure),
                self.stats_box: render.stats_html(frame.stats), self.replay_row: gr.Column(visible=True),
                self.replay: gr.Slider(minimum=1, maximum=max(n, 2), value=n),
                self.notice: message_html(note, "pg-notice" if outside else INFO),
                self.session: sess, self.trace_btn: write_trace(sess, t.model), self.timer: timer,
                self.play_btn: play, self.playing: False} | self._stale() | controls

    def _controls_of(self, t: trace.Trace, model_label: str | None) -> tuple[dict, str]:
        """The controls set as the trace's run was asked (its decoding settings, and its thinking and system message
        when the file says them), and in words what the controls could not hold: a trace may come from the CLI
        or the API, which take more than the page's sliders."""
        values = dict(zip(LINK_SETTINGS, config_values(t.recording.config), strict=True))
        outside = outside_controls(values, self.models.max_new_tokens(model_label)[0])
        for o in outside:
            values[o.name] = o.nearest
        controls = dict(zip(LINK_SETTINGS, self.settings, strict=True))
        update = {controls[name]: value for name, value in values.items() if value is not None}
        asked = {self.think: t.think, self.system: t.system or ""} if t.think is not None else {}
        notes = [f"It ran with {LABELS[o.name]} {shown(o.value)}, which this page's control does not hold (it "
                 f"takes {o.allowed}): "
                 + (f"{shown(o.nearest)} is set." if o.nearest is not None else "left as it was.") for o in outside]
        if t.think is None:
            notes.append("It does not say how the question was asked: Thinking and the system message are left as "
                         "they were.")
        if t.recording.config.fused_commit:
            notes.append("It ran with the fused commit (the command line's option), which this page does not "
                         "offer: Generate decodes by the reference.")
        preset = preset_of({name: value for name, value in values.items() if value is not None})
        return {**update, self.preset: preset, **asked}, " ".join(notes)

    def _stale(self) -> dict:
        """What a new run or Clear makes stale: the comparisons, their figure, the GIF and the link."""
        return {self.compare_out: "", self.race: gr.Plot(visible=False), self.gif: gr.Image(value=None, visible=False),
                self.link_box: gr.Textbox(value="", visible=False)}

    def request_stop(self, request: gr.Request) -> None:
        event = self.stops.get(request.session_hash or "direct")
        if event is not None:
            event.set()  # the engine checks it before every forward

    def clear(self, sess: Session | None, request: gr.Request) -> dict:
        """Clear (and the chat's own trash icon): end a run or a replay, forget the conversation. The session is
        reset in place, because a run that is still streaming holds the same object and checks its epoch."""
        self.request_stop(request)
        sess = sess if isinstance(sess, Session) else Session()  # a first question may be waiting in the queue
        sess.reset()
        sess.clears += 1
        timer, play = self._pause()
        return {self.chatbot: [], self.grid: empty_grid(), self.plot: empty_plot(), self.stats_box: empty_stats(),
                self.replay_row: gr.Column(visible=False), self.notice: message_html(""), self.session: sess,
                self.timer: timer, self.play_btn: play, self.playing: False, self.page_clears: sess.clears
                } | self._stale()

    # -- replay ---------------------------------------------------------------------------------
    def show_step(self, k: float, view_label: str, sess: Session, moving: bool = False) -> tuple:
        """The recorded run after `k` forwards; `moving`: a frame of Play."""
        rec = recording_of(sess)
        if rec is None or not rec.steps or sess.running:
            return gr.skip(), gr.skip(), gr.skip()
        frame = build_frame(rec, sess.token_text or str, sess.mask_id, options_for(view_label), final=True,
                            upto=int(k), moving=moving and int(k) < len(rec.steps))
        return frame.grid, plot_value(frame.figure), render.stats_html(frame.stats)

    def change_view(self, view_label: str, k: float, sess: Session) -> tuple:
        if isinstance(sess, Session):
            new = options_for(view_label)
            sess.options.view, sess.options.colour = new.view, new.colour  # a live run picks it up
        return self.show_step(k, view_label, sess)

    @staticmethod
    def _pause() -> tuple:
        return gr.Timer(active=False), gr.Button("▶ Play")

    @staticmethod
    def _play(speed: float | None) -> tuple:
        return gr.Timer(value=play_interval(speed), active=True), gr.Button("‖ Pause")

    def toggle_play(self, playing: bool, k: float, speed: float, sess: Session) -> tuple:
        rec = recording_of(sess)
        if isinstance(sess, Session):
            sess.plays += 1
        if playing or rec is None:
            return (False, gr.skip(), *self._pause())
        start = 1 if int(k) >= len(rec.steps) else int(k)  # at the end: play from the start
        return True, start, *self._play(speed)

    def trace_file(self, sess: Session | None) -> str | dict | None:
        """The download button's file after a run: the run's trace, naming the model (not the menu label)."""
        if not isinstance(sess, Session) or not sess.fresh:
            return gr.skip()
        return write_trace(sess, self.models.name_of(sess.model_label))

    def gif_file(self, speed: float | None, sess: Session | None) -> gr.Image | dict:
        """The recorded run as a GIF, shown under the buttons (with its own download button)."""
        rec = recording_of(sess)
        try:
            path = None if rec is None or sess.running else write_gif(rec, sess.token_text, sess.mask_id, speed)
        except Exception as e:  # a run the drawing cannot take (an opened trace is any writer's): said, not raised
            log.exception("GIF failed")
            warn(f"This run could not be drawn as a GIF: {type(e).__name__}: {e}")
            return gr.skip()
        if path is None:  # no run yet, one still streaming, or one that failed before its result
            warn("Generate a reply first, and wait for it to finish.")
            return gr.skip()
        return gr.Image(value=path, visible=True)

    def replay_after_run(self, on: bool, speed: float, view_label: str, sess: Session) -> tuple:
        """With slow-motion replay on, play a finished run again from its first forward (not a stopped one, nor
        one slow enough to have been watched as it ran)."""
        rec = recording_of(sess)
        if (not on or rec is None or rec.result is None or len(rec.steps) < 2 or sess.running or not sess.fresh
                or rec.result.stop_reason == "cancelled" or rec.result.seconds > SLOW_REPLAY_MAX_SECONDS):
            return (gr.skip(),) * 7
        sess.fresh = False  # replayed once
        grid_v, plot_v, stats_v = self.show_step(1, view_label, sess)
        return True, 1, grid_v, plot_v, stats_v, *self._play(speed)

    def tick(self, k: float, speed: float, view_label: str, sess: Session, playing: bool = True) -> tuple:
        """One Play frame. Ticks sent before a Pause reached the browser still arrive: they see `playing` (the
        server's copy) false and move nothing, and no tick writes it true again, or the next Play would read it
        as a Pause."""
        rec = recording_of(sess)
        stopped = (gr.skip(), gr.skip(), gr.skip(), gr.skip(), False, *self._pause())
        if not playing or rec is None or not rec.steps or sess.running:
            return stopped
        plays = sess.plays
        per_tick = max(1, round(float(speed or 5) * play_interval(speed)))
        k = min(len(rec.steps), int(k) + per_tick)
        grid_v, plot_v, stats_v = self.show_step(k, view_label, sess, moving=True)
        if sess.plays != plays:  # paused while this frame was drawn: it must not land
            return stopped
        if k >= len(rec.steps):
            return (k, grid_v, plot_v, stats_v, False, *self._pause())
        return (k, grid_v, plot_v, stats_v, gr.skip(), gr.skip(), gr.skip())

    # -- model panel ----------------------------------------------------------------------------
    def choose_model(self, label: str) -> tuple:
        """Load the chosen model; Max new tokens goes up to its context and starts at its default; the teaching
        note, the chat's placeholder and the examples follow the model."""
        try:
            self.models.get(label)
        except ModelLoadError as e:
            warn(str(e))
        top, start = self.models.max_new_tokens(label)
        embedded = self.models.is_embedded(label)
        return (self.models.describe(label), gr.Markdown(visible=embedded), gr.Slider(maximum=top, value=start),
                gr.Chatbot(placeholder=PLACEHOLDER[embedded]),
                *(gr.Row(visible=embedded == teaching) for teaching in self.examples))

    def load_custom(self, source: str | None) -> tuple:
        source = (source or "").strip()
        if not source:
            warn("Give a local folder or a Hugging Face id.")
            return gr.skip(), gr.skip()
        try:
            label = self.models.add_custom(source)
        except ModelLoadError as e:
            warn(str(e))
            return gr.skip(), f"**Not loaded:** {render.escape_markdown(str(e))}"
        return gr.Dropdown(choices=self.models.labels(), value=label), self.models.describe(label)

    # -- the API endpoint -----------------------------------------------------------------------
    def api_generate(self, prompt: str, think: bool | str = True, mode: str = "diffusion",
                     algorithm: str = "confidence_threshold", threshold: float = 0.9,
                     num_small_blocks: int = 1, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                     max_new_tokens: int = 256, seed: int = 0, history: list[list[str]] | None = None,
                     model: str = "", system: str = "") -> Iterator[dict]:
        """Generate a reply by block diffusion (or AR), streamed as it decodes. Streams {"thinking", "answer",
        "stats", "done": false} while decoding; the last message adds "trace" (every forward's record as JSON, as
        the CLI's --trace writes) and "done": true.
        think: True (think first), False (adds /no_think) or "auto" (adds /auto_think: the model decides).
        mode: "diffusion" or "ar" (one token per forward, for comparison).
        algorithm: confidence_threshold (the model card's throughput setting), entropy, low_confidence, topk_margin or
        elastic (this demo's). threshold: confidence_threshold commits every masked position of the small block
        whose confidence is above it (at least the most confident), elastic the leftmost and the unbroken run
        after it above it. num_small_blocks: 1, 2, 4, 8, 16 or 32 per block of 32.
        temperature: 0 = greedy; from 0.01 to 100 samples with seed. top_p (1 = off) and top_k (0 = off): confidence is
        read after the filter. max_new_tokens: up to what the model's context leaves after the prompt.
        history: earlier turns as [[user, answer], ...]. model: a label of the model panel ('' = default).
        system: a system message, put before the chat ('' = none)."""
        try:
            turns = check_history(history)
            if model and not isinstance(model, str):
                raise ValueError(f"model must be a model's label as text (got {type(model).__name__}).")
            if model and model not in self.models.sources:
                raise ValueError(f"Unknown model {model!r}; this host offers: {', '.join(self.models.sources)}.")
            req = self.prepare(prompt, think, (mode, algorithm, threshold, num_small_blocks, temperature, top_p,
                                               top_k, max_new_tokens, seed), model or None, turns, system=system)
        except (ValueError, ModelLoadError, TypeError) as e:
            raise gr.Error(str(e)) from e
        try:
            for frame in stream_frames(req.decoder, req.ids, req.cfg, figures=False):  # the API returns no figures
                out = {"thinking": frame.reply.thinking, "answer": frame.reply.answer, "stats": frame.stats,
                       "done": frame.final}
                if frame.final:
                    out["trace"] = trace.dumps(frame.recording, req.lm.tokenizer.token_text, req.decoder.mask_id,
                                               model=req.lm.name, prompt=req.text, think=req.think,
                                               system=req.system)
                yield out
        except Exception as e:  # the client gets a message, not Gradio's "the upstream app raised an exception"
            log.exception("decoding failed")
            raise gr.Error(f"Decoding failed: {type(e).__name__}: {e}") from e


def build_app(model: str | None = None, allow_custom: bool | None = None, preloaded: LoadedModel | None = None,
              concurrency: int = 2, max_queue: int = 16, dtype: str | None = None,
              slow_replay: bool = True) -> gr.Blocks:
    """The demo. `model`: the host's model (folder or hub id); None = the embedded teaching model.
    `dtype`: weights dtype for every model loaded (None: the loader's choice, see `pick_dtype`).
    `slow_replay`: the default of the "Slow-motion replay after a fast run" box."""
    models = ModelRegistry(model, allow_custom_default() if allow_custom is None else allow_custom,
                           preloaded=preloaded, dtype=dtype)
    with contextlib.suppress(ModelLoadError):  # shown in the model panel; the app still starts
        models.get(models.default)
    return DemoApp(models, concurrency, slow_replay).build(max_queue)


def launch_options() -> dict:
    """Arguments for `launch()`: in Gradio 6 the theme and CSS belong there, not to Blocks."""
    # max_file_size: a larger upload is refused before the server stores it (a public Space takes any file).
    return {"css_paths": [CSS_PATH], "theme": theme(), "head_paths": [HEAD_PATH],
            "max_file_size": trace.MAX_BYTES}


def theme() -> gr.themes.Base:
    """Gradio's Soft theme with darker text and fills (lighter links in dark mode) where its own (indigo 500 on
    indigo 100, slate 400 on white, indigo 500 on slate 800) fall below the 4.5:1 contrast WCAG AA asks of text."""
    return gr.themes.Soft(primary_hue="indigo", neutral_hue="slate").set(
        block_label_text_color="*primary_700", block_title_text_color="*primary_700",
        body_text_color_subdued="*neutral_600",
        button_primary_background_fill="*primary_600", button_primary_background_fill_hover="*primary_700",
        checkbox_label_background_fill_selected="*primary_600",
        link_text_color_dark="*secondary_300", link_text_color_visited_dark="*secondary_300",
        link_text_color_hover_dark="*secondary_200")


def default_threads() -> int:
    """Torch CPU threads for the app: every core but one. The spare core renders frames and serves the page
    while the engine decodes; on 2 cores a streamed run finished sooner with 1 torch thread than with 2."""
    return max(1, (os.cpu_count() or 1) - 1)


def default_model_source() -> str | None:
    env = os.environ.get("PANGU_DEMO_MODEL", "").strip()
    return env or None


__all__ = ["build_app", "launch_options", "EMBEDDED_MODEL"]

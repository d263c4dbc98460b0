"""The Gradio 6 app: chat, live token grid, confidence heatmap, stats, controls, replay, model panel.

Components are wired to `render` (pure HTML / figures / stats) and `streaming` (the decoding loop's
coalesced frames) only. Per-session data lives in gr.State; the Stop flag of a running generation
is kept per browser session (its session hash), so sessions never see each other's runs.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
from gradio.components.plot import PlotData

from . import render
from .chat import prompt_ids
from .engine import ALGORITHMS, DecodeConfig, Decoder, check_context, run, trace_json
from .loading import EMBEDDED_MODEL, GET_OFFICIAL, LoadedModel, ModelLoadError, load_model
from .streaming import FrameOptions, Recording, build_frame, stream_frames

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CSS_PATH = ASSETS / "app.css"
SMALL_BLOCKS = [1, 2, 4, 8, 16, 32]
MAX_PROMPT_CHARS = 20_000
EMBEDDED_LABEL = "Embedded teaching model (assets/model)"
PRESETS = {  # from the openPangu-R-7B-Diffusion model card
    "Throughput": {"algorithm": "confidence_threshold", "threshold": 0.9, "num_small_blocks": 1},
    "Benchmark": {"algorithm": "entropy", "num_small_blocks": 8},
    "Coding": {"algorithm": "entropy", "num_small_blocks": 32, "top_p": 0.8, "temperature": 1.0},
}
# (button label, prompt). Labels stay under 60 characters, where Gradio cuts them; the word problems are ones
# the embedded model answers right by block diffusion at the default settings.
EXAMPLES = [
    ("Add: 74 cows and 54 sheep", "A farm has 74 cows and 54 sheep. How many animals are on the farm?"),
    ("Subtract: 57 coins, 48 spent",
     "Will had 57 coins. He spent 48 coins on a plant. How many coins does he have now?"),
    ("Multiply: 26 tables of 7 chairs",
     "A cafe has 26 tables with 7 chairs at each table. How many chairs are there?"),
    ("Divide: 96 stickers among 8 friends",
     "96 stickers are shared equally among 8 friends. How many stickers does each friend get?"),
    ("Two steps: 43 rolls, 8 sold, 7 bags", "A baker makes 43 rolls. 8 of them are sold and the rest are packed "
                                            "equally into 7 bags. How many rolls are in each bag?"),
    ("Shakespeare on love", "Quote Shakespeare on love."),
    ("Continue Sonnet 18", "Continue this passage:\nShall I compare thee to a summer's day?\nThou art more "
                           "lovely and more temperate:"),
]
TEACHING_NOTE = (
    "**About the default model.** The embedded model is a *small teaching model trained by this project* on "
    "synthetic word problems (with a thinking trace) and Shakespeare. It decodes exactly like "
    "openPangu-R-7B-Diffusion (same format, same block diffusion) but it is tiny (6.5M parameters, about 6 hours "
    "of CPU training). In AR mode it solves most of these word problems; decoded by block diffusion it still "
    "makes more arithmetic mistakes (about 3 in 4 one-step and 3 in 5 two-step problems come out right), "
    "because it sometimes commits a wrong digit in parallel, sure of it or not (the grid marks in red the tokens "
    "committed below the threshold, which go wrong most often). "
    "It learned single questions and two-turn chats only, so press **Clear** before a new question: after a few "
    "turns its replies fall apart. Watch how it decodes, and compare the two modes."
)
HOW_TO_GET = (
    "**To run the real openPangu-R-7B-Diffusion:** " + GET_OFFICIAL.replace("`hf download", "\n`hf download") +
    " Start the app with `python app.py --model ~/models/openPangu-R-7B-Diffusion` (or set "
    "`PANGU_DEMO_MODEL`). A GPU or Ascend NPU is strongly recommended; on a CPU it is very slow."
)


def allow_custom_default() -> bool:
    return os.environ.get("PANGU_DEMO_ALLOW_CUSTOM", "0").lower() in ("1", "true", "yes")


# -- models -------------------------------------------------------------------------------------
class ModelRegistry:
    """The models the host configured (label -> source) and a small cache of loaded ones."""

    def __init__(self, host_model: str | None = None, allow_custom: bool = False, cache_size: int = 2,
                 preloaded: LoadedModel | None = None, dtype: str | None = None):
        self.sources: dict[str, str | None] = {EMBEDDED_LABEL: None}
        self.dtype = dtype  # None: the loader's choice for the device
        self.default = EMBEDDED_LABEL
        if host_model:
            label = f"{Path(host_model).name or host_model} ({host_model})"
            self.sources[label] = host_model
            self.default = label
        self.allow_custom = allow_custom
        self.cache_size = cache_size
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._decoders: dict[str, Decoder] = {}
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}
        if preloaded is not None:
            self._store(self.default, preloaded)

    def labels(self) -> list[str]:
        return list(self.sources)

    def is_embedded(self, label: str | None) -> bool:
        """Whether `label` names the embedded teaching model (also when the host gave its folder)."""
        source = self.sources.get(label if label in self.sources else self.default)
        return source is None or Path(source).expanduser().resolve() == EMBEDDED_MODEL.resolve()

    def add_custom(self, source: str) -> str:
        if not self.allow_custom:
            raise ModelLoadError("This host does not allow loading other models (start the app with "
                                 "--allow-custom-models or PANGU_DEMO_ALLOW_CUSTOM=1).")
        label = f"custom: {source}"
        self.sources[label] = source
        return label

    def _store(self, label: str, lm: LoadedModel) -> None:
        self._loaded[label] = lm
        self._decoders[label] = Decoder(lm.model, lm.tokenizer)
        while len(self._loaded) > self.cache_size:  # bound memory: drop the least recently used
            old, _ = self._loaded.popitem(last=False)
            self._decoders.pop(old, None)

    def get(self, label: str | None) -> tuple[LoadedModel, Decoder]:
        label = label if label in self.sources else self.default
        with self._lock:
            if label not in self._loaded:
                try:
                    self._store(label, load_model(self.sources[label], dtype=self.dtype, progress=False))
                except ModelLoadError as e:
                    self.errors[label] = str(e)
                    raise
                except Exception as e:  # a broken folder must not take the app down
                    self.errors[label] = f"Could not load {label}: {type(e).__name__}: {e}"
                    raise ModelLoadError(self.errors[label]) from e
                self.errors.pop(label, None)
            self._loaded.move_to_end(label)
            return self._loaded[label], self._decoders[label]

    def describe(self, label: str | None) -> str:
        label = label if label in self.sources else self.default
        lm = self._loaded.get(label)
        if lm is not None:
            return (f"**Loaded:** {_md_escape(lm.name)} · {lm.n_params / 1e6:.1f}M parameters · {lm.device.type} · "
                    f"{str(lm.dtype).removeprefix('torch.')} · context {lm.context_length} tokens")
        if label in self.errors:
            return f"**Not loaded:** {_md_escape(self.errors[label])}"
        return f"**{_md_escape(label)}** is loaded on first use."


def _md_escape(text: str) -> str:
    return html.escape(text).replace("*", "\\*").replace("_", "\\_").replace("`", "\\`")


# -- per-session data ---------------------------------------------------------------------------
@dataclass
class Session:
    history: list[tuple[str, str]] = field(default_factory=list)  # (user, answer) for the chat template
    chat: list[dict] = field(default_factory=list)  # the messages shown
    recording: Recording | None = None
    options: FrameOptions = field(default_factory=FrameOptions)
    mask_id: int = 0
    token_text: object = None  # the loaded tokenizer's token_text, for replay
    running: bool = False  # a generation is streaming: replay and view changes must not draw over it
    model_label: str | None = None  # the model of the recorded run, for "Compare with AR"


def make_config(mode: str, algorithm: str, threshold: float, small_blocks: int | str, temperature: float,
                top_p: float, top_k: int | float, max_new_tokens: int | float, seed: int | float) -> DecodeConfig:
    """Controls to a DecodeConfig; raises ValueError (the engine's words) for impossible settings."""
    try:
        cfg = DecodeConfig(mode=str(mode), algorithm=str(algorithm), threshold=float(threshold),
                           num_small_blocks=int(small_blocks), temperature=float(temperature), top_p=float(top_p),
                           top_k=int(top_k), max_new_tokens=int(max_new_tokens), seed=int(seed))
    except (TypeError, ValueError) as e:
        raise ValueError(f"A setting is not a number: {e}") from e
    cfg.validate()
    return cfg


def check_prompt(prompt: str | None) -> str:
    """The message to send, or ValueError with what is wrong with it."""
    if prompt is None or not prompt.strip():
        raise ValueError("Type a message first.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"The message has {len(prompt):,} characters; the limit here is {MAX_PROMPT_CHARS:,}.")
    return prompt


def plot_value(figure: dict | None) -> PlotData | None:
    return None if figure is None else PlotData(type="plotly", plot=json.dumps(figure))


TRACE_DIR = Path(tempfile.gettempdir()) / "pangu-demo-traces"
TRACE_KEEP_SECONDS = 3600


def write_trace(rec: Recording | None, model: str | None) -> str | None:
    """The recorded run as a JSON file (the CLI's --trace format) for the download button; None without a run.
    Trace files older than an hour are removed, so a long-running host does not fill its disk."""
    if rec is None or rec.result is None:
        return None
    TRACE_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in TRACE_DIR.glob("trace-*.json"):
        with contextlib.suppress(OSError):  # another session may remove it first
            if now - old.stat().st_mtime > TRACE_KEEP_SECONDS:
                old.unlink()
    with tempfile.NamedTemporaryFile("w", dir=TRACE_DIR, prefix="trace-", suffix=".json", delete=False,
                                     encoding="utf-8") as f:
        f.write(trace_json(rec.steps, rec.result, model=model))
    return f.name


def empty_grid() -> str:
    """The grid before any run, with the legend of the default settings."""
    return render.grid_html([], 0, str, -1, threshold=render.commit_threshold(DecodeConfig()))


def message_html(text: str, css: str = "pg-notice") -> str:
    """Plain text in a styled box (a notice by default); escaped, since it may quote what the user typed."""
    return f'<div class="{css}">{html.escape(text)}</div>'


# -- the app ------------------------------------------------------------------------------------
def build_app(model: str | None = None, allow_custom: bool | None = None, preloaded: LoadedModel | None = None,
              concurrency: int = 2, max_queue: int = 16, dtype: str | None = None) -> gr.Blocks:
    """The demo. `model`: the host's model (folder or hub id); None = the embedded teaching model.
    `dtype`: weights dtype for every model loaded (None: float32 on CPU, bfloat16 on accelerators)."""
    models = ModelRegistry(model, allow_custom_default() if allow_custom is None else allow_custom,
                           preloaded=preloaded, dtype=dtype)
    with contextlib.suppress(ModelLoadError):  # shown in the model panel; the app still starts
        models.get(models.default)
    stops: dict[str, threading.Event] = {}

    @contextlib.contextmanager
    def stop_event(request: gr.Request) -> Iterator[threading.Event]:
        """The event this session's Stop button sets while the block runs (one decode per session at a time)."""
        key = request.session_hash or "direct"
        event = stops[key] = threading.Event()
        try:
            yield event
        finally:
            if stops.get(key) is event:
                del stops[key]

    with gr.Blocks(title="openPangu block diffusion, live") as demo:
        session = gr.State(None)  # a Session, created by the first generation
        gr.Markdown("# Block diffusion, live: watch a diffusion language model write\n"
                    "openPangu-R-7B-Diffusion writes 32 tokens at a time and fills each block in parallel, "
                    "most confident tokens first. This page shows the real run as it happens: which token "
                    "was decided at which forward pass, how sure the model was, and how many forward passes "
                    "it saved over left-to-right decoding.", elem_id="pg-header")
        # The note describes the embedded model only: it is hidden while another model is selected.
        teaching = gr.Markdown(TEACHING_NOTE + " To load the real model, see **Model** below.",
                               visible=models.is_embedded(models.default), elem_classes=["pg-teaching"],
                               elem_id="pg-teaching")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                chatbot = gr.Chatbot(label="Chat", height=460, buttons=["copy"], elem_id="pg-chat",
                                     render_markdown=False, feedback_options=None, autoscroll=True,
                                     placeholder="Ask a word problem or for some Shakespeare.")
                prompt = gr.Textbox(label="Message", placeholder="Type a message and press Enter", lines=2,
                                    max_lines=8, max_length=MAX_PROMPT_CHARS, elem_id="pg-prompt")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="pg-generate")
                    stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="pg-stop")
                    clear_btn = gr.Button("Clear", elem_id="pg-clear")
                think = gr.Checkbox(value=True, label="Think first (show the thinking trace)",
                                    info="Off adds /no_think: the model answers without a trace.")
                notice = gr.HTML(message_html(""), elem_id="pg-notice")
                # Example buttons fill the prompt in the browser (js, no server round trip): with gr.Examples a
                # Generate click sent before the example's round trip returned went out with the old, empty prompt.
                with gr.Column(elem_id="pg-examples", variant="panel"):
                    gr.Markdown("**Examples** (click one, then Generate)")
                    with gr.Row(elem_classes=["pg-example-row"]):
                        for label, text in EXAMPLES:
                            button = gr.Button(label, size="sm", variant="secondary", scale=0,
                                               elem_classes=["pg-example"])
                            button.click(None, None, [prompt], js=f"() => {json.dumps(text)}", queue=False)
            with gr.Column(scale=7, min_width=480):
                stats_box = gr.HTML(render.stats_html(render.stats([], 0)), elem_id="pg-stats")
                grid = gr.HTML(empty_grid(), elem_id="pg-grid")
                with gr.Row():
                    view = gr.Radio(["Current block", "Whole answer: confidence", "Whole answer: step"],
                                    value="Current block", label="Heatmap view", scale=3,
                                    info="Current block: confidence of every candidate at every denoising "
                                         "forward. Whole answer: when each token was committed.")
                plot = gr.Plot(label="Confidence heatmap", elem_id="pg-heatmap")
                with gr.Column(visible=False, elem_id="pg-replay-row") as replay_row:  # shown after a run
                    with gr.Row():
                        replay = gr.Slider(1, 2, value=1, step=1, label="Replay: forward", scale=4,
                                           info="Scrub through every recorded forward; nothing is recomputed.",
                                           elem_id="pg-replay")
                        speed = gr.Dropdown([1, 2, 5, 10, 20, 50], value=5, label="Speed (forwards/s)", scale=1,
                                            elem_id="pg-speed")
                        play_btn = gr.Button("▶ Play", scale=1, elem_id="pg-play")
                    with gr.Row():
                        compare_btn = gr.Button("Compare with AR", size="sm", elem_id="pg-compare")
                        trace_btn = gr.DownloadButton("Download trace (JSON)", size="sm", elem_id="pg-trace",
                                                      variant="secondary")
                compare_out = gr.HTML("", elem_id="pg-compare-out")
                timer = gr.Timer(0.2, active=False)
        with gr.Accordion("Decoding settings", open=False, elem_id="pg-settings"):
            preset = gr.Radio(list(PRESETS) + ["Custom"], value="Throughput", label="Preset (from the model card)",
                              info="Throughput: confidence_threshold 0.9, 1 small block · Benchmark: entropy, "
                                   "8 small blocks · Coding: entropy, 32 small blocks, top_p 0.8, T 1.")
            with gr.Row():
                mode = gr.Radio([("Block diffusion", "diffusion"), ("Autoregressive (AR)", "ar")], value="diffusion",
                                label="Mode", info="AR decodes one token per forward, for comparison.")
                algorithm = gr.Dropdown(list(ALGORITHMS), value="confidence_threshold", label="Algorithm",
                                        elem_id="pg-algorithm",
                                        info="How confidence is measured and how many tokens a forward commits. "
                                             "elastic is this demo's extension, not the reference's.")
                threshold = gr.Slider(0.5, 1.0, value=0.9, step=0.01, label="Threshold", elem_id="pg-threshold",
                                      info="Commit every masked position whose confidence is above this.")
                small_blocks = gr.Dropdown(SMALL_BLOCKS, value=1, label="Small blocks per block",
                                           info="The 32-token block is filled small block by small block, "
                                                "left to right.")
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature",
                                        info="0 = greedy (deterministic).")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p", info="1 = off.")
                top_k = gr.Slider(0, 200, value=0, step=1, label="top_k", info="0 = off.")
                max_new = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens", elem_id="pg-max-new")
                seed = gr.Number(0, precision=0, label="Seed", info="Same seed + settings = same answer.")
        with gr.Accordion("Model", open=False, elem_id="pg-model"):
            model_info = gr.Markdown(models.describe(models.default))
            model_choice = gr.Dropdown(models.labels(), value=models.default, label="Model",
                                       info="The models this host offers.", elem_id="pg-model-choice")
            with gr.Row(visible=models.allow_custom):
                custom_source = gr.Textbox(label="Local folder or Hugging Face id", scale=4,
                                           placeholder="~/models/openPangu-R-7B-Diffusion")
                custom_btn = gr.Button("Load", scale=1)
            if not models.allow_custom:
                gr.Markdown("Loading other models is turned off on this host (start the app with "
                            "`--allow-custom-models` or `PANGU_DEMO_ALLOW_CUSTOM=1` to allow it).")
            gr.Markdown(HOW_TO_GET)

        settings = [mode, algorithm, threshold, small_blocks, temperature, top_p, top_k, max_new, seed]

        # -- generation -------------------------------------------------------------------------
        def options_for(view_label: str) -> FrameOptions:
            if view_label == "Current block":
                return FrameOptions("block")
            return FrameOptions("answer", "step" if view_label.endswith("step") else "confidence")

        def generate(text, think_on, mode_v, alg, thr, sb, temp, tp, tk, mx, sd, model_label, view_label,
                     sess: Session, request: gr.Request):
            sess = sess if isinstance(sess, Session) else Session()
            skip = gr.skip()
            try:
                text = check_prompt(text)
                cfg = make_config(mode_v, alg, thr, sb, temp, tp, tk, mx, sd)
                lm, decoder = models.get(model_label)
                ids = prompt_ids(lm.tokenizer, sess.history, text, bool(think_on))
                check_context(len(ids), cfg, lm.context_length)
            except (ValueError, ModelLoadError) as e:  # the conversation may need Clear to fit again
                gr.Warning(str(e))
                yield skip, skip, skip, skip, skip, skip, message_html(str(e)), skip, skip, skip, skip
                return
            with stop_event(request) as stop:
                sess.options = options_for(view_label)
                sess.mask_id, sess.token_text = decoder.mask_id, lm.tokenizer.token_text
                sess.running = True
                base = sess.chat + [{"role": "user", "content": render.escape_chat(text)}]
                busy = (gr.Button(interactive=False), gr.Button(interactive=True))
                # The session goes out now, so that the view switch reaches this run's options.
                pending = base + [{"role": "assistant", "content": "…"}]
                # The last run's figures go at once: its "finished" must not stand beside the new prompt.
                starting = render.stats_html(render.stats([], 0), live=True)
                yield pending, skip, skip, starting, gr.Column(visible=False), skip, message_html(""), "", *busy, sess
                try:
                    for frame in stream_frames(decoder, ids, cfg, stop, options=sess.options):
                        rec = frame.recording
                        chat = base + render.assistant_messages(frame.reply, rec.thinking_seconds(), not frame.final)
                        stats_v = render.stats_html(frame.stats, live=not frame.final)
                        if not frame.final:
                            yield (chat, frame.grid, plot_value(frame.figure) if frame.figure else skip, stats_v,
                                   skip, skip, skip, skip, skip, skip, skip)
                            continue
                        sess.history.append((text, frame.reply.answer))
                        sess.chat, sess.recording, sess.running = chat, rec, False
                        sess.model_label = model_label  # the recording's model, whatever is selected later
                        n = len(rec.steps)
                        yield (chat, frame.grid, plot_value(frame.figure), stats_v, gr.Column(visible=True),
                               gr.Slider(minimum=1, maximum=max(n, 2), value=n), skip, skip,
                               gr.Button(interactive=True), gr.Button(interactive=False), sess)
                except ValueError as e:  # the engine's own check of the settings
                    gr.Warning(str(e))
                    yield (sess.chat, skip, skip, skip, skip, skip, message_html(str(e)), text,
                           gr.Button(interactive=True), gr.Button(interactive=False), sess)
                finally:
                    sess.running = False

        gen_outputs = [chatbot, grid, plot, stats_box, replay_row, replay, notice, prompt, generate_btn, stop_btn,
                       session]
        gr.on([generate_btn.click, prompt.submit], generate,
              inputs=[prompt, think, *settings, model_choice, view, session], outputs=gen_outputs,
              api_name="ui_generate", api_visibility="private", concurrency_limit=concurrency,
              concurrency_id="decode").then(
            lambda sess: write_trace(sess.recording, sess.model_label) if isinstance(sess, Session) else None,
            [session], [trace_btn], api_visibility="private", show_progress="hidden")

        # A new run makes the last comparison stale.
        gr.on([generate_btn.click, prompt.submit], lambda: "", None, [compare_out], queue=False,
              show_progress="hidden", api_visibility="private")

        def compare_with_ar(sess: Session, request: gr.Request):
            """Decode the recorded run's prompt again by AR and show both speeds (the recording is kept)."""
            rec = sess.recording if isinstance(sess, Session) else None
            idle = (gr.Button(interactive=True), gr.Button(interactive=False))
            if rec is None or rec.result is None or rec.config is None or sess.running:
                yield message_html("Generate a reply first, and wait for it to finish.", "pg-compare"), *idle
                return
            if rec.config.mode == "ar":
                yield message_html("This reply was decoded by AR already: generate one by block diffusion "
                                   "(Decoding settings → Mode), then compare.", "pg-compare"), *idle
                return
            try:
                _, decoder = models.get(sess.model_label)
            except ModelLoadError as e:
                yield message_html(str(e), "pg-compare"), *idle
                return
            with stop_event(request) as stop:
                yield (message_html("Decoding the same prompt by AR…", "pg-compare"), gr.Button(interactive=False),
                       gr.Button(interactive=True))
                _, ar = run(decoder, rec.result.prompt_ids, replace(rec.config, mode="ar"), stop)
                yield render.comparison_html(rec.result, ar), *idle

        compare_btn.click(compare_with_ar, [session], [compare_out, compare_btn, stop_btn], api_visibility="private",
                          concurrency_limit=concurrency, concurrency_id="decode")

        def request_stop(request: gr.Request) -> None:
            event = stops.get(request.session_hash or "direct")
            if event is not None:
                event.set()  # the engine checks it before every forward

        stop_btn.click(request_stop, None, None, queue=False, api_visibility="private")

        def clear(request: gr.Request):
            request_stop(request)  # clearing during a run also ends it
            return ([], empty_grid(), None, render.stats_html(render.stats([], 0)),
                    gr.Column(visible=False), message_html(""), None, gr.Timer(active=False), "")

        clear_btn.click(clear, None, [chatbot, grid, plot, stats_box, replay_row, notice, session, timer,
                                      compare_out], api_visibility="private")

        # -- replay -----------------------------------------------------------------------------
        def show_step(k, view_label, sess: Session):
            rec = sess.recording if isinstance(sess, Session) else None
            if rec is None or not rec.steps or sess.running:
                return gr.skip(), gr.skip(), gr.skip()
            frame = build_frame(rec, sess.token_text or str, sess.mask_id, options_for(view_label), final=True,
                                upto=int(k))
            return frame.grid, plot_value(frame.figure), render.stats_html(frame.stats)

        replay.input(show_step, [replay, view, session], [grid, plot, stats_box], api_visibility="private",
                     trigger_mode="always_last", show_progress="hidden")

        def change_view(view_label, k, sess: Session):
            if isinstance(sess, Session):
                new = options_for(view_label)
                sess.options.view, sess.options.colour = new.view, new.colour  # a live run picks it up
            return show_step(k, view_label, sess)

        view.change(change_view, [view, replay, session], [grid, plot, stats_box], api_visibility="private")

        def interval(speed_v) -> float:
            return max(0.1, 1.0 / float(speed_v or 5))

        def pause():
            return gr.Timer(active=False), gr.Button("▶ Play")

        play_state = gr.State(False)

        def toggle(playing, k, speed_v, sess: Session):
            rec = sess.recording if isinstance(sess, Session) else None
            if playing or rec is None:
                return (False, gr.skip(), *pause())
            start = 1 if int(k) >= len(rec.steps) else int(k)  # at the end: play from the start
            return True, start, gr.Timer(value=interval(speed_v), active=True), gr.Button("⏸ Pause")

        play_btn.click(toggle, [play_state, replay, speed, session], [play_state, replay, timer, play_btn],
                       api_visibility="private")

        def tick(k, speed_v, view_label, sess: Session):
            rec = sess.recording if isinstance(sess, Session) else None
            if rec is None or not rec.steps or sess.running:
                return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), False, *pause())
            per_tick = max(1, round(float(speed_v or 5) * interval(speed_v)))
            k = min(len(rec.steps), int(k) + per_tick)
            grid_v, plot_v, stats_v = show_step(k, view_label, sess)
            if k >= len(rec.steps):
                return (k, grid_v, plot_v, stats_v, False, *pause())
            return (k, grid_v, plot_v, stats_v, True, gr.skip(), gr.skip())

        timer.tick(tick, [replay, speed, view, session], [replay, grid, plot, stats_box, play_state, timer, play_btn],
                   api_visibility="private", show_progress="hidden")
        speed.change(lambda s, playing: gr.Timer(value=interval(s), active=bool(playing)), [speed, play_state],
                     [timer], api_visibility="private")

        # -- controls that apply ----------------------------------------------------------------
        def applicable(mode_v, alg):
            diffusion = mode_v == "diffusion"
            return (gr.Dropdown(visible=diffusion), gr.Slider(visible=diffusion and alg in (
                "confidence_threshold", "elastic")), gr.Dropdown(visible=diffusion))

        for trigger in (mode.change, algorithm.change):
            trigger(applicable, [mode, algorithm], [algorithm, threshold, small_blocks], api_visibility="private")

        def apply_preset(name):
            p = PRESETS.get(name)
            if p is None:
                return [gr.skip()] * 6
            return ("diffusion", p["algorithm"], p.get("threshold", gr.skip()), p["num_small_blocks"],
                    p.get("temperature", 0.0), p.get("top_p", 1.0))

        preset.input(apply_preset, [preset], [mode, algorithm, threshold, small_blocks, temperature, top_p],
                     api_visibility="private")

        # -- model panel --------------------------------------------------------------------------
        def choose_model(label):
            try:
                models.get(label)
            except ModelLoadError as e:
                gr.Warning(str(e))
            return models.describe(label), gr.Markdown(visible=models.is_embedded(label))

        model_choice.change(choose_model, [model_choice], [model_info, teaching], api_visibility="private")

        def load_custom(source):
            source = (source or "").strip()
            if not source:
                gr.Warning("Give a local folder or a Hugging Face id.")
                return gr.skip(), gr.skip()
            try:
                label = models.add_custom(source)
                models.get(label)
            except ModelLoadError as e:
                gr.Warning(str(e))
                return gr.skip(), f"**Not loaded:** {_md_escape(str(e))}"
            return gr.Dropdown(choices=models.labels(), value=label), models.describe(label)

        custom_btn.click(load_custom, [custom_source], [model_choice, model_info], api_visibility="private")

        # -- the API endpoint ---------------------------------------------------------------------
        def api_generate(prompt: str, think: bool = True, mode: str = "diffusion",
                         algorithm: str = "confidence_threshold", threshold: float = 0.9,
                         num_small_blocks: int = 1, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                         max_new_tokens: int = 256, seed: int = 0, history: list | None = None,
                         model: str = "") -> Iterator[dict]:
            """Generate a reply. Streams {"thinking", "answer", "stats", "done": false} while decoding; the last
            message adds "trace" (the JSON of every step record, as the CLI's --trace writes) and "done": true.
            history: earlier turns as [[user, answer], ...]. model: a label of the model panel ('' = default)."""
            try:
                text = check_prompt(prompt)
                cfg = make_config(mode, algorithm, threshold, num_small_blocks, temperature, top_p, top_k,
                                  max_new_tokens, seed)
                lm, decoder = models.get(model or None)
                turns = [(str(u), str(a)) for u, a in (history or [])]
                ids = prompt_ids(lm.tokenizer, turns, text, bool(think))
                check_context(len(ids), cfg, lm.context_length)
            except (ValueError, ModelLoadError, TypeError) as e:
                raise gr.Error(str(e)) from e
            for frame in stream_frames(decoder, ids, cfg, figures=False):  # the API returns no figures
                out = {"thinking": frame.reply.thinking, "answer": frame.reply.answer, "stats": frame.stats,
                       "done": frame.final}
                if frame.final:
                    out["trace"] = trace_json(frame.steps, frame.result, model=lm.name)
                yield out

        gr.api(api_generate, api_name="generate", concurrency_limit=concurrency, concurrency_id="decode")

    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    return demo


def launch_options() -> dict:
    """Arguments for `launch()`: in Gradio 6 the theme and CSS belong there, not to Blocks."""
    return {"css_paths": [CSS_PATH], "theme": gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")}


def default_threads() -> int:
    """Torch CPU threads for the app: every core but one. The spare core renders frames and serves the page
    while the engine decodes; on 2 cores a streamed run finished sooner with 1 torch thread than with 2."""
    return max(1, (os.cpu_count() or 1) - 1)


def default_model_source() -> str | None:
    env = os.environ.get("PANGU_DEMO_MODEL", "").strip()
    return env or None


__all__ = ["build_app", "launch_options", "EMBEDDED_MODEL"]

"""The UI's streaming path, free of any UI framework.

`stream_frames` runs `Decoder.generate` in a worker thread that records every step (for replay),
and yields coalesced frames to the caller: at most `max_fps` per second, each showing the latest
state, and always the final one. The decoding loop never waits for the consumer (the browser, or
Gradio serialising a frame): frames are built from whatever has been recorded when the consumer
is ready, and the plotly figure, the expensive part, even less often. The benchmark times this
path against the engine alone.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import render
from .chat import THINK_END, THINK_START, Reply
from .engine import DecodeConfig, Decoder, Result, Step

# Blocks the whole-reply view draws in a moving frame. Chromium redraws a few hundred markers at the figure rate
# with time to spare, thousands not: an 8,128-token run with that view open took 213 s with every block drawn
# (the page stalled for over a minute), 74 s with 32 (stalls of seconds) and 62-74 s with 8 (the page answering).
ANSWER_BLOCKS_MOVING = 8


@dataclass
class Recording:
    """Everything a run produced; shared by the frames of one run and kept for replay."""

    steps: list[Step] = field(default_factory=list)
    result: Result | None = None
    config: DecodeConfig | None = None
    stop_ids: tuple[int, ...] = ()  # what ends the reply: the figures count no padding after it
    think_start: float | None = None  # elapsed seconds when the trace opened / closed
    think_end: float | None = None

    @property
    def settings(self) -> DecodeConfig:
        """The run's config, or the engine's defaults for a recording made without one."""
        return self.config or DecodeConfig()

    def thinking_seconds(self) -> float | None:
        if self.think_start is None:
            return None
        end = self.think_end if self.think_end is not None else (
            self.steps[-1].elapsed if self.steps else self.think_start)
        return end - self.think_start

    def add(self, item: Step | Result) -> None:
        """File the engine's next yield: a step (noting when the thinking trace opens and closes) or the result."""
        if isinstance(item, Result):
            self.result = item
            return
        self.steps.append(item)
        if self.think_start is None and THINK_START in item.text:
            self.think_start = item.elapsed
        if self.think_start is not None and self.think_end is None and THINK_END in item.text:
            self.think_end = item.elapsed


@dataclass
class Frame:
    recording: Recording
    upto: int  # steps shown (= forwards so far)
    final: bool
    grid: str
    figure: dict | None  # None: the figure did not change since the previous frame
    stats: dict
    reply: Reply

    @property
    def steps(self) -> list[Step]:
        return self.recording.steps

    @property
    def result(self) -> Result | None:
        return self.recording.result


@dataclass
class FrameOptions:
    """What the frames show; mutable so that the UI can switch the heatmap view mid-run."""

    view: str = "block"  # "block" | "answer"
    colour: str = "confidence"  # colour of the answer view: "confidence" | "step"


def build_frame(rec: Recording, token_text: render.TokenText, mask_id: int, options: FrameOptions,
                final: bool, with_figure: bool = True, upto: int | None = None, moving: bool | None = None) -> Frame:
    """Render the state after `upto` forwards (default: the latest recorded) for the grid, stats and chat
    split, and the figure when asked. `final`: the run is over, so the last state shows its result. `moving`
    (default: not final): frames follow each other quickly (a live run, Play), so the whole-reply view draws
    only the newest blocks."""
    cfg = rec.settings
    steps = rec.steps[:]  # the worker thread may append while we render
    upto = render.clamp_upto(steps, upto)
    threshold = render.commit_threshold(cfg)
    result = rec.result if final and upto == len(steps) else None
    # Once: it walks every step so far.
    blocks = render.block_states(steps, upto, threshold, rec.stop_ids, ar=cfg.mode == "ar")
    small_blocks = cfg.num_small_blocks if cfg.mode == "diffusion" else 1
    grid = render.grid_html(steps, upto, token_text, mask_id, num_small_blocks=small_blocks, threshold=threshold,
                            run_over=result is not None, stop_ids=rec.stop_ids, blocks=blocks, stepper=final)
    moving = not final if moving is None else moving
    figure = render.heatmap_figure(steps, upto, options.view, token_text, options.colour, threshold, rec.stop_ids,
                                   ANSWER_BLOCKS_MOVING if moving else None, blocks,
                                   small_blocks) if with_figure else None
    stats = render.stats(steps, upto, result, cfg.max_new_tokens, cfg.block_length, threshold, rec.stop_ids)
    reply = render.reply_at(steps, upto, result)
    return Frame(rec, upto, final, grid, figure, stats, reply)


def stream_frames(decoder: Decoder, prompt_ids: list[int], config: DecodeConfig,
                  stop_event: threading.Event | None = None, max_fps: float = 20.0, figure_fps: float = 4.0,
                  options: FrameOptions | None = None, token_text: render.TokenText | None = None,
                  figures: bool = True) -> Iterator[Frame]:
    """Decode and yield coalesced frames; the last one is final (result set, figure rendered unless
    `figures` is False).

    Raises the engine's ValueError for impossible settings before any frame.
    """
    options = options or FrameOptions()
    token_text = token_text or functools.cache(decoder.tok.token_text)  # few distinct tokens per run
    rec = Recording(config=config, stop_ids=decoder.stop_ids(config))
    gen = decoder.generate(prompt_ids, config, stop_event)
    rec.add(next(gen))  # in the caller's thread: impossible settings raise here, before any frame
    worker = _Worker(gen, rec)
    frame_gap, figure_gap = 1.0 / max_fps, 1.0 / figure_fps
    last_figure, shown = float("-inf"), 0
    try:
        while not worker.done.wait(frame_gap):
            if len(rec.steps) == shown:  # nothing new (a slow forward): no frame
                continue
            shown = len(rec.steps)
            now = time.monotonic()
            with_figure = figures and now - last_figure >= figure_gap
            if with_figure:
                last_figure = now
            yield build_frame(rec, token_text, decoder.mask_id, options, final=False, with_figure=with_figure)
        worker.finish()
        yield build_frame(rec, token_text, decoder.mask_id, options, final=True, with_figure=figures)
    finally:
        worker.finish()  # on Stop, an error or a closed consumer: the engine ends and frees its cache


class _Worker(threading.Thread):
    """Drives the engine to the end, recording each step; stops early when the consumer goes away."""

    def __init__(self, gen: Iterator[Step | Result], rec: Recording) -> None:
        super().__init__(daemon=True, name="decoding")
        self.gen, self.rec = gen, rec
        self.done, self.closing = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for item in self.gen:
                self.rec.add(item)
                if self.closing.is_set():
                    break
        except BaseException as exc:  # handed to the consumer's thread by finish()
            self.error = exc
        finally:
            self.gen.close()
            self.done.set()

    def finish(self) -> None:
        """Wait for the engine to end (asking it to stop if it is still running) and re-raise its error."""
        self.closing.set()  # only matters if the run is not over: the consumer has gone away
        self.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


"""The UI's streaming path: every step recorded, frames coalesced, the final state always sent, Stop."""

from __future__ import annotations

import threading
import time

import pytest

from pangu_demo.engine import DecodeConfig, Decoder, Result, run
from pangu_demo.streaming import FrameOptions, stream_frames

LONG = DecodeConfig(max_new_tokens=96, num_small_blocks=32, stop_ids=())  # 31 denoising forwards per block


@pytest.fixture(scope="module")
def decoder(tiny_checkpoint):
    from pangu_demo.loading import load_model

    lm = load_model(tiny_checkpoint, progress=False)
    return Decoder(lm.model, lm.tokenizer)


class SlowDecoder:
    """Wraps a decoder so that each forward takes a known minimum time, and records generator closing."""

    def __init__(self, inner: Decoder, delay: float):
        self.inner, self.delay = inner, delay
        self.tok, self.mask_id, self.stop_ids = inner.tok, inner.mask_id, inner.stop_ids
        self.closed = False

    def generate(self, prompt_ids, config=None, stop_event=None):
        try:
            for item in self.inner.generate(prompt_ids, config, stop_event):
                time.sleep(self.delay)
                yield item
        finally:
            self.closed = True


def test_every_step_recorded_and_final_frame_matches_engine(decoder):
    prompt = decoder.tok.encode("Shall I compare thee")
    steps, result = run(decoder, prompt, LONG)
    frames = list(stream_frames(decoder, prompt, LONG, max_fps=1000))
    last = frames[-1]
    assert last.final and all(not f.final for f in frames[:-1])
    assert isinstance(last.result, Result) and last.result.tokens == result.tokens
    assert len(last.steps) == len(steps) == result.nfe
    assert [s.committed for s in last.steps] == [s.committed for s in steps]
    assert last.upto == len(last.steps) and last.figure is not None
    assert last.stats["nfe"] == result.nfe and last.stats["stop_reason"] == "length"


def test_frames_are_coalesced(decoder):
    prompt = decoder.tok.encode("Hello")
    cfg = DecodeConfig(max_new_tokens=64, num_small_blocks=32, stop_ids=())
    start = time.monotonic()
    frames = list(stream_frames(SlowDecoder(decoder, delay=0.01), prompt, cfg, max_fps=10, figure_fps=2))
    seconds = time.monotonic() - start
    n_steps = len(frames[-1].steps)
    assert n_steps > 40
    assert len(frames) <= seconds * 10 + 2  # at most max_fps frames per second, plus the final one
    assert len(frames) < n_steps / 5
    with_figure = [f for f in frames[:-1] if f.figure is not None]
    assert len(with_figure) <= seconds * 2 + 1  # the figure at most figure_fps times a second
    assert frames[-1].figure is not None
    # Each frame shows the latest state at the time it was built: the step count only grows.
    uptos = [f.upto for f in frames]
    assert uptos == sorted(uptos) and uptos[-1] == n_steps


def test_the_engine_does_not_wait_for_a_slow_consumer(decoder):
    """While the consumer is busy with a frame (Gradio sending it to the browser), decoding goes on."""
    prompt = decoder.tok.encode("Hello")
    cfg = DecodeConfig(max_new_tokens=64, num_small_blocks=32, stop_ids=())
    frames = stream_frames(SlowDecoder(decoder, delay=0.002), prompt, cfg, max_fps=1000)
    first = next(frames)
    time.sleep(0.5)  # the consumer is busy; 0.5 s is room for far more than 10 forwards of 2 ms
    second = next(frames)
    assert second.upto >= first.upto + 10
    frames.close()


def test_stop_ends_within_one_forward_and_keeps_the_text(decoder):
    slow = SlowDecoder(decoder, delay=0.005)
    stop = threading.Event()
    cfg = DecodeConfig(max_new_tokens=448, num_small_blocks=32, stop_ids=())
    frames = []
    for frame in stream_frames(slow, decoder.tok.encode("Hello"), cfg, stop, max_fps=1000):
        frames.append(frame)
        if len(frames) == 20:
            stop.set()
            at_stop = len(frame.steps)
    last = frames[-1]
    assert last.final and last.result.stop_reason == "cancelled"
    assert len(last.steps) <= at_stop + 1  # at most the forward already under way
    assert last.result.nfe == len(last.steps)
    assert last.steps[-1].text == last.result.text or last.result.text.startswith(last.steps[-2].text)
    assert slow.closed


def test_closing_the_consumer_closes_the_engine(decoder):
    slow = SlowDecoder(decoder, delay=0.0)
    frames = stream_frames(slow, decoder.tok.encode("Hello"), LONG, max_fps=1000)
    next(frames)
    next(frames)
    frames.close()
    assert slow.closed


def test_impossible_settings_raise_the_engines_message(decoder):
    with pytest.raises(ValueError, match="num_small_blocks must divide"):
        next(stream_frames(decoder, [1, 2], DecodeConfig(num_small_blocks=3)))


def test_view_switch_mid_run(decoder):
    options = FrameOptions("block")
    seen = []
    for frame in stream_frames(decoder, decoder.tok.encode("Hi"), LONG, max_fps=1000, figure_fps=1000,
                               options=options):
        if frame.figure is not None and frame.figure["data"]:  # the first frame (prefill only) has no data
            seen.append(frame.figure["data"][0]["type"])
        if len(seen) == 5:
            options.view = "answer"
    assert seen[0] == "heatmap" and seen[-1] == "scatter"  # the answer view is a scatter of committed tokens

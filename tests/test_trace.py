"""Trace files: a saved run replays exactly without its model, and a bad file is refused in plain words."""

from __future__ import annotations

import json

import pytest

from pangu_demo import trace
from pangu_demo.chat import prompt_ids
from pangu_demo.engine import DecodeConfig, Decoder
from pangu_demo.loading import load_model
from pangu_demo.streaming import FrameOptions, Recording, build_frame, stream_frames

PROMPT = "A farm has 72 cows and 45 sheep. How many animals are on the farm?"


@pytest.fixture(scope="module")
def embedded():
    return load_model(None, dtype="float32", progress=False)


@pytest.fixture(scope="module")
def recorded(embedded) -> Recording:
    """A finished run of the embedded model, with a thinking trace (so the thought's timing is saved too)."""
    decoder = Decoder(embedded.model, embedded.tokenizer)
    ids = prompt_ids(embedded.tokenizer, [], PROMPT, True)
    *_, last = stream_frames(decoder, ids, DecodeConfig(max_new_tokens=96), figures=False)
    assert last.recording.think_start is not None
    return last.recording


@pytest.fixture(scope="module")
def saved(embedded, recorded) -> str:
    return trace.dumps(recorded, embedded.tokenizer.token_text, 5, model="pangu-demo-tiny", prompt=PROMPT)


def test_a_saved_run_replays_the_same_without_its_model(embedded, recorded: Recording, saved: str) -> None:
    t = trace.loads(saved)
    rec = t.recording
    assert (rec.steps, rec.result, rec.config, rec.stop_ids) == (recorded.steps, recorded.result, recorded.config,
                                                                 recorded.stop_ids)
    assert rec.thinking_seconds() == recorded.thinking_seconds()
    assert (t.model, t.prompt, t.mask_id) == ("pangu-demo-tiny", PROMPT, 5)
    ids = {tok for s in recorded.steps for tok in s.block_tokens + [c for c, _ in s.candidates.values()]}
    assert {i: t.token_text(i) for i in ids} == {i: embedded.tokenizer.token_text(i) for i in ids}
    # What the page draws from the file is what it drew from the run, at every forward and in every view.
    for view, colour in (("block", "confidence"), ("answer", "step")):
        options = FrameOptions(view, colour)
        for upto in range(1, len(recorded.steps) + 1):
            a = build_frame(recorded, embedded.tokenizer.token_text, 5, options, final=True, upto=upto)
            b = build_frame(rec, t.token_text, 5, options, final=True, upto=upto)
            assert (a.grid, a.figure, a.stats, a.reply) == (b.grid, b.figure, b.stats, b.reply)


def test_only_the_tokens_a_run_mentions_are_saved(embedded, saved: str) -> None:
    pieces = json.loads(saved)["tokens"]
    assert 0 < len(pieces) < embedded.tokenizer.vocab_size // 4


def test_token_text_from_a_file_is_drawn_as_text(saved: str) -> None:
    data = json.loads(saved)
    first = data["steps"][-1]["block_tokens"][0]
    data["tokens"][str(first)] = '<img src=x onerror="alert(1)">'
    t = trace.loads(json.dumps(data))
    grid = build_frame(t.recording, t.token_text, t.mask_id, FrameOptions(), final=True).grid
    assert "<img" not in grid and "&lt;img src=x" in grid


def test_drawing_an_opened_trace_keeps_no_trace_alive(saved: str) -> None:
    # The grid's row cache is global and keeps its token_text; a public page must not keep every opened file.
    import gc
    import weakref

    t = trace.loads(saved)
    build_frame(t.recording, t.token_text, t.mask_id, FrameOptions(), final=True)
    gone = weakref.ref(t.recording)
    del t
    gc.collect()
    assert gone() is None


def test_an_unfinished_run_cannot_be_saved(recorded: Recording) -> None:
    with pytest.raises(ValueError, match="finished"):
        trace.dumps(Recording(steps=recorded.steps), str, 5)


def _edit(saved: str, change) -> str:
    data = json.loads(saved)
    change(data)
    return json.dumps(data)


def _set_step(field: str, value):
    return lambda d: d["steps"][1].__setitem__(field, value)


BAD = {
    "not JSON": (lambda s: s[:-10], "not valid JSON"),
    "format 1": (lambda s: _edit(s, lambda d: d.update(version=1)), "it says format 1"),
    "JSON of another kind": (lambda s: "[1, 2, 3]", "holds JSON, but not a trace's fields"),
    "no steps": (lambda s: _edit(s, lambda d: d.update(steps=[])), "damaged: steps is empty"),
    "no result": (lambda s: _edit(s, lambda d: d.pop("result")), "damaged: result is missing"),
    "a field of the wrong type": (lambda s: _edit(s, _set_step("block_tokens", "abc")),
                                  "steps → 1 → block_tokens: input should be a valid"),
    "a position outside the block": (lambda s: _edit(s, lambda d: d["steps"][1]["candidates"].update({"40": [3, 0.5]})),
                                     "does not fit a block"),
    "lengths that disagree": (lambda s: _edit(s, _set_step("committed_confidence", [])), "does not fit a block"),
    "a probability above 1": (lambda s: _edit(s, _set_step("committed_confidence", [1.5] * len(
        json.loads(s)["steps"][1]["committed"]))), "probability"),
    "an unknown kind": (lambda s: _edit(s, _set_step("kind", "guess")), "unknown kind"),
    "impossible settings": (lambda s: _edit(s, lambda d: d["result"]["config"].update(num_small_blocks=3)),
                            "settings are not valid"),
    "an unknown setting": (lambda s: _edit(s, lambda d: d["result"]["config"].update(evil=1)),
                           "unknown setting 'evil'"),
    "text for a number": (lambda s: _edit(s, lambda d: d["result"]["config"].update(threshold="0.9")),
                          "a setting has the wrong type"),
    "blocks of thousands": (lambda s: _edit(s, lambda d: d["result"]["config"].update(block_length=20_000)),
                            "blocks of 20,000 tokens"),
    "a token of a megabyte": (lambda s: _edit(s, lambda d: d["tokens"].update({"5": "x" * 2**20})),
                              "longer than 256 characters"),
    "a negative id": (lambda s: _edit(s, lambda d: d.update(mask_id=-3)), "negative token id"),
    "a negative block": (lambda s: _edit(s, _set_step("block", -1)), "negative block"),
    "an unknown end": (lambda s: _edit(s, lambda d: d["result"].update(stop_reason="<b>bored</b>")),
                       "unknown reason"),
    "a negative duration": (lambda s: _edit(s, lambda d: d["result"].update(seconds=-1.0)), "impossible time"),
}


def test_a_trace_saved_with_a_byte_order_mark_opens(saved: str) -> None:
    assert trace.loads(b"\xef\xbb\xbf" + saved.encode()).recording.result is not None
    assert trace.loads("\ufeff" + saved).recording.result is not None


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_refused_in_plain_words(saved: str, case: str) -> None:
    make, words = BAD[case]
    with pytest.raises(trace.TraceError, match=words):
        trace.loads(make(saved))


def test_a_huge_file_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch, saved: str) -> None:
    monkeypatch.setattr(trace, "MAX_BYTES", 1000)
    with pytest.raises(trace.TraceError, match="at most"):
        trace.loads(saved)


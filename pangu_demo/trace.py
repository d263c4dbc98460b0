"""A recorded run as a self-contained JSON file, to replay later anywhere.

A trace holds every step record, the result, the settings, and the display text of every token it
mentions, so it replays without the model or tokenizer that recorded it: a run of the 7B model on a
GPU can be watched, scrubbed and turned into a GIF on a laptop. Opened files are untrusted input:
`loads` checks types and positions and says in plain words what is wrong.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pydantic

from .engine import DecodeConfig, Result, Step
from .streaming import Recording

VERSION = 2
UNNAMED = "an unnamed model"  # what a trace that names no model is called
MAX_BYTES = 20 * 2**20  # 960 forwards of the teaching model (32 small blocks, all candidates kept) wrote 4.8 MB
KINDS = ("prefill", "denoise", "commit", "fused", "ar")
STOP_REASONS = ("stop_token", "length", "cancelled")
# A hostile file could ask every frame to draw blocks of thousands of cells or tokens of a megabyte: the page and the
# GIF froze on them. The real model's blocks are 32 tokens and its longest pieces a few dozen characters.
MAX_BLOCK = 256
MAX_TOKEN_CHARS = 256


class TraceError(ValueError):
    """A file that is not a trace this demo can replay; the message says why, for the user."""


class _File(pydantic.BaseModel):
    """The file's schema: what pydantic checks before anything is drawn."""

    model_config = pydantic.ConfigDict(extra="ignore")
    version: Literal[2]
    model: str = ""
    prompt: str | None = None
    think: Literal["on", "off", "auto"] | None = None  # how the prompt was asked, when the writer knew it
    system: str | None = None
    mask_id: int
    stop_ids: list[int]
    tokens: dict[int, str]
    steps: list[Step] = pydantic.Field(min_length=1)
    result: Result


@dataclass(eq=False)
class TokenTable:
    """Token id -> display text, called as a tokenizer's token_text is. It holds the table only: the page's row
    cache keeps it as a key, and must not keep a whole trace alive with it."""
    pieces: dict[int, str]

    def __call__(self, token_id: int) -> str:
        return self.pieces.get(token_id, f"<id {token_id}>")


@dataclass
class Trace:
    recording: Recording
    pieces: dict[int, str]  # token id -> display text
    mask_id: int
    model: str
    prompt: str | None  # the user's message, when the writer knew it
    think: str | None = None  # "on", "off" or "auto", when the writer knew it (then system is known too)
    system: str | None = None

    def __post_init__(self) -> None:
        self.token_text = TokenTable(self.pieces)


def _token_ids(steps: list[Step], result: Result) -> set[int]:
    ids = set(result.prompt_ids) | set(result.tokens)
    for s in steps:
        ids.update(s.block_tokens)
        ids.update(s.committed_tokens)
        ids.update(tok for tok, _ in s.candidates.values())
    return ids


def dumps(rec: Recording, token_text: Callable[[int], str], mask_id: int, *, model: str = "",
          prompt: str | None = None, think: str | None = None, system: str | None = None) -> str:
    """The finished recording as trace JSON. `token_text` gives each token's display text (the tokenizer's);
    `prompt`, `think` and `system` say how the question was asked, so that the page can ask it again."""
    if rec.result is None:
        raise ValueError("the run has no result yet: only a finished run can be saved")
    result = asdict(rec.result)
    result.pop("batch")  # the other rows of a batch are not shown anywhere
    pieces = {i: token_text(i) for i in sorted(_token_ids(rec.steps, rec.result))}
    out = {"version": VERSION, "model": model, "prompt": prompt, "think": think, "system": system, "mask_id": mask_id,
           "stop_ids": list(rec.stop_ids), "tokens": pieces,
           "steps": [asdict(s) for s in rec.steps], "result": result}
    return pydantic.TypeAdapter(dict).dump_json(out).decode()  # tuples and int keys as JSON takes them


def _first_error(e: pydantic.ValidationError) -> str:
    """The first problem in a reader's words, e.g. "steps is empty", "steps → 3 → nfe: input should be a valid
    integer"."""
    err = e.errors()[0]
    where = " → ".join(str(p) for p in err["loc"])
    more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
    if err["type"] == "missing":
        said = f"{where} is missing"
    elif err["type"] == "too_short" and not err.get("input"):
        said = f"{where} is empty"
    else:
        said = f"{where}: {err['msg'][:1].lower()}{err['msg'][1:]}"
    return said + more


def _check_steps(steps: list[Step], block_length: int) -> None:
    """What the types cannot say: positions inside the block, matching lengths, probabilities and times."""
    for n, s in enumerate(steps, 1):
        if s.kind not in KINDS:
            raise TraceError(f"step {n} has an unknown kind {s.kind!r} (known: {', '.join(KINDS)}).")
        lengths = {len(s.committed), len(s.committed_tokens), len(s.committed_confidence)}
        positions = [*s.committed, *s.candidates]
        if len(s.block_tokens) != block_length or len(lengths) != 1 or not all(
                0 <= p < block_length for p in positions):
            raise TraceError(f"step {n} does not fit a block of {block_length} tokens (its positions or lengths "
                             "are inconsistent).")
        probabilities = [*s.committed_confidence, *(p for _, p in s.candidates.values())]
        if not all(0.0 <= p <= 1.0 for p in probabilities) or not 0.0 <= s.elapsed < math.inf:
            raise TraceError(f"step {n} has a probability outside 0-1 or an impossible time.")


def _check_run(f: _File) -> None:
    """The rest that types cannot say: ids that are ids, token texts of a token's length, a real duration."""
    if f.mask_id < 0 or any(i < 0 for i in (*f.stop_ids, *f.tokens)):
        raise TraceError("This trace is damaged: it has a negative token id.")
    if any(len(text) > MAX_TOKEN_CHARS for text in f.tokens.values()):
        raise TraceError(f"This trace is damaged: a token's text is longer than {MAX_TOKEN_CHARS} characters.")
    if any(s.block < 0 or s.nfe < 1 for s in f.steps):
        raise TraceError("This trace is damaged: a step has a negative block or a forward count below 1.")
    if f.result.stop_reason not in STOP_REASONS:
        raise TraceError(f"This trace is damaged: its run ended for an unknown reason {f.result.stop_reason!r} "
                         f"(known: {', '.join(STOP_REASONS)}).")
    if not 0.0 <= f.result.seconds < math.inf:
        raise TraceError("This trace is damaged: its run took an impossible time.")


def _config(settings: dict) -> DecodeConfig:
    """The run's settings, checked as a run's are; TraceError in plain words."""
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(DecodeConfig)})
    if unknown:
        raise TraceError(f"This trace's settings are not valid: it has an unknown setting {unknown[0]!r}.")
    try:
        config = DecodeConfig(**settings)
        config.validate()
    except TypeError:  # text where a number belongs, and the like
        raise TraceError("This trace's settings are not valid: a setting has the wrong type (text where a number "
                         "belongs, say).") from None
    except ValueError as e:
        raise TraceError(f"This trace's settings are not valid: {e}") from None
    if config.block_length > MAX_BLOCK:
        raise TraceError(f"This trace's settings are not valid: blocks of {config.block_length:,} tokens (this "
                         f"page draws blocks of at most {MAX_BLOCK}).")
    return config


def check_size(n_bytes: int) -> None:
    """TraceError for a file too large to be a trace (before it is read or parsed)."""
    if n_bytes > MAX_BYTES:
        raise TraceError(f"The file is {n_bytes / 2**20:.1f} MB; a trace may be at most {MAX_BYTES // 2**20} MB.")


def load(path: str | Path | None) -> Trace:
    """A trace file, checked; TraceError says what is wrong with it (its size before it is read whole)."""
    if not path:
        raise TraceError("No file was received.")
    try:
        check_size(os.path.getsize(path))
        data = Path(path).read_bytes()
    except OSError as e:
        raise TraceError(f"The file could not be read: {e.strerror or e}.") from None
    return loads(data)


def loads(data: bytes | str) -> Trace:
    """Parse and check a trace file; TraceError says what is wrong."""
    check_size(len(data))
    # A byte-order mark, as some editors save UTF-8: JSON has none, but the file is fine without it.
    data = data.removeprefix(codecs.BOM_UTF8) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    try:
        f = _File.model_validate_json(data)
    except pydantic.ValidationError as e:
        errors = e.errors()
        if errors[0]["type"] == "json_invalid":
            raise TraceError("This is not a trace: the file is not valid JSON.") from None
        if not errors[0]["loc"]:
            raise TraceError("This is not a trace: the file holds JSON, but not a trace's fields.") from None
        if errors[0]["loc"] == ("version",):
            found = errors[0].get("input")
            raise TraceError(f"This file is not a trace of format {VERSION}, the one this demo replays (written by "
                             "its Download trace button or `generate --trace`)" + (
                                 f"; it says format {found}" if isinstance(found, int) else "") +
                             ". Older traces (format 1) do not carry the text of their tokens.") from None
        raise TraceError(f"This trace is damaged: {_first_error(e)}.") from None
    _check_run(f)
    config = _config(f.result.config)
    _check_steps(f.steps, config.block_length)
    rec = Recording(config=config, stop_ids=tuple(f.stop_ids))
    for step in f.steps:
        rec.add(step)
    rec.add(f.result)
    return Trace(rec, f.tokens, f.mask_id, f.model, f.prompt, f.think, f.system)

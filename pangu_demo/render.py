"""Pure functions from recorded decoding steps to what the page shows.

Everything here reads a list of `engine.Step` records and a position `upto` in it (the number of
forwards to show, so `upto = k` is the state right after the k-th forward). Nothing is recomputed
from the model: live frames and replay use the same functions. No UI framework is imported; the
heatmap is a plain plotly figure dict (cheap to build and to serialise).

All text that reaches HTML passes through `html.escape`: tokens and prompts are untrusted.
"""

from __future__ import annotations

import html
import itertools
import math
import re
import textwrap
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from .chat import NO_ANSWER_IN_TRACE, Reply, split_reply
from .engine import THRESHOLD_ALGORITHMS, DecodeConfig, Result, Step
from .tokenizer import ROLE_TOKENS

TokenText = Callable[[int], str]

# Viridis: a perceptually uniform sequential scale, readable on light and dark backgrounds.
VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
           "#b5de2b", "#fde725"]
# The heatmap's confidence scale (inferno: dark = unsure, bright = sure), distinct from the grid's step scale.
# Explicit stops: plotly.js itself knows only a few scale names.
INFERNO = ["#000004", "#1b0c41", "#4a0c6b", "#781c6d", "#a52c60", "#cf4446", "#ed6925", "#fb9b06", "#f7d13d",
           "#fcffa4"]
CONFIDENCE_SCALE = [[i / (len(INFERNO) - 1), c] for i, c in enumerate(INFERNO)]
MIN_SCALE = 8  # at least this many steps on the colour scale, so that short blocks keep contrast
SPECIAL_LABELS = {
    ROLE_TOKENS["think_start"]: "‹think›",
    ROLE_TOKENS["think_end"]: "‹/think›",
    ROLE_TOKENS["turn_start"]: "‹turn›",
    ROLE_TOKENS["turn_end"]: "‹end›",
    ROLE_TOKENS["mask"]: "‹mask›",
    "</s>": "‹/s›",
    "<s>": "‹s›",
}
BYTE_PIECE = re.compile(r"<0x[89A-F][0-9A-F]>")  # see PanguTokenizer.token_text
BYTE_MEANING = "one byte of a character that the vocabulary splits into bytes; the chat shows the character"
SPECIAL_MEANING = {
    ROLE_TOKENS["think_start"]: "start of the thinking trace",
    ROLE_TOKENS["think_end"]: "end of the thinking trace",
    ROLE_TOKENS["turn_end"]: "end of the turn (stop token)",
    "</s>": "end of sequence (stop token)",
}


# -- colours ------------------------------------------------------------------------------------
def _hex_rgb(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


@lru_cache(maxsize=4096)
def step_colour(step: int, scale_max: int) -> tuple[str, str]:
    """Background and readable text colour for a cell committed at `step` (0 … scale_max)."""
    t = 0.0 if scale_max <= 0 else min(max(step / scale_max, 0.0), 1.0)
    x = t * (len(VIRIDIS) - 1)
    i = min(int(x), len(VIRIDIS) - 2)
    a, b = _hex_rgb(VIRIDIS[i]), _hex_rgb(VIRIDIS[i + 1])
    f = x - i
    r, g, bl = (round(a[k] + (b[k] - a[k]) * f) for k in range(3))
    bg = f"#{r:02x}{g:02x}{bl:02x}"
    # Black or white, whichever contrasts more: one of them always reaches WCAG AA's 4.5:1 (at worst about 4.6).
    return bg, "#000000" if contrast(bg, "#000000") > contrast(bg, "#ffffff") else "#ffffff"


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a #rrggbb colour."""
    lin = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in _hex_rgb(colour)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours (1 to 21)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def scale_stops(n: int = 10) -> list[list]:
    """The step scale as a plotly colorscale."""
    return [[i / (n - 1), step_colour(i, n - 1)[0]] for i in range(n)]


# -- reconstructing the blocks from the step records --------------------------------------------
@dataclass
class BlockState:
    index: int
    tokens: list[int]
    step: list[int | None]  # forward within the block at which each position was committed
    nfe: list[int | None]  # global forward count at that moment
    confidence: list[float | None]
    forwards: int = 0  # forwards spent on this block after the one that opened it
    latest: set[int] = field(default_factory=set)  # positions committed by the shown forward
    below: set[int] = field(default_factory=set)  # positions committed with confidence at or below the threshold
    padding: set[int] = field(default_factory=set)  # end-of-turn padding: stop ids after the block's first one
    ar: bool = False  # decoded in AR mode: one token per forward, no MASK to denoise


def commit_threshold(config: DecodeConfig | None) -> float | None:
    """The threshold a denoising commit must clear, or None when the algorithm has none (it commits the
    single best candidate per forward, so no commit is "below" anything)."""
    if config is None or config.mode != "diffusion" or config.algorithm not in THRESHOLD_ALGORITHMS:
        return None
    return config.threshold


def below_threshold(step: Step, threshold: float | None) -> list[int]:
    """Positions this forward committed although their confidence did not clear the threshold: every
    denoising forward must commit at least one token (the elastic rule: its leftmost one), sure or not.
    These are the commits where block diffusion most often goes wrong."""
    if threshold is None or step.kind not in ("denoise", "fused"):
        return []
    # Position 0 of a fused forward is the AR prediction of the finished block, not a denoising choice.
    return [p for p, c in zip(step.committed, step.committed_confidence, strict=True) if p and c <= threshold]


def clamp_upto(steps: list[Step], upto: int | None) -> int:
    return len(steps) if upto is None else max(0, min(int(upto), len(steps)))


def block_states(steps: list[Step], upto: int | None = None, threshold: float | None = None,
                 stop_ids: Collection[int] = (), ar: bool = False) -> list[BlockState]:
    """The blocks as they were after `upto` forwards, in order (`threshold`: see `below_threshold`). Stop ids
    after a block's first one (`stop_ids`) are end-of-turn padding, not reply, and commits after it are never
    marked below. `ar`: the run is in AR mode, which its steps show only after the prefill.

    Step 0 of a block is the forward that opened it (prefill or the previous block's commit
    forward, which predicts position 0); steps 1, 2, … are the denoising forwards (or, in AR
    mode, the following one-token forwards).
    """
    upto = clamp_upto(steps, upto)
    blocks: dict[int, BlockState] = {}
    for i, s in enumerate(steps[:upto]):
        b = blocks.get(s.block)
        if b is None:
            n = len(s.block_tokens)
            b = blocks[s.block] = BlockState(s.block, list(s.block_tokens), [None] * n, [None] * n, [None] * n,
                                             ar=ar)
        else:
            b.forwards += 1
        b.ar = b.ar or s.kind == "ar"
        b.tokens = list(s.block_tokens)
        for p, c in zip(s.committed, s.committed_confidence, strict=True):
            b.step[p], b.nfe[p], b.confidence[p] = b.forwards, s.nfe, c
        b.below.update(below_threshold(s, threshold))
        if i == upto - 1:
            b.latest = set(s.committed)
    for b in blocks.values():
        end = reply_end(b.tokens, stop_ids)
        b.below = {p for p in b.below if p <= end}
        b.padding = {p for p in range(end + 1, len(b.tokens)) if b.tokens[p] in stop_ids}
    return [blocks[k] for k in sorted(blocks)]


def scale_max(steps: list[Step]) -> int:
    """Top of the step colour scale: the most forwards any block of the run needed (at least 8).

    Taken over every recorded step, not only those shown, so that replay keeps its colours.
    """
    most, count, block = 0, 0, None
    for s in steps:
        count = count + 1 if s.block == block else 0
        block = s.block
        most = max(most, count)
    return max(MIN_SCALE, most)


# -- token display ------------------------------------------------------------------------------
def visible_text(text: str) -> str:
    """A token as readable text: whitespace made visible, special tokens given short names."""
    if text in SPECIAL_LABELS:
        return SPECIAL_LABELS[text]
    if text == "":
        return "∅"
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def _cell_title(text: str, pos: int, block: BlockState, i: int) -> str:
    meaning = SPECIAL_MEANING.get(text) or (BYTE_MEANING if BYTE_PIECE.fullmatch(text) else None)
    if text in SPECIAL_LABELS:  # as the cell shows it, then the tokenizer's own name
        meaning = text + (f", {meaning}" if meaning else "")
        text = SPECIAL_LABELS[text]
    else:
        text = repr(text)
    parts = [f"token {text}" + (f" ({meaning})" if meaning else ""), f"position {pos} of block {block.index + 1}"]
    step, nfe, conf = block.step[i], block.nfe[i], block.confidence[i]
    if step == 0:
        parts.append(f"step 0: predicted by the forward that opened the block (NFE {nfe})")
    elif step is not None:
        parts.append(f"step {step}: committed by {'AR' if block.ar else 'denoising'} forward {step} of this block "
                     f"(NFE {nfe})")
    if conf is not None:
        parts.append(f"confidence {conf:.3f}")
    if i in block.below:
        parts.append(f"below the threshold: {BELOW_WHY}")
    return "\n".join(parts)


# -- the token grid -----------------------------------------------------------------------------
def legend_html(top: int, threshold: float | None = None, padding: bool = False, run: bool = True,
                ar: bool = False) -> str:
    """The grid's key. `run`: the threshold is a run's; before any run the setting may still change, so it is
    not named. `ar`: an AR run has no MASK to denoise and no small blocks."""
    stops = ", ".join(step_colour(round(i * top / 9), top)[0] for i in range(10))
    return (
        '<div class="pg-legend">'
        '<span class="pg-legend-item"><b>Colour = the forward pass of its block that committed the token</b></span>'
        f'<span class="pg-legend-item">0 (first) <span class="pg-ramp" '
        f'style="background:linear-gradient(90deg,{stops})"></span> {top}+ (late)</span>'
        '<span class="pg-legend-item"><span class="pg-swatch pg-mask"></span>'
        f' {"not written yet" if ar else "still MASK"}</span>'
        '<span class="pg-legend-item"><span class="pg-swatch pg-latest-swatch"></span>'
        " committed by the latest forward</span>"
        + ("" if ar else
           '<span class="pg-legend-item"><span class="pg-swatch pg-sb-swatch"></span> small-block boundary</span>')
        + ('<span class="pg-legend-item"><span class="pg-swatch pg-below-swatch"></span>'
           f" committed below the threshold{f' {threshold:g}' if run else ''} (every forward commits at least one)"
           "</span>"
           if threshold is not None else "")
        + ('<span class="pg-legend-item"><span class="pg-swatch pg-pad-swatch">·</span>'
           " end-of-turn padding after the stop token: denoised with the rest of its small block, as in the reference;"
           " not part of the reply</span>"
           if padding else "")
        + "</div>"
    )


# The how-to's first sentence is its summary, on show; the rest folds (open, it stays open through later frames).
HOW_TO_READ = (
    "How to read this: each cell is a token, and bright cells were decided late. "
    "The answer is written {block} tokens (one block) at a time. Inside a block the model fills "
    "the MASK cells in the order its rule picks, at least one per forward pass (confidence_threshold: every one "
    "it is sure enough of, anywhere in the small block; elastic: the leftmost and the unbroken run after it that "
    "it is sure of). A cell's number is its step, the forward of its block that committed it: step 0 (dark) is "
    "the block's first token, predicted autoregressively by the forward that opened the block (the prefill or the "
    "commit of the block before; the command line's fused commit also denoises, so all it commits is step 0); "
    "steps 1, 2, … are "
    "its denoising forwards. "
    "Hover or tap a cell (or Tab to the block and use the arrow keys) for its token, confidence (the candidate's "
    "probability) and step. Finished blocks are listed above the current one, coloured the same way. Each block "
    "counts its forwards with the one that opened it (they add up to the run's NFE) and its tokens per forward. "
    "␣ is a space, ↵ a newline."
)
HOW_TO_READ_AR = (
    "How to read this (AR mode): one token per forward pass, left to right. "
    "This is how an autoregressive model writes; the grid shows it in blocks of {block} so that it compares with "
    "block diffusion. A cell's number is its step, the forward of its block that wrote it, so each block runs from "
    "dark to bright. "
    "Hover or tap a cell (or Tab to the block and use the arrow keys) for its token and probability. ␣ is a space, "
    "↵ a newline."
)
# Why a token can be committed below the threshold, for both rules that have one.
BELOW_WHY = ("every forward commits a token, sure or not (confidence_threshold: the most probable one; elastic: "
             "the leftmost MASK)")
HOW_TO_READ_BELOW = (
    f" A red corner (or underline) marks a token committed below the threshold: {BELOW_WHY}, and such guesses are "
    "wrong far more often."
)


def _how_to(ar: bool, block_length: int, threshold: float | None) -> str:
    if ar:
        return HOW_TO_READ_AR.format(block=block_length)
    return HOW_TO_READ.format(block=block_length) + (HOW_TO_READ_BELOW if threshold is not None else "")


def _how_to_html(text: str) -> str:
    summary, _, rest = text.partition(". ")
    return (f'<details class="pg-howto"><summary>{html.escape(summary)}.</summary>{html.escape(rest)}'
            "</details>")


def block_speed(block: BlockState, mask_id: int) -> tuple[int, int, float]:
    """(tokens committed, forwards, tokens per forward) of a block. The forward that opened it (the prefill or
    the previous block's commit, which predicts its position 0) counts as its own: summed over the blocks, the
    forwards are the run's NFE, and a block's tokens per forward shows where the speed-up came from. Padding after
    the stop token is not counted, as the run's stats do not count it: the blocks' tokens add up to the run's."""
    tokens = sum(1 for i, (t, st) in enumerate(zip(block.tokens, block.step, strict=True))
                 if t != mask_id and st is not None and i not in block.padding)
    return tokens, block.forwards + 1, tokens / (block.forwards + 1)


def _row_html(block: BlockState, token_text: TokenText, mask_id: int, top: int) -> str:
    return _row_html_cached(block.index, tuple(block.tokens), tuple(block.step), tuple(block.nfe),
                            tuple(block.confidence), block.forwards, frozenset(block.below), block.ar, token_text,
                            mask_id, top)


@lru_cache(maxsize=1024)
def _row_html_cached(index: int, tokens: tuple, step: tuple, nfe: tuple, confidence: tuple, forwards: int,
                     below: frozenset, ar: bool, token_text: TokenText, mask_id: int, top: int) -> str:
    # Finished blocks never change, so each row is rendered once per run and colour scale.
    block = BlockState(index, list(tokens), list(step), list(nfe), list(confidence), forwards, below=set(below),
                       ar=ar)
    chips = []
    for i, tok in enumerate(block.tokens):
        if tok == mask_id or block.step[i] is None:
            chips.append('<span class="pg-chip pg-mask"></span>')
            continue
        text = token_text(tok)
        bg, fg = step_colour(block.step[i], top)
        cls = "pg-chip" + (" pg-special" if text in SPECIAL_LABELS else "") + (" pg-below" if i in block.below else "")
        chips.append(f'<span class="{cls}" style="background:{bg};color:{fg}" '
                     f'title="{html.escape(_cell_title(text, i, block, i))}">'
                     f"{html.escape(visible_text(text))}</span>")
    tokens, forwards, tpf = block_speed(block, mask_id)
    title = (f"block {block.index + 1}: {plural(tokens, 'token')} in {plural(forwards, 'forward')} (the one "
             f"that opened it and {block.forwards} {'AR' if block.ar else 'denoising'}): {tpf:.1f} tokens per "
             "forward")
    label = f"block {block.index + 1} · {forwards} fwd<br>{tpf:.1f} tok/fwd"
    return (f'<div class="pg-row"><span class="pg-row-label" title="{html.escape(title)}">{label}</span>'
            f'{"".join(chips)}</div>')


def _cell_html(i: int, tok: int, current: BlockState, token_text: TokenText, mask_id: int, top: int,
               size: int, active_sb: int | None, end: int) -> str:
    """One cell of the current block."""
    sb = i // size
    cls = ["pg-cell", f"pg-sb{sb % 2}"]
    if i % size == 0 and i > 0 and size > 1:  # with 1-token small blocks every cell is its own
        cls.append("pg-sb-start")
    if sb == active_sb:
        cls.append("pg-sb-active")
    if tok == mask_id or current.step[i] is None:
        cls.append("pg-mask")
        title = f"position {i}: not written yet" if current.ar else f"position {i}: MASK (small block {sb + 1})"
        return f'<div class="{" ".join(cls)}" data-pos="{i}" data-sb="{sb}" title="{title}"></div>'
    text = token_text(tok)
    bg, fg = step_colour(current.step[i], top)
    cls.append("pg-done")
    if i in current.latest:
        cls.append("pg-latest")
    if text in SPECIAL_LABELS:
        cls.append("pg-special")
    label, title = visible_text(text), _cell_title(text, i, current, i)
    fit = ""
    if 4 < len(label) <= 10:  # on one line, in a font made to fit the cell, rather than cut or broken ("␣answ|er")
        cls.append("pg-long")
        fit = f";--pg-chars:{len(label)}"
    elif len(label) > 10:  # too long for a legible line: smaller, and wrapped anywhere
        cls.append("pg-wrap")
    if i in current.padding:  # end-of-turn padding: a dot, which does not read as text
        cls.append("pg-pad")
        label, title = "·", title + "\npadding after the stop token"
    elif i > end:
        title += "\nafter the stop token: not part of the reply"
    if i in current.below:
        cls.append("pg-below")
    return (f'<div class="{" ".join(cls)}" style="background:{bg};color:{fg}{fit}" data-pos="{i}" '
            f'data-sb="{sb}" data-step="{current.step[i]}" title="{html.escape(title)}">'
            f'<span class="pg-tok">{html.escape(label)}</span>'
            f'<span class="pg-step">{current.step[i]}</span></div>')


def _block_caption(current: BlockState, mask_id: int, n_masked: int, num_small_blocks: int, size: int,
                   run_over: bool, stop_ids: Collection[int]) -> str:
    sb_note = ("AR, one token per forward" if current.ar else f"{num_small_blocks} small blocks of {size}"
               if num_small_blocks > 1 else f"one small block of {len(current.tokens)}")
    _, forwards, tpf = block_speed(current, mask_id)
    speed = f"{plural(forwards, 'forward')}{'' if run_over else ' so far'}, {tpf:.1f} tok/fwd"
    left = f"{plural(n_masked, 'position')} not written" if current.ar else f"{plural(n_masked, 'MASK')} left"
    if run_over:
        caption = f"Block {current.index + 1} (last) · {sb_note} · {speed}"
        caption += f" · {left}{'' if current.ar else ' unused'}" if n_masked else ""
    else:
        caption = f"Block {current.index + 1} (latest) · {sb_note} · {speed} · {left}"
    if current.below:
        caption += f" · {len(current.below)} committed below the threshold"
    if not n_masked and stop_ids and all(t in stop_ids for t in current.tokens):
        # The last small block must be full before decoding stops, so a reply that ends near a block boundary
        # leaves a block of nothing but padding: say so, or it looks like the model wrote nothing.
        caption += " · only end-of-turn padding: the reply ended in the block before"
    return caption


def _quoted(token_text: TokenText, tokens: list[int], confidences: list[float], most: int = 6) -> str:
    """'Each' 0.998, 'bag' 0.970 … : a forward's commits in words, at most `most` of them."""
    words = [f"{visible_text(token_text(t))!r} {c:.3f}" for t, c in zip(tokens, confidences, strict=True)]
    return ", ".join(words[:most]) + (f" and {len(words) - most} more" if len(words) > most else "")


def forward_text(step: Step, token_text: TokenText, threshold: float | None = None, num_small_blocks: int = 1,
                 stop_ids: Collection[int] = (), block_step: int | None = None) -> str:
    """What one forward pass did, in a sentence or two: the line under the grid's caption while a run plays.
    Commits after the block's stop token (`stop_ids`) are named as padding, as the grid draws them. `block_step`:
    a denoising forward's number within its block, the step its cells show (the forward's number is the run's)."""
    first = (f"{visible_text(token_text(step.committed_tokens[0]))!r} ({step.committed_confidence[0]:.3f})"
             if step.committed else "nothing")
    head = f"Forward {step.nfe}: "
    if step.kind == "prefill":
        return (head + "the prefill. The prompt enters the KV cache, and its last position predicts the first "
                f"token of block 1, {first}, as autoregressive decoding would.")
    if step.kind == "commit":
        return (head + f"the commit forward. Block {step.block} is finished and runs once more, causally, into "
                f"the KV cache; its last position predicts the first token of block {step.block + 1}, {first}.")
    if step.kind == "ar":
        return head + f"autoregressive, one token: {first}."
    sb = step.small_block or 0
    size = max(1, len(step.block_tokens) // max(1, num_small_blocks))
    # Candidates span the whole block, but only the small block's MASKs can be committed by this forward.
    in_small_block = [p for p in step.candidates if num_small_blocks == 1 or p // size == sb]
    masked = len(in_small_block)
    left = masked - len(step.committed)
    where = (f"block {step.block + 1}" + (f" (its step {block_step})" if block_step else "")
             + (f", small block {sb + 1} of {num_small_blocks}" if num_small_blocks > 1 else ""))
    what = (f"the commit of block {step.block} and the first denoising of block {step.block + 1} in one pass "
            "(fused, this demo's option)" if step.kind == "fused" else f"denoising {where}")
    count = "Its last MASK" if masked == 1 else f"{len(step.committed)} of its {masked} MASKs"
    end = reply_end(step.block_tokens, stop_ids)
    reply = [(t, c) for p, t, c in zip(step.committed, step.committed_tokens, step.committed_confidence, strict=True)
             if p <= end]
    padding = len(step.committed) - len(reply)
    words = _quoted(token_text, [t for t, _ in reply], [c for _, c in reply]) if reply else ""
    if padding:
        words += (" and " if words else "") + f"{plural(padding, 'position')} of padding after the stop token"
    said = f"{head}{what}. {count} committed: {words}."
    below = below_threshold(step, threshold)
    # Passed over: cleared the threshold but not committed, which only elastic does (it goes left to right).
    passed_over = [p for p in in_small_block if p not in step.committed and step.candidates[p][1] > (threshold or 1)]
    if below and len(below) == len(step.committed) and passed_over:
        said += (f" Elastic commits the leftmost MASK first, sure or not: a guess; {len(passed_over)} further right "
                 f"cleared {threshold:g} but do not follow it.")
    elif below and len(below) == len(step.committed):
        said += f" None cleared {threshold:g}, and every forward commits at least one: a guess."
    elif below:
        said += f" {len(below)} of them below {threshold:g}, committed all the same."
    if left:
        return said + f" {plural(left, 'MASK')} left."
    last = num_small_blocks == 1 or sb == num_small_blocks - 1
    return said + (" The block is complete." if last else f" Small block {sb + 1} is complete.")


SO_FAR_CHARS = 240  # the readable prefix's tail under the grid: a few lines, however long the reply


def state_html(step: Step, current: BlockState, run_over: bool) -> str:
    """Under the grid: the reply as far as it reads left to right (the chat shows the finished reply during a
    replay) and what the KV cache holds after this forward."""
    # Every frame draws this: only the tail that can be shown is worked on, however long the reply.
    text = step.text[-2 * SO_FAR_CHARS:]
    for name, label in SPECIAL_LABELS.items():
        text = text.replace(name, f" {label} ")  # set apart: "= 5.‹/think›Each" read as one word
    text = re.sub(" {2,}", " ", text).strip()
    if len(text) > SO_FAR_CHARS:
        tail = text[-SO_FAR_CHARS:]
        text = "…" + (tail.split(" ", 1)[1] if " " in tail[:40] else tail)  # from a word's start where one is near
    done = current.index
    blocks = "" if not done else " and block 1" if done == 1 else f" and blocks 1 to {done}"
    if current.ar:
        cache = "the prompt and every token before the newest"
    elif run_over:
        cache = f"the prompt{blocks}; the last block was never stored: decoding ended in it"
    else:
        cache = (f"the prompt{blocks}; block {done + 1} runs against it with full attention inside the block, and "
                 "enters it at its commit forward (a reply's last block has none)")
    return ('<div class="pg-state"><div><b>Readable prefix</b> (the reply up to its first MASK, as the chat '
            'streams it): '
            f'<span class="pg-sofar">{html.escape(text) if text else "nothing yet"}</span></div>'
            f"<div><b>KV cache</b>: {html.escape(cache)}.</div></div>")


FINISHED_SHOWN = 32  # finished blocks drawn above the current one (1,024 tokens, about 250 KB of HTML)


def grid_html(steps: list[Step], upto: int | None, token_text: TokenText, mask_id: int,
              num_small_blocks: int = 1, top: int | None = None,
              threshold: float | None = None, run_over: bool = False, stop_ids: Collection[int] = (),
              blocks: list[BlockState] | None = None, stepper: bool = False) -> str:
    """The current block as a grid of cells, the latest finished blocks above it as compact rows; with a `threshold`,
    commits that did not clear it are marked. `run_over`: the caption says "last", not "so far". `blocks`:
    `block_states(steps, upto, threshold, stop_ids)` if the caller has it already. `stepper`: buttons by the
    caption that step the page's replay slider (a recorded run), in sight of the cells they change."""
    upto = clamp_upto(steps, upto)
    top = scale_max(steps) if top is None else top
    if upto == 0:  # before a run: the page's block length
        return (f'<div class="pg-grid">{legend_html(top, threshold, run=False)}'
                '<div class="pg-empty">The decoding grid appears here when you send a message.</div>'
                f'{_how_to_html(_how_to(False, DecodeConfig().block_length, threshold))}</div>')
    blocks = block_states(steps, upto, threshold, stop_ids) if blocks is None else blocks
    current, finished = blocks[-1], blocks[:-1]
    size = max(1, len(current.tokens) // max(1, num_small_blocks))
    masked = [i for i, t in enumerate(current.tokens) if t == mask_id]
    active_sb = masked[0] // size if masked else None
    end = reply_end(current.tokens, stop_ids)  # what follows the stop token is not reply
    cells = [_cell_html(i, tok, current, token_text, mask_id, top, size, active_sb, end)
             for i, tok in enumerate(current.tokens)]
    padding = bool(current.padding)
    # Newest first in the page source: the box is flex column-reverse, so it reads top to bottom in block order
    # and stays scrolled to the newest row.
    shown = finished[-FINISHED_SHOWN:]  # every frame carries the whole grid: keep a long reply's frames small
    rows = "".join(_row_html(b, token_text, mask_id, top) for b in reversed(shown))
    older = len(finished) - len(shown)
    note = (f" · the latest {len(shown)}; blocks 1-{older} are in the chat, the whole-reply heatmap and the "
            "trace") if older else ""
    done_part = (f'<div class="pg-caption">Finished blocks (coloured by the forward that committed each token)'
                 f'{note}</div><div class="pg-finished">{rows}</div>') if rows else ""
    caption = _block_caption(current, mask_id, len(masked), num_small_blocks, size, run_over, stop_ids)
    forward = html.escape(forward_text(steps[upto - 1], token_text, threshold, num_small_blocks, stop_ids,
                                       current.forwards))
    buttons = ('<span class="pg-stepper"><button type="button" data-delta="-1" aria-label="Previous forward" '
               'title="Previous forward (← anywhere on the page)">◀</button><button type="button" data-delta="1" '
               'aria-label="Next forward" title="Next forward (→ anywhere on the page)">▶</button></span>'
               if stepper else "")
    return (f'<div class="pg-grid">{legend_html(top, threshold, padding, ar=current.ar)}{done_part}'
            f'<div class="pg-caption">{buttons}{caption}</div><div class="pg-forward">{forward}</div>'
            '<div class="pg-cells" tabindex="0" aria-label="The current block: the arrow keys read its cells">'
            f'{"".join(cells)}</div>'
            # Filled by the page's script with the title of a tapped cell (a phone shows no hover titles) or of the
            # cell walked to with the arrow keys.
            '<div class="pg-inspect" aria-live="polite"></div>'
            f'{state_html(steps[upto - 1], current, run_over)}'
            f'{_how_to_html(_how_to(current.ar, len(current.tokens), threshold))}</div>')


# -- the confidence heatmap ---------------------------------------------------------------------
# Modebar buttons a figure with nothing to zoom, pan or select leaves out: they would only be tab stops.
ZOOM_BUTTONS = ["zoom", "pan", "select", "lasso", "zoomin", "zoomout", "autoscale", "resetscale"]


def _empty_figure(message: str) -> dict:
    """A figure that only says `message`, once, in the middle, in lines short enough for a phone."""
    return {"data": [], "layout": _layout("") | {
        "xaxis": {"visible": False}, "yaxis": {"visible": False}, "modebar": {"remove": [*ZOOM_BUTTONS, "toimage"]},
        "annotations": [{"text": "<br>".join(textwrap.wrap(message, 36)), "showarrow": False, "x": 0.5, "y": 0.5,
                         "xref": "paper", "yref": "paper", "font": {"size": 14}}]}}


def _title(main: str, detail: str) -> str:
    """Two short lines: a one-line title is cut off on both sides on a phone (plotly does not wrap titles)."""
    return f'{main}<br><span style="font-size:11px">{detail}</span>'


OUTLINE = "rgba(128,128,128,0.9)"  # around markers: visible on the light and the dark theme alike
# Translucent, so that the grid lines are faint on both the light and the dark page (plotly's white ones cross a
# dark page's heatmap cells).
GRID_LINE = "rgba(127,127,127,0.3)"


def _axis(title: str, **options: object) -> dict:
    return {"title": {"text": title}, "gridcolor": GRID_LINE, "zerolinecolor": GRID_LINE} | options


def _whole_ticks(values: list) -> dict:
    """Tick options for an axis of whole numbers: one tick per number, and no room for numbers that cannot occur,
    while they span a few (plotly's own ticks then fell on halves, and on token -1, around a single point);
    plotly's choice beyond."""
    if not values or max(values) - min(values) >= 8:
        return {}
    return {"dtick": 1, "tick0": 0, "range": [min(values) - 0.5, max(values) + 0.5]}


def _layout(title: str) -> dict:
    return {"title": {"text": title, "font": {"size": 14}}, "height": 360,
            "margin": {"l": 60, "r": 20, "t": 60, "b": 75},
            "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(127,127,127,0.08)",
            "font": {"color": "#8a8f98"}, "showlegend": True,
            # Below the x-axis title, so that the two do not overlap on a narrow screen.
            "legend": {"orientation": "h", "y": -0.32, "x": 0}}


def block_heatmap_data(steps: list[Step], upto: int | None) -> tuple[int, list[list]]:
    """(block index, z) with z[r][j] = confidence of position j's candidate at the block's r-th denoising
    forward; None where the position was no longer masked."""
    upto = clamp_upto(steps, upto)
    shown = steps[:upto]
    denoised = [s.block for s in shown if s.kind == "denoise"]
    latest = shown[-1].block if shown else 0
    # Just after a commit forward the new block has no denoising step yet: show the one before.
    block = latest if latest in denoised else (denoised[-1] if denoised else latest)
    rows = [s for s in shown if s.block == block and s.kind == "denoise"]
    width = len(shown[-1].block_tokens) if shown else 32
    z = [[s.candidates[j][1] if j in s.candidates else None for j in range(width)] for s in rows]
    return block, z


def heatmap_figure(steps: list[Step], upto: int | None, view: str = "block", token_text: TokenText | None = None,
                   colour: str = "confidence", threshold: float | None = None,
                   stop_ids: Collection[int] = (), latest_blocks: int | None = None,
                   blocks: list[BlockState] | None = None, num_small_blocks: int = 1) -> dict:
    """A plotly figure (as a dict) of the decoding so far.

    view "block": x = position in the block, y = denoising forward, colour = confidence of that
    position's candidate at that forward; committed positions marked.
    view "answer": x = token index in the reply (trace and answer), y = forward (NFE) at which it was committed,
    colour = confidence when committed (colour="confidence") or step within its block ("step").
    With a `threshold`, commits that did not clear it get their own markers, in the reply only: as in the grid
    and the stats, what follows a stop id (`stop_ids`) is padding. `latest_blocks`: the answer view draws only
    that many of the newest blocks (a browser redraws thousands of markers slowly, and frames come several a
    second while a run streams or plays). `blocks`: as for `grid_html`. With `num_small_blocks` > 1 the block
    view fades, in each row, the cells outside the small block that forward could commit, and draws the bounds.
    """
    upto = clamp_upto(steps, upto)
    if upto == 0:
        return _empty_figure("The heatmap appears when decoding starts.")
    blocks = block_states(steps, upto, threshold, stop_ids) if blocks is None else blocks
    if view == "answer":
        return _answer_figure(steps, blocks, token_text, colour, latest_blocks, stop_ids)
    return _block_figure(steps, upto, blocks, token_text, num_small_blocks)


def _small_block_split(heat: dict, rows: list[Step], num_small_blocks: int) -> tuple[dict, dict, list[dict]]:
    """The heatmap cut in two: each row's cells inside the small block its forward could commit, and the others
    (predicted, not committable yet) faded into the page, light or dark; and a line at each small block's bound."""
    z = heat["z"]
    size = max(1, len(z[0]) // num_small_blocks)
    own = [[(s.small_block or 0) == j // size for j in range(len(zr))] for s, zr in zip(rows, z, strict=True)]
    inside = [[c if o else None for c, o in zip(zr, orow, strict=True)] for zr, orow in zip(z, own, strict=True)]
    outside = [[None if o else c for c, o in zip(zr, orow, strict=True)] for zr, orow in zip(z, own, strict=True)]
    faded = heat | {"z": outside, "opacity": 0.3, "showscale": False, "name": "outside the small block"}
    bounds = [{"type": "line", "xref": "x", "yref": "paper", "x0": k * size - 0.5, "x1": k * size - 0.5, "y0": 0,
               "y1": 1, "line": {"color": "#ec4899", "width": 2}} for k in range(1, num_small_blocks)]
    return heat | {"z": inside}, faded, bounds


def _block_figure(steps: list[Step], upto: int, blocks: list[BlockState], token_text: TokenText | None,
                  num_small_blocks: int = 1) -> dict:
    """The block view: the latest block with denoising forwards, one row per forward, its commits marked."""
    block, z = block_heatmap_data(steps, upto)
    if not z and blocks[-1].ar:
        return _empty_figure("No denoising forwards in this view (AR mode decodes one token per forward): "
                             "switch to the whole-reply view.")
    if not z:  # only the prefill so far
        return _empty_figure("Block 1 has no denoising forward yet: the prefill has given its first token.")
    rows = [s for s in steps[:upto] if s.block == block and s.kind == "denoise"]
    text = [[_hover(token_text, s.candidates.get(j)) for j in range(len(z[0]))] for s in rows]
    marks: dict[bool, tuple[list, list, list]] = {False: ([], [], []), True: ([], [], [])}
    # A position is committed once per block, so the block's below set says which of its commits were below.
    below = next(b for b in blocks if b.index == block).below
    for r, s in enumerate(rows, start=1):
        for p, t, c in zip(s.committed, s.committed_tokens, s.committed_confidence, strict=True):
            mx, my, mtext = marks[p in below]
            mx.append(p)
            my.append(r)
            mtext.append(f"committed {_token_label(token_text, t)} · confidence {c:.3f}")
    heat = {"type": "heatmap", "z": z, "x": list(range(len(z[0]))), "y": list(range(1, len(z) + 1)),
            "zmin": 0, "zmax": 1, "colorscale": CONFIDENCE_SCALE, "name": "candidate confidence",
            "colorbar": {"title": {"text": "confidence"}, "thickness": 12}, "text": text,
            "hovertemplate": "position %{x} · forward %{y}<br>%{text}<extra></extra>", "xgap": 1, "ygap": 1}
    # Small dots, outlined dark: they stay inside their cells where 32 columns get about 5 px each (a phone), and
    # are drawn over the plot area's edge rather than cut by it.
    data = [heat]
    shapes = []
    if num_small_blocks > 1:
        heat, faded, shapes = _small_block_split(heat, rows, num_small_blocks)
        data = [heat, faded]
    data.append(_marks(*marks[False], "committed here", "circle", "#22d3ee", size=5, width=1, outline="#0b3a46"))
    if marks[True][0]:
        # A below-threshold commit's cell is red or orange (confidence under 0.9): a white halo keeps the red
        # cross visible on it.
        halo = _marks(*marks[True], "", "x-thin-open", "#ffffff", size=6, width=4.5)
        data += [halo | {"showlegend": False, "hoverinfo": "skip"},
                 _marks(*marks[True], "committed below the threshold", "x-thin-open", "#f43f5e", size=6)]
    latest = steps[upto - 1].block
    # Just after a commit forward the new block has no denoising forward yet: say so, as the grid shows that block.
    detail = ("at each denoising forward" if latest == block else
              f"at each denoising forward; block {latest + 1} has none yet")
    if num_small_blocks > 1:
        detail += "; faded: outside the forward's small block"
    layout = _layout(_title(f"Block {block + 1}: candidate confidence", detail))
    layout["shapes"] = shapes
    layout["modebar"] = {"remove": ZOOM_BUTTONS}  # one block fits the figure; its PNG download stays
    # No grid lines: the cells are the grid, and lines through their centres would cross every cell.
    layout["xaxis"] = _axis("position in block", range=[-0.5, len(z[0]) - 0.5], dtick=4, showgrid=False)
    # First forward on top; an explicit range, as autorange pads with a forward 0 that does not exist.
    layout["yaxis"] = _axis("denoising forward", range=[len(z) + 0.5, 0.5], dtick=1 if len(z) <= 16 else None,
                            showgrid=False)
    return {"data": data, "layout": layout}


def _marks(x: list, y: list, text: list, name: str, symbol: str, colour: str, width: float = 2.5,
           hover: str = "position %{x} · forward %{y}<br>%{text}", size: int = 11, outline: str | None = None) -> dict:
    return {"type": "scatter", "mode": "markers", "x": x, "y": y, "name": name, "text": text,
            "marker": {"symbol": symbol, "size": size, "color": colour,
                       "line": {"width": width, "color": outline or colour}},
            "cliponaxis": False, "hovertemplate": hover + "<extra></extra>"}


def _answer_figure(steps: list[Step], blocks: list[BlockState], token_text: TokenText | None, colour: str,
                   latest_blocks: int | None = None, stop_ids: Collection[int] = ()) -> dict:
    older = max(0, len(blocks) - latest_blocks) if latest_blocks else 0
    blocks = blocks[older:]
    top = scale_max(steps)
    xs, ys, cs, texts, bx, by, btext = [], [], [], [], [], [], []
    for b in blocks:
        width, end = len(b.tokens), reply_end(b.tokens, stop_ids)
        for j, nfe in enumerate(b.nfe):
            if nfe is None or j > end:  # the reply only, as the stats count it: no padding after the stop token
                continue
            conf = b.confidence[j]
            xs.append(b.index * width + j)
            ys.append(nfe)
            cs.append(conf if colour == "confidence" else b.step[j])
            texts.append(f"{_token_label(token_text, b.tokens[j])} · block {b.index + 1} step {b.step[j]}"
                         f" · confidence {conf:.3f}" if conf is not None else "")
            if j in b.below:
                bx.append(xs[-1])
                by.append(nfe)
                btext.append(texts[-1])
    window = f"; blocks {older + 1}-{older + len(blocks)} while it runs" if older else ""
    if colour == "confidence":
        marker = {"color": cs, "cmin": 0, "cmax": 1, "colorscale": CONFIDENCE_SCALE,
                  "colorbar": {"title": {"text": "confidence"}, "thickness": 12}}
        title = _title("Whole reply: when each token was committed", "coloured by its confidence" + window)
    else:
        marker = {"color": cs, "cmin": 0, "cmax": top, "colorscale": scale_stops(),
                  "colorbar": {"title": {"text": "step in block"}, "thickness": 12}}
        title = _title("Whole reply: when each token was committed",
                       "coloured by its step in the block, as in the grid" + window)
    # A mid-grey outline: the sure end of both scales is pale yellow, which alone vanished on the light theme's
    # plot area, and the unsure end of the confidence scale is near black, which vanishes on the dark one.
    marker.update(symbol="square", size=8, line={"width": 1, "color": OUTLINE})
    trace = {"type": "scatter", "mode": "markers", "x": xs, "y": ys, "text": texts, "marker": marker,
             "name": "committed token", "hovertemplate": "token %{x} · forward %{y}<br>%{text}<extra></extra>"}
    data = [trace]
    if bx:
        data.append(_marks(bx, by, btext, "committed below the threshold", "square-open", "#f43f5e", width=1.5,
                           hover="token %{x} · forward %{y}<br>%{text} · below the threshold"))
    layout = _layout(title)
    layout["xaxis"] = _axis("token index in the reply", **_whole_ticks(xs))
    layout["yaxis"] = _axis("forward (NFE) at commit", **_whole_ticks(ys))
    layout["showlegend"] = bool(bx)
    return {"data": data, "layout": layout}


def _token_label(token_text: TokenText | None, token: int) -> str:
    # Plotly renders hover text as its own limited markup, so escape it like HTML.
    text = token_text(token) if token_text else str(token)
    return html.escape(repr(visible_text(text)))


def _hover(token_text: TokenText | None, cand: tuple[int, float] | None) -> str:
    if cand is None:
        return "already committed"
    return f"candidate {_token_label(token_text, cand[0])} · confidence {cand[1]:.3f}"


# -- stats --------------------------------------------------------------------------------------
def reply_end(block_tokens: list[int], stop_ids: Collection[int]) -> int:
    """Position of the block's first committed stop token (MASK is never a stop id), or the block's length.
    What follows it is end-of-turn padding, not reply."""
    return next((p for p, t in enumerate(block_tokens) if t in stop_ids), len(block_tokens))


def reply_commits(steps: list[Step], upto: int | None, stop_ids: Collection[int] = (),
                  threshold: float | None = None) -> tuple[int, int]:
    """Tokens committed after `upto` forwards that belong to the reply, and how many of them were committed
    below the threshold. Commits past the stop token would make the figures fall when the run ends. Only the
    latest block can hold one (decoding ends with its small block), so only its commits are checked."""
    shown = steps[:upto]
    tokens = sum(len(s.committed) for s in shown)
    below = sum(len(below_threshold(s, threshold)) for s in shown)
    if not shown:
        return tokens, below
    latest = shown[-1]
    end = reply_end(latest.block_tokens, stop_ids)
    for s in shown:
        if s.block == latest.block:
            tokens -= sum(p > end for p in s.committed)
            below -= sum(p > end for p in below_threshold(s, threshold))
    return tokens, below


def stats(steps: list[Step], upto: int | None, result: Result | None = None, max_new_tokens: int | None = None,
          block_length: int = 32, threshold: float | None = None, stop_ids: Collection[int] = ()) -> dict:
    """The numbers of the stats line, as JSON-able values (`below_threshold` is None without a threshold).
    Tokens are those of the reply (see `reply_commits`); at the end, exactly the result's."""
    upto = clamp_upto(steps, upto)
    final = result is not None and upto == len(steps)
    tokens, below = reply_commits(steps, upto, stop_ids, threshold)
    if final:
        tokens, nfe, elapsed = len(result.tokens), result.nfe, result.seconds
        max_new_tokens = max_new_tokens or result.config.get("max_new_tokens")
    else:
        tokens = min(tokens, max_new_tokens) if max_new_tokens else tokens
        nfe = steps[upto - 1].nfe if upto else 0
        elapsed = steps[upto - 1].elapsed if upto else 0.0
    planned = math.ceil(max_new_tokens / block_length) if max_new_tokens else None
    block = steps[upto - 1].block + 1 if upto else 0
    return {
        "block": min(block, planned) if planned else block, "blocks_planned": planned, "nfe": nfe,
        "tokens": tokens, "tokens_per_forward": tokens / nfe if nfe else 0.0,
        "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0, "elapsed": elapsed,
        "ar_forwards": tokens, "forwards_saved": max(0, tokens - nfe),
        "below_threshold": None if threshold is None else below,
        "stop_reason": result.stop_reason if final else None, "step": upto, "steps_recorded": len(steps),
    }


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


STOP_REASONS = {"stop_token": "finished (stop token)", "length": "reached max new tokens",
                "cancelled": "stopped by you"}


def stats_html(s: dict, live: bool = False) -> str:
    planned = f" of max {s['blocks_planned']}" if s["blocks_planned"] else ""
    items = [("block", f"{s['block']}{planned}", "the block being decoded, of the blocks that max new tokens "
              "allows (decoding ends sooner at the stop token)"),
             ("forwards (NFE)", str(s["nfe"]), "model forward passes so far: prefill, denoising and commit forwards"),
             ("tokens", str(s["tokens"]), "reply tokens committed so far, in any order, the stop token included"),
             ("tokens / forward", f"{s['tokens_per_forward']:.2f}", "tokens ÷ forwards; AR decoding makes 1"),
             ("tokens / s", f"{s['tokens_per_second']:.1f}", "tokens ÷ elapsed time, on this machine"),
             ("elapsed", f"{s['elapsed']:.2f} s", "wall-clock time since the prompt was sent"),
             ("AR would need", plural(s["ar_forwards"], "forward"), "one forward per token: the left-to-right "
              "cost of the same tokens")]
    if s["below_threshold"] is not None:
        items.append(("below threshold", plural(s["below_threshold"], "commit"), "tokens committed with a "
                      f"probability at or below the threshold: {BELOW_WHY}"))
    chips = "".join(f'<span class="pg-stat" title="{html.escape(hint)}"><span class="pg-stat-k">{html.escape(k)}'
                    f'</span><span class="pg-stat-v" data-stat="{html.escape(k)}">{html.escape(v)}</span></span>'
                    for k, v, hint in items)
    if s["stop_reason"]:
        status = STOP_REASONS.get(s["stop_reason"], s["stop_reason"])
    elif live:
        status = "decoding…"
    elif not s["steps_recorded"]:
        status = "ready: send a message to see the decoding"
    else:
        # Replay redraws the grid, heatmap and stats only; say so, or the finished chat reply looks wrong.
        status = (f"replay: forward {s['step']} of {s['steps_recorded']} "
                  "(grid, heatmap and figures; the chat keeps the finished reply)")
    return (f'<div class="pg-stats" data-nfe="{s["nfe"]}">{chips}'
            f'<span class="pg-status">{html.escape(status)}</span></div>')


def comparison_html(run: Result, ar: Result) -> str:
    """The prompt decoded again by the run's settings and by AR, one after the other on this machine: the measured
    wall-clock speed-up (generated tokens/s) and the forwards each needed."""
    def side(name: str, r: Result) -> str:
        return (f"<b>{name}</b>: {plural(len(r.tokens), 'token')} in {plural(r.nfe, 'forward')}, {r.seconds:.2f} s "
                f"({r.tokens_per_second:.0f} tokens/s)")

    lines = [side("This run's settings (block diffusion)", run), side("The same prompt by AR", ar)]
    stopped = run.stop_reason == "cancelled" or ar.stop_reason == "cancelled"
    if ar.tokens_per_second > 0 and run.tokens_per_second > 0 and not stopped:
        speedup = run.tokens_per_second / ar.tokens_per_second
        verdict = (f"Speed-up over AR on this machine: {speedup:.2f}×" if speedup >= 1 else
                   f"Slower than AR on this machine: {speedup:.2f}× its speed")
        lines.append(f"<b>{verdict}</b> (tokens/s), with "
                     f"{run.tpf:.2f} tokens per forward. Both were decoded again just now, one after the other and "
                     "without drawing, so that they are timed alike; one run each, so machine noise counts "
                     "(<code>python -m pangu_demo.bench</code> interleaves many). The speed-up is "
                     "smaller than the tokens per forward where a forward over a whole block costs more than a "
                     "one-token forward, as it does for a small model on a CPU; for the 7B model on an accelerator "
                     "the two cost about the same.")
    if ar.tokens != run.tokens:
        lines.append("The two replies differ: the speed-up compares tokens per second, not whole replies.")
    if stopped:  # a stopped run's tokens/s covers a few tokens: no verdict from it
        lines.append("A run was stopped early, so the figures cover only what was decoded, and no speed-up is "
                     "given.")
    return '<div class="pg-compare">' + "<br>".join(lines) + "</div>"


def reply_curve(steps: list[Step], stop_ids: Collection[int] = ()) -> list[int]:
    """Reply tokens after each forward, as `reply_commits` counts them: the height of the race figure's lines.
    One pass with running counts, since an AR run of a long reply has hundreds of forwards."""
    out, total = [], 0
    committed: dict[int, list[int]] = {}  # block -> positions committed so far
    for s in steps:
        total += len(s.committed)
        positions = committed.setdefault(s.block, [])
        positions.extend(s.committed)
        end = reply_end(s.block_tokens, stop_ids)
        out.append(total - sum(p > end for p in positions))
    return out


# Each line at least 3:1 against both themes' figure backgrounds (white, slate #1e293b), as WCAG asks of graphics.
RACE_COLOURS = ("#6366f1", "#d97706", "#059669", "#ef4444", "#0284c7", "#64748b", "#a855f7")
RACE_DASHES = ("solid", "dot", "dash", "longdash", "dashdot", "longdashdot")


def race_figure(runs: Sequence[tuple[str, list[Step]]], stop_ids: Collection[int] = (),
                title: str = "The same prompt, both ways") -> dict:
    """Runs of one prompt as lines: reply tokens against forwards (left) and against wall-clock seconds
    (right). AR climbs one token per forward; block diffusion in steps of many, steeper at a lower threshold."""
    data = []
    # A dash pattern each as well as a colour: runs that commit one token per forward (AR and three of the rules)
    # draw the same line, and one solid line over another hid it.
    for (name, steps), colour, dash in zip(runs, itertools.cycle(RACE_COLOURS), itertools.cycle(RACE_DASHES)):
        tokens = reply_curve(steps, stop_ids)
        line = {"type": "scatter", "mode": "lines",
                "line": {"color": colour, "shape": "hv", "width": 2.5, "dash": dash},
                "y": tokens, "name": name, "legendgroup": name}
        data.append(line | {"x": [s.nfe for s in steps],
                            "hovertemplate": f"{name}: %{{y}} tokens after %{{x}} forwards<extra></extra>"})
        data.append(line | {"x": [round(s.elapsed, 4) for s in steps], "xaxis": "x2", "yaxis": "y2",
                            "showlegend": False,
                            "hovertemplate": f"{name}: %{{y}} tokens after %{{x:.2f}} s<extra></extra>"})
    layout = _layout(_title(title, "reply tokens written so far"))
    layout |= {"xaxis": _axis("forwards (NFE)", domain=[0, 0.46], rangemode="tozero"),
               "yaxis": _axis("tokens", rangemode="tozero"),
               "xaxis2": _axis("seconds, this machine", domain=[0.56, 1], anchor="y2", rangemode="tozero"),
               "yaxis2": _axis("", anchor="x2", rangemode="tozero", matches="y")}
    return {"data": data, "layout": layout}


@dataclass
class SweepRow:
    label: str  # the first column: a threshold ("0.7") or a rule ("elastic 0.9")
    steps: list[Step]
    result: Result
    threshold: float | None = None  # the rule's threshold, to count commits below it (None: the rule has none)
    this_run: bool = False  # the recorded run, not one decoded for the sweep


SWEEPS = {  # what varies: (the first column's header, the title)
    "threshold": ("threshold", "The same prompt at other thresholds"),
    "rule": ("rule", "The same prompt by other rules"),
}


def sweep_view(rows: list[SweepRow], stop_ids: Collection[int] = (), varies: str = "threshold") -> tuple[str, dict]:
    """One prompt decoded several ways, one setting changed (`varies`, a key of SWEEPS): a table, in the order
    given, of forwards, tokens per forward, guesses below the threshold and the answer each gave; and every run
    as a line of tokens against forwards and seconds."""
    column, title = SWEEPS[varies]
    figure = race_figure([(f"{column} {r.label}" if varies == "threshold" else r.label, r.steps) for r in rows],
                         stop_ids, title=title)
    body = []
    for row in rows:
        r = row.result
        below = "—" if row.threshold is None else reply_commits(row.steps, None, stop_ids, row.threshold)[1]
        reply = split_reply(r.text)
        answer = reply.answer.strip() or (f"({NO_ANSWER_IN_TRACE})" if reply.thinking_open else "(no answer)")
        answer = answer if len(answer) <= 70 else answer[:69] + "…"
        stopped = " (stopped)" if r.stop_reason == "cancelled" else ""
        label = row.label + (" · this run" if row.this_run else "")
        css = ' class="pg-this-run"' if row.this_run else ""
        name = html.escape(label).replace("_", "_<wbr>")  # a narrow column breaks it there, not inside a word
        body.append(f"<tr{css}><td>{name}</td><td>{r.nfe}{stopped}</td><td>{r.tpf:.2f}</td>"
                    f"<td>{below}</td><td>{html.escape(answer)}</td></tr>")
    head = (f"<tr><th>{column}</th><th>forwards</th><th>tokens / forward</th>"
            '<th title="commits below the row\'s own threshold: guesses, forced because every forward commits">'
            "below its threshold</th><th>answer</th></tr>")
    note = ('<p class="pg-sweep-note">entropy, low_confidence and topk_margin commit one token per forward, and '
            "after the stop token they denoise the end-of-turn padding one position a forward too: they need more "
            "forwards than AR, which stops at the stop token.</p>") if varies == "rule" else ""
    table = (f'<div class="pg-compare"><b>{title}</b> (the settings of this run otherwise; one run each on this '
             f'machine)<table class="pg-sweep">{head}{"".join(body)}</table>{note}</div>')
    return table, figure


# -- chat ---------------------------------------------------------------------------------------
def reply_at(steps: list[Step], upto: int | None, result: Result | None = None) -> Reply:
    upto = clamp_upto(steps, upto)
    if result is not None and upto == len(steps):
        return split_reply(result.text)
    return split_reply(steps[upto - 1].text if upto else "")


# Every ASCII character Markdown may read as syntax, Gradio's LaTeX delimiters ($) and setext underlines (=)
# included (CommonMark lets a backslash make each of them literal; <, > and & are escaped as HTML).
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:$=])")


def escape_markdown(text: str) -> str:
    """Untrusted text (a model's name or error, which a visitor's folder may set) shown literally in Markdown: HTML
    escaped, and every Markdown character backslashed, so a name like [x](http://…) or ![](…) stays text and is
    not made a link."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", html.escape(text, quote=False))


def escape_chat(text: str) -> str:
    """Chat text shown literally: the Chatbot renders HTML even with render_markdown=False, so <, > and & are
    escaped. Quotes are left alone (harmless in text): the message's Copy button copies the escaped string."""
    return html.escape(text, quote=False)


# A finished trace up to this long stays open in the chat (a status-less thought is shown open): the teaching
# model's working is what a reader came to see. A longer one (the 7B model thinks for thousands of tokens) folds.
OPEN_TRACE_CHARS = 600


def assistant_messages(reply: Reply, thinking_seconds: float | None, running: bool,
                       stop_reason: str | None = None) -> list[dict]:
    """The thought message (when the reply has a trace) and the answer, as Chatbot messages, and a line saying so
    when the reply did not end at its stop token (`stop_reason`). A closed, empty trace (a /no_think reply) gets no
    thought message: there was no thinking to show."""
    out = []
    if reply.has_trace and (reply.thinking_open or reply.thinking.strip()):
        meta: dict = {"title": "Thinking"}
        if reply.thinking_open and running:
            meta["status"] = "pending"
            meta["title"] = "Thinking…"
        else:
            if len(reply.thinking) > OPEN_TRACE_CHARS:  # folded: a long trace would bury the answer
                meta["status"] = "done"
            if thinking_seconds is not None:
                meta["duration"] = round(thinking_seconds, 2)
        out.append({"role": "assistant", "content": escape_chat(reply.thinking) or "…", "metadata": meta})
    if reply.answer or not running:
        out.append({"role": "assistant", "content": escape_chat(reply.answer) or "(no answer)"})
    elif not reply.has_trace:
        out.append({"role": "assistant", "content": "…"})
    if not running and stop_reason in ("cancelled", "length"):  # a titled box, as the thought is: not the model's
        said = STOP_REASONS[stop_reason]
        out.append({"role": "assistant", "content": "", "metadata": {
            "title": f"{said[0].upper()}{said[1:]}: the reply above is unfinished.", "status": "done"}})
    return out

"""A recorded run as an animated GIF, one frame per forward: the grid of the page and the line saying what the
forward did, for slides and posts.

Pure: it reads the same step records as the page (`render.block_states`) and recomputes nothing. A GIF
plays everywhere (slides, chat, issue trackers) without the app. Characters that no installed font has
show as boxes (see FONT_FILES); the JSON trace keeps the exact tokens.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from . import render
from .engine import Result, Step
from .streaming import Recording

COLS = 16  # as on a wide page: a block of 32 in two rows (a trace may hold longer blocks: more rows)
CELL_W, CELL_H, GAP, MARGIN = 46, 30, 3, 12
NARRATION_TOP, NARRATION_LINE, NARRATION_LINES = 36, 15, 3  # the forward's line under the counts, wrapped
HEADER_H = NARRATION_TOP + NARRATION_LINE * NARRATION_LINES + 6
CAPTION_H, BLOCK_GAP, FOOTER_H = 20, 8, 22
MAX_BLOCKS = 4  # the newest blocks shown; older ones scroll out (the page lists every finished block)
MAX_FRAMES = 600  # a longer run keeps every k-th forward (and the last), so the file stays small
HOLD_LAST_MS = 2500  # the finished state stays up before the loop starts again
MASK_FILL, MASK_LINE, LATEST, BELOW = "#e5e7eb", "#cbd5e1", "#ff7a1a", "#f43f5e"
INK, PAPER, LEGEND_INK = "#111827", "#ffffff", "#4b5563"
SMALL_BLOCK_MARK = "#e879f9"  # the page's small-block boundary


# Tried in order for each character: the first font that has it draws it. Latin and the grid's symbols first,
# then CJK fonts (openPangu answers in Chinese as readily as in English); Pillow looks the names up in the
# system's font folders. Without any of them, Pillow's own font (Latin only).
FONT_FILES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf", "NotoSansCJK-Regular.ttc",
              "NotoSansSC-Regular.otf", "DroidSansFallbackFull.ttf", "wqy-microhei.ttc", "msyh.ttc",
              "PingFang.ttc", "Arial Unicode.ttf")
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=8)
def _fonts(size: int, files: tuple[str, ...] = FONT_FILES) -> tuple[Font, ...]:
    found = []
    for name in files:
        try:
            found.append(ImageFont.truetype(name, size))
        except OSError:
            continue
    return tuple(found) or (ImageFont.load_default(size=size),)


def _font(size: int) -> Font:
    return _fonts(size)[0]


@lru_cache(maxsize=64)
def _missing_glyph(font: Font) -> bytes:
    return bytes(font.getmask("\U0010fffd"))  # a private-use code point: drawn as the font's "missing" box


@lru_cache(maxsize=65536)
def has_glyph(font: Font, char: str) -> bool:
    """Whether `font` draws `char` itself rather than its missing-glyph box."""
    return char.isspace() or bytes(font.getmask(char)) != _missing_glyph(font)


Runs = list[tuple[str, Font]]


def font_runs(text: str, size: int, files: tuple[str, ...] = FONT_FILES) -> Runs:
    """`text` cut into runs, each drawn in the first font of `files` (as found here) that has its characters:
    a SentencePiece token such as "▁思考" needs one font for the space sign and another for the Chinese."""
    fonts = _fonts(size, files)
    runs: Runs = []
    for char in text:
        font = next((f for f in fonts if has_glyph(f, char)), fonts[0])
        if runs and runs[-1][1] is font:
            runs[-1] = (runs[-1][0] + char, font)
        else:
            runs.append((char, font))
    return runs


def _width(runs: Runs) -> float:
    return sum(font.getlength(text) for text, font in runs)


def _fit(text: str, width: int) -> Runs:
    """The token's label in the larger of two sizes that fits the cell, cut with … if neither does."""
    if len(text) <= width:  # no glyph is narrower than a pixel: a longer text never fits
        for size in (13, 10):
            runs = font_runs(text, size)
            if _width(runs) <= width:
                return runs
    return font_runs(_cut(text, "…", 10, width), 10)


def _cut(text: str, mark: str, size: int, width: int) -> str:
    """The longest start of `text` that fits `width` with `mark` after it, found by halving: a label cut one
    character at a time was measured once per character, and a trace's token can be long."""
    text = text[:width]  # as in _fit: more could never fit
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _width(font_runs(text[:mid] + mark, size)) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + mark


def wrap(text: str, size: int, width: int, max_lines: int) -> list[Runs]:
    """`text` broken at spaces into lines no wider than `width` at `size`, at most `max_lines` of them: the last is
    cut with " …" if the text goes on, and a word too long for a line with "…"."""
    lines: list[str] = []
    for word in text.split(" "):
        word = word[:width + 1]  # as in _fit: longer never fits, and it is cut below anyway
        if lines and _width(font_runs(f"{lines[-1]} {word}", size)) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    more = len(lines) > max_lines
    lines = lines[:max_lines]
    lines = [_cut(line, " …", size, width) if more and k == len(lines) - 1 else
             _cut(line, "…", size, width) if _width(font_runs(line, size)) > width else line
             for k, line in enumerate(lines)]
    return [font_runs(line, size) for line in lines]


def _draw_runs(draw: ImageDraw.ImageDraw, xy: tuple[float, float], runs: Runs, fill: str, anchor: str) -> None:
    x, y = xy
    for text, font in runs:
        draw.text((x, y), text, fill=fill, font=font, anchor=anchor)
        x += font.getlength(text)


def _draw_centred(draw: ImageDraw.ImageDraw, centre: tuple[float, float], runs: Runs, fill: str) -> None:
    _draw_runs(draw, (centre[0] - _width(runs) / 2, centre[1]), runs, fill, "lm")


def frame_indices(n_steps: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """Which `upto` values get a frame: every forward, or every k-th one and the last for a long run."""
    if n_steps <= max_frames:
        return list(range(1, n_steps + 1))
    every = -(-n_steps // max_frames)
    return sorted(set(range(every, n_steps + 1, every)) | {n_steps})


def _block_height(block_length: int) -> int:
    rows = -(-block_length // COLS)
    return CAPTION_H + rows * CELL_H + (rows - 1) * GAP + BLOCK_GAP


def frame_size(n_blocks: int, block_length: int = 32) -> tuple[int, int]:
    width = 2 * MARGIN + COLS * CELL_W + (COLS - 1) * GAP
    return width, (HEADER_H + min(max(n_blocks, 1), MAX_BLOCKS) * _block_height(block_length) + FOOTER_H
                   + MARGIN)


def legend(threshold: float | None, ar: bool = False, small_blocks: bool = False) -> str:
    text = (f"colour: the forward of its block that committed the token (dark = first) · grey: "
            f"{'not written yet' if ar else 'MASK'} · orange: this forward"
            + (" · pink bar: small block" if small_blocks else ""))
    return text + (f" · red corner: below the threshold {threshold:g}" if threshold is not None else "")


def _draw_block(draw: ImageDraw.ImageDraw, block: render.BlockState, top_y: int, token_text: render.TokenText,
                mask_id: int, scale: int, num_small_blocks: int = 1) -> None:
    size = max(1, len(block.tokens) // max(1, num_small_blocks))
    _, forwards, tpf = render.block_speed(block, mask_id)  # as the page's grid counts them
    draw.text((MARGIN, top_y + 2), f"block {block.index + 1} · {render.plural(forwards, 'forward')} · "
              f"{tpf:.1f} tok/fwd", fill=INK, font=_font(12))
    for i, tok in enumerate(block.tokens):
        x = MARGIN + (i % COLS) * (CELL_W + GAP)
        y = top_y + CAPTION_H + (i // COLS) * (CELL_H + GAP)
        box = (x, y, x + CELL_W - 1, y + CELL_H - 1)
        if i and i % size == 0:  # a small block starts here: the page's boundary bar, in the gap before the cell
            draw.rectangle((x - GAP, y, x - 1, y + CELL_H - 1), fill=SMALL_BLOCK_MARK)
        if tok == mask_id or block.step[i] is None:
            draw.rectangle(box, fill=MASK_FILL, outline=MASK_LINE)
            continue
        bg, fg = render.step_colour(block.step[i], scale)
        draw.rectangle(box, fill=bg)
        label = "·" if i in block.padding else render.visible_text(token_text(tok))
        _draw_centred(draw, (x + CELL_W / 2, y + CELL_H / 2), _fit(label, CELL_W - 6), fg)
        if i in block.below:  # the page's red corner: committed without clearing the threshold
            draw.polygon([(x, y), (x + 11, y), (x, y + 11)], fill=BELOW)
        if i in block.latest:
            draw.rectangle(box, outline=LATEST, width=3)


def draw_frame(steps: list[Step], upto: int, token_text: render.TokenText, mask_id: int, *,
               result: Result | None = None, threshold: float | None = None, stop_ids: Collection[int] = (),
               n_blocks: int | None = None, scale: int | None = None, num_small_blocks: int = 1,
               finished: dict[int, Image.Image] | None = None, ar: bool = False) -> Image.Image:
    """The state after `upto` forwards: a header with the counts (and the forwards AR would need for as many
    tokens: one each) and what the forward did (the page's line under the grid), then the newest blocks as
    grids. `finished`: a run's drawings of its finished blocks by index, kept between frames (a finished block
    never changes, and drawing cells' text is most of a frame's time)."""
    blocks = render.block_states(steps, upto, threshold, stop_ids, ar)
    n_blocks = len({s.block for s in steps}) if n_blocks is None else n_blocks
    scale = render.scale_max(steps) if scale is None else scale
    block_length = len(blocks[0].tokens)
    image = Image.new("RGB", frame_size(n_blocks, block_length), PAPER)
    draw = ImageDraw.Draw(image)
    s = render.stats(steps, upto, result if upto == len(steps) else None, threshold=threshold, stop_ids=stop_ids)
    draw.text((MARGIN, 10), f"forward {upto} of {len(steps)}", fill=INK, font=_font(16))
    counts = (f"{render.plural(s['tokens'], 'token')} · {s['tokens_per_forward']:.2f} per forward · "
              f"AR would need {render.plural(s['ar_forwards'], 'forward')}")  # as the page's stats say it
    draw.text((image.width - MARGIN, 12), counts, fill=INK, font=_font(14), anchor="ra")
    said = render.forward_text(steps[upto - 1], token_text, threshold, num_small_blocks, stop_ids,
                               blocks[-1].forwards)
    for k, runs in enumerate(wrap(said, 12, image.width - 2 * MARGIN, NARRATION_LINES)):
        _draw_runs(draw, (MARGIN, NARRATION_TOP + k * NARRATION_LINE), runs, LEGEND_INK, "la")
    shown = blocks[-MAX_BLOCKS:]
    for k, block in enumerate(shown):
        top = HEADER_H + k * _block_height(block_length)
        if finished is None or block is blocks[-1]:
            _draw_block(draw, block, top, token_text, mask_id, scale, num_small_blocks)
            continue
        if block.index not in finished:
            finished[block.index] = Image.new("RGB", (image.width, _block_height(block_length)), PAPER)
            _draw_block(ImageDraw.Draw(finished[block.index]), block, 0, token_text, mask_id, scale, num_small_blocks)
        image.paste(finished[block.index], (0, top))
    if finished is not None:
        for index in [i for i in finished if i < shown[0].index]:  # scrolled out: never shown again
            del finished[index]
    draw.text((MARGIN, image.height - MARGIN - FOOTER_H + 6), legend(threshold, blocks[-1].ar, num_small_blocks > 1),
              fill=LEGEND_INK, font=_font(11))
    return image


def run_gif(steps: list[Step], token_text: render.TokenText, mask_id: int, *, result: Result | None = None,
            threshold: float | None = None, stop_ids: Collection[int] = (), forwards_per_second: float = 5.0,
            max_frames: int = MAX_FRAMES, num_small_blocks: int = 1, ar: bool = False) -> bytes:
    """The whole run as a looping GIF: one frame per forward (see `frame_indices`), the last one held."""
    if not steps:
        raise ValueError("no forwards recorded: generate a reply first")
    n_blocks, scale = len({s.block for s in steps}), render.scale_max(steps)
    uptos = frame_indices(len(steps), max_frames)
    finished: dict[int, Image.Image] = {}

    def frame(k: int) -> Image.Image:
        return draw_frame(steps, k, token_text, mask_id, result=result, threshold=threshold, stop_ids=stop_ids,
                          n_blocks=n_blocks, scale=scale, num_small_blocks=num_small_blocks, finished=finished,
                          ar=ar)

    # One palette for every frame, from the last one (it holds the most colours): Pillow then stores only the
    # part of each frame that changed, several times smaller than a palette per frame; colours stay within a
    # few levels. Frames are drawn as the file is written, so a long run never holds them all in memory.
    last = frame(uptos[-1])
    palette = last.quantize(colors=256, dither=Image.Dither.NONE)
    frames = ((last if k == uptos[-1] else frame(k)).quantize(palette=palette, dither=Image.Dither.NONE)
              for k in uptos)
    step_ms = max(20, round(1000 / max(forwards_per_second, 0.1)))  # browsers slow shorter frames to 100 ms
    durations = [step_ms] * (len(uptos) - 1) + [HOLD_LAST_MS]
    out = io.BytesIO()
    next(frames).save(out, format="GIF", save_all=True, append_images=frames, duration=durations, loop=0)
    return out.getvalue()


def recording_gif(rec: Recording, token_text: render.TokenText, mask_id: int,
                  forwards_per_second: float = 5.0) -> bytes:
    """`run_gif` for a recorded run (live or read from a trace), with the settings it ran with."""
    cfg = rec.settings
    return run_gif(rec.steps, token_text, mask_id, result=rec.result, threshold=render.commit_threshold(cfg),
                   stop_ids=rec.stop_ids, forwards_per_second=forwards_per_second,
                   num_small_blocks=cfg.num_small_blocks, ar=cfg.mode == "ar")

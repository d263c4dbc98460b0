"""The run as a GIF: one frame per forward, the page's colours and marks, any token text drawn safely."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageColor
from test_render import MASK, SEVEN, fake_run, with_confidences

from pangu_demo import animation, render
from pangu_demo.engine import DecodeConfig, Decoder, run
from pangu_demo.streaming import Recording

A = animation


def cell_box(block_slot: int, pos: int) -> tuple[int, int]:
    """Top-left corner of a cell: `block_slot` counts the blocks shown, from the top."""
    x = A.MARGIN + (pos % A.COLS) * (A.CELL_W + A.GAP)
    y = A.HEADER_H + block_slot * (A.CAPTION_H + 2 * A.CELL_H + A.GAP + A.BLOCK_GAP) + A.CAPTION_H
    return x, y + (pos // A.COLS) * (A.CELL_H + A.GAP)


def test_one_frame_per_forward_at_the_replay_speed_and_the_last_held() -> None:
    steps, table = fake_run(SEVEN)
    steps = steps[:-1]  # the run ends with its block full: the last frame has no MASK cell
    gif = Image.open(io.BytesIO(A.run_gif(steps, table.get, MASK, forwards_per_second=4)))
    assert gif.n_frames == len(steps) and gif.info["loop"] == 0
    durations = []
    for k in range(gif.n_frames):
        gif.seek(k)
        durations.append(gif.info["duration"])
    assert durations == [250] * (len(steps) - 1) + [A.HOLD_LAST_MS]
    # The shared palette keeps the grid's colours: MASK grey in the first frame, step colours in the last.
    def near(pixel: tuple[int, int, int], colour: str) -> bool:
        return max(abs(a - b) for a, b in zip(pixel, ImageColor.getrgb(colour), strict=True)) <= 6

    gif.seek(0)
    x, y = cell_box(0, 5)
    assert near(gif.convert("RGB").getpixel((x + 3, y + 3)), A.MASK_FILL)
    gif.seek(gif.n_frames - 1)
    x, y = cell_box(0, 31)  # committed by the block's 29th forward
    last_colour = render.step_colour(29, render.scale_max(steps))[0]
    assert near(gif.convert("RGB").getpixel((x + 3, y + A.CELL_H - 4)), last_colour)


def test_a_long_run_keeps_every_kth_forward_and_the_last() -> None:
    assert A.frame_indices(5, max_frames=10) == [1, 2, 3, 4, 5]
    kept = A.frame_indices(1001, max_frames=100)
    assert len(kept) <= 101 and kept[-1] == 1001 and kept[:3] == [11, 22, 33]


def test_cells_have_the_grid_colours_and_marks() -> None:
    steps, table = fake_run(SEVEN)
    with_confidences(steps, {3: 0.41})  # committed by forward 2 of block 0, below 0.9
    scale = render.scale_max(steps)
    frame = A.draw_frame(steps, 4, table.get, MASK, threshold=0.9).convert("RGB")

    def corner(pos: int, dx: int = 2, dy: int = 2) -> tuple[int, int, int]:
        x, y = cell_box(0, pos)
        return frame.getpixel((x + A.CELL_W - 1 - dx, y + A.CELL_H - 1 - dy))  # bottom right: clear of the text

    assert corner(0) == ImageColor.getrgb(render.step_colour(0, scale)[0])  # position 0: the opening forward
    assert corner(1) == ImageColor.getrgb(render.step_colour(1, scale)[0])
    assert corner(3) == ImageColor.getrgb(render.step_colour(2, scale)[0])
    assert corner(7) == ImageColor.getrgb(A.MASK_FILL)  # not committed yet after 4 forwards
    assert corner(5, dx=1, dy=1) == ImageColor.getrgb(A.LATEST)  # forward 4 committed 4, 5 and 6: outlined
    assert corner(1, dx=1, dy=1) != ImageColor.getrgb(A.LATEST)
    x, y = cell_box(0, 3)
    assert frame.getpixel((x + 2, y + 2)) == ImageColor.getrgb(A.BELOW)  # the red corner
    x, y = cell_box(0, 2)
    assert frame.getpixel((x + 2, y + 2)) != ImageColor.getrgb(A.BELOW)
    plain = A.draw_frame(steps, 4, table.get, MASK).convert("RGB")  # no threshold: no marks
    x, y = cell_box(0, 3)
    assert plain.getpixel((x + 2, y + 2)) != ImageColor.getrgb(A.BELOW)


def test_small_blocks_are_marked_as_on_the_page() -> None:
    steps, table = fake_run(SEVEN)
    mark = ImageColor.getrgb(A.SMALL_BLOCK_MARK)
    for small_blocks, starts in ((4, [8, 16, 24]), (1, [])):
        frame = A.draw_frame(steps, 4, table.get, MASK, num_small_blocks=small_blocks).convert("RGB")
        marked = [p for p in range(1, 32) if frame.getpixel((cell_box(0, p)[0] - 2, cell_box(0, p)[1] + 5)) == mark]
        assert marked == starts


def test_the_newest_blocks_are_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    steps, table = fake_run(SEVEN)
    assert A.frame_size(1) == A.draw_frame(steps, 3, table.get, MASK, n_blocks=1).size
    last = A.draw_frame(steps, len(steps), table.get, MASK).convert("RGB")
    # After the commit forward, block 1 is open below block 0: its position 0 is coloured, the rest MASK.
    x, y = cell_box(1, 0)
    assert last.getpixel((x + A.CELL_W - 3, y + A.CELL_H - 3)) != ImageColor.getrgb(A.MASK_FILL)
    x, y = cell_box(1, 1)
    assert last.getpixel((x + A.CELL_W - 3, y + A.CELL_H - 3)) == ImageColor.getrgb(A.MASK_FILL)
    monkeypatch.setattr(A, "MAX_BLOCKS", 1)  # room for one block: the open one, not the finished one
    only = A.draw_frame(steps, len(steps), table.get, MASK).convert("RGB")
    x, y = cell_box(0, 1)
    assert only.size == A.frame_size(1)
    assert only.getpixel((x + A.CELL_W - 3, y + A.CELL_H - 3)) == ImageColor.getrgb(A.MASK_FILL)


@pytest.mark.parametrize("text, ink", [("<b>x</b>", True), ("中文", True), ("a" * 40, True), ("\n", True),
                                       ("🙂", False), ("", False), ("\x00", False)])
def test_any_token_text_is_drawn(text: str, ink: bool) -> None:
    """Odd texts never break a frame; those with something to show (markup as text, CJK, a long token cut, a
    newline's sign) leave ink in their cell."""
    steps, table = fake_run(SEVEN, texts={100 + 1: text})
    frame = A.draw_frame(steps, 3, table.get, MASK).convert("RGB")  # forward 2 committed it: not outlined now
    assert frame.size == A.frame_size(2)
    x, y = cell_box(0, 1)
    fill = frame.getpixel((x + A.CELL_W - 3, y + A.CELL_H - 3))
    inside = [frame.getpixel((i, j)) for i in range(x + 2, x + A.CELL_W - 2) for j in range(y + 2, y + A.CELL_H - 2)]
    if ink:
        assert sum(p != fill for p in inside) > 5


def test_each_frame_says_what_its_forward_did() -> None:
    """The page's line under the grid, in the header: ink in its band that changes from forward to forward."""
    steps, table = fake_run(SEVEN)
    width = A.frame_size(2)[0]
    band = (A.MARGIN, A.NARRATION_TOP, width - A.MARGIN, A.HEADER_H - 4)

    def narration(upto: int) -> bytes:
        return A.draw_frame(steps, upto, table.get, MASK, threshold=0.9).convert("L").crop(band).tobytes()

    first, second = narration(1), narration(2)
    assert min(first) < 128 and min(second) < 128  # dark text on white
    assert first != second


def test_a_long_line_is_wrapped_and_cut() -> None:
    words = " ".join(f"word{k}" for k in range(200))
    lines = A.wrap(words, 12, 300, max_lines=3)
    assert len(lines) == 3 and all(A._width(runs) <= 300 for runs in lines)
    assert "".join(text for text, _ in lines[-1]).endswith(" …")
    assert [[text for text, _ in runs] for runs in A.wrap("a short line", 12, 300, 3)] == [["a short line"]]
    (long_word,) = A.wrap("x" * 200, 12, 300, 3)  # one word wider than a line: cut too
    assert A._width(long_word) <= 300 and long_word[-1][0].endswith("x…")


def test_longer_blocks_get_more_rows(tiny_decoder: Decoder) -> None:
    """A trace may hold blocks of 64: four rows each, the next block below them, not drawn over them."""
    steps, result = run(tiny_decoder, [1, 5, 6, 7], DecodeConfig(block_length=64, max_new_tokens=128,
                                                                stop_ids=()))
    mask = tiny_decoder.mask_id
    frame = A.draw_frame(steps, len(steps), str, mask, n_blocks=3).convert("RGB")
    assert frame.size == A.frame_size(3, 64) and frame.size[1] > A.frame_size(3)[1]
    block_h = A.CAPTION_H + 4 * A.CELL_H + 3 * A.GAP + A.BLOCK_GAP
    x = A.MARGIN + 15 * (A.CELL_W + A.GAP)  # position 63: the last column of the fourth row
    y = A.HEADER_H + A.CAPTION_H + 3 * (A.CELL_H + A.GAP)
    assert frame.getpixel((x + 2, y + 2)) not in (ImageColor.getrgb(A.PAPER), ImageColor.getrgb(A.MASK_FILL))
    below = frame.crop((A.MARGIN, A.HEADER_H + block_h, A.MARGIN + 200, A.HEADER_H + block_h + A.CAPTION_H))
    assert min(below.convert("L").tobytes()) < 128  # the next block's caption, on white


def test_no_forwards_no_gif() -> None:
    with pytest.raises(ValueError, match="generate a reply first"):
        A.run_gif([], str, MASK)


def test_each_character_is_drawn_in_a_font_that_has_it() -> None:
    files = ("LiberationSans-Regular.ttf", "DejaVuSans.ttf")
    fonts = A._fonts(13, files)
    if len(fonts) < 2:
        pytest.skip("needs Liberation Sans and DejaVu Sans (Debian: fonts-liberation, fonts-dejavu-core)")
    assert not A.has_glyph(fonts[0], "␣") and A.has_glyph(fonts[1], "␣")  # the grid's visible space
    assert A.font_runs("ab␣␣c", 13, files) == [("ab", fonts[0]), ("␣␣", fonts[1]), ("c", fonts[0])]


def test_chinese_characters_get_a_font_with_chinese_glyphs() -> None:
    runs = A.font_runs("␣中文", 13)
    if not A.has_glyph(runs[-1][1], "中"):
        pytest.skip("no CJK font installed (Debian: fonts-droid-fallback or fonts-noto-cjk)")
    assert [text for text, _ in runs] == ["␣", "中文"] and A.has_glyph(runs[0][1], "␣")
    assert not A.has_glyph(runs[-1][1], "\U0010fffd")


def test_finished_blocks_drawn_once_look_the_same(tiny_decoder: Decoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's GIF draws each finished block once and pastes it into later frames: every frame must be the one
    drawn from scratch, also as blocks scroll out of view."""
    steps, _ = run(tiny_decoder, [1, 5, 6, 7], DecodeConfig(max_new_tokens=128, threshold=0.5, stop_ids=()))
    monkeypatch.setattr(A, "MAX_BLOCKS", 2)  # four blocks, two shown: the older ones scroll out
    finished: dict = {}
    for upto in range(1, len(steps) + 1):
        kept = A.draw_frame(steps, upto, str, tiny_decoder.mask_id, finished=finished)
        assert kept.tobytes() == A.draw_frame(steps, upto, str, tiny_decoder.mask_id).tobytes(), upto
        assert len(finished) <= 1  # only the finished block still in view is kept
    assert finished


def test_the_gif_legend_of_an_ar_run_names_no_mask(tiny_decoder: Decoder, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "grey: not written yet" in A.legend(None, ar=True) and "MASK" not in A.legend(None, ar=True)
    assert "grey: MASK" in A.legend(0.9)
    # A recorded AR run's GIF gets that legend from its first frame on (the prefill alone does not say AR).
    drawn = []
    monkeypatch.setattr(A, "legend", lambda threshold, ar=False, small_blocks=False: drawn.append(ar) or "")
    config = DecodeConfig(mode="ar", max_new_tokens=8, stop_ids=())
    steps, result = run(tiny_decoder, [1, 5, 6, 7], config)
    A.recording_gif(Recording(steps=steps, result=result, config=config), str, tiny_decoder.mask_id)
    assert drawn and all(drawn)


def test_a_long_label_is_cut_to_the_longest_start_that_fits_in_few_measurements(monkeypatch):
    """A trace's token text has no length of its own: cutting it one character at a time measured it once per
    character (a GIF of one hostile trace ran for minutes, holding a decoding slot)."""
    text = "abcdefghij" * 6
    cut = A._cut(text, "…", 13, 120)
    fits = [n for n in range(1, len(text) + 1) if A._width(A.font_runs(text[:n] + "…", 13)) <= 120]
    assert cut == text[:max(fits)] + "…"
    calls = []
    measure = A.font_runs
    monkeypatch.setattr(A, "font_runs", lambda t, size: calls.append(len(t)) or measure(t, size))
    A._fit("y" * 100_000, 60)
    A.wrap("z" * 100_000, 12, 300, 2)
    assert len(calls) < 60 and max(calls) <= 300 + 2  # halving, on a start no longer than the width in pixels

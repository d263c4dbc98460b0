"""The pure rendering functions: escaping, grid layout, colours by step, heatmap shape, replay, stats."""

from __future__ import annotations

import dataclasses
import html
import re
from html import escape as html_escape

import pytest

from pangu_demo import render
from pangu_demo.engine import DecodeConfig, Decoder, Result, Step, run

MASK = 0
L = 32


def token_id(pos: int) -> int:
    return 100 + pos


def fake_run(forwards: list[list[int]], texts: dict[int, str] | None = None,
             confidence: float = 0.95) -> tuple[list[Step], dict[int, str]]:
    """Steps of one block: prefill commits position 0, then one denoising forward per entry of `forwards`
    (the positions it commits), then the commit forward that opens block 1."""
    texts = texts or {}
    block = [MASK] * L
    steps: list[Step] = []

    def step(kind: str, b: int, committed: list[int], tokens: list[int]) -> Step:
        cands = {} if kind != "denoise" else {j: (token_id(j), 0.5 + j / 100) for j in range(L) if block[j] == MASK
                                              or j in committed}
        return Step(kind=kind, block=b, small_block=0 if kind == "denoise" else None, nfe=len(steps) + 1,
                    block_tokens=list(tokens), committed=committed, committed_tokens=[tokens[j] for j in committed],
                    committed_confidence=[confidence] * len(committed), candidates=cands, text="", n_generated=0,
                    elapsed=0.01 * (len(steps) + 1))

    block[0] = token_id(0)
    steps.append(step("prefill", 0, [0], block))
    for positions in forwards:
        before = list(block)
        for j in positions:
            block[j] = token_id(j)
        s = step("denoise", 0, positions, block)
        s.candidates = {j: (token_id(j), 0.5 + j / 100) for j in range(L) if before[j] == MASK}
        steps.append(s)
    nxt = [MASK] * L
    nxt[0] = token_id(0)
    steps.append(step("commit", 1, [0], nxt))
    table = {MASK: "[unused0]", **{token_id(j): f"t{j}" for j in range(L)}, **texts}
    return steps, table


def cells(html_text: str) -> list[str]:
    """The current block's cells (the big grid), as their opening tags."""
    grid = html_text.split('class="pg-cells"', 1)[1]
    return re.findall(r'<div class="pg-cell[^"]*"[^>]*>', grid)


def bg(tag: str) -> str | None:
    m = re.search(r"background:(#[0-9a-f]{6})", tag)
    return m.group(1) if m else None


SEVEN = [[1, 2], [3], [4, 5, 6], *[[j] for j in range(7, 32)]]


def test_grid_has_32_cells_and_small_block_boundaries():
    steps, table = fake_run(SEVEN)
    for nsb in (1, 2, 4, 8, 16, 32):
        html_text = render.grid_html(steps, 5, table.get, MASK, num_small_blocks=nsb)
        tags = cells(html_text)
        assert len(tags) == 32
        starts = [i for i, t in enumerate(tags) if "pg-sb-start" in t]
        assert starts == (list(range(32 // nsb, 32, 32 // nsb)) if nsb < 32 else [])
        sizes = [sum(f'data-sb="{k}"' in t for t in tags) for k in range(nsb)]
        assert sizes == [32 // nsb] * nsb


def test_mask_cells_are_empty_and_committed_cells_coloured():
    steps, table = fake_run(SEVEN)
    tags = cells(render.grid_html(steps, 3, table.get, MASK))  # prefill + 2 denoising forwards
    committed = [i for i, t in enumerate(tags) if "pg-mask" not in t]
    assert committed == [0, 1, 2, 3]
    assert all(bg(tags[i]) for i in committed)
    assert all(bg(t) is None for i, t in enumerate(tags) if i not in committed)


def test_colour_by_step():
    steps, table = fake_run(SEVEN)
    tags = cells(render.grid_html(steps, 4, table.get, MASK))
    # positions 1 and 2 at forward 1, 3 at forward 2, 4-6 at forward 3
    assert bg(tags[1]) == bg(tags[2])
    assert bg(tags[4]) == bg(tags[5]) == bg(tags[6])
    assert len({bg(tags[0]), bg(tags[1]), bg(tags[3]), bg(tags[4])}) == 4
    assert 'data-step="3"' in tags[5]


def test_contrast_follows_wcag():
    assert render.contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert render.contrast("#777777", "#777777") == pytest.approx(1.0)
    assert render.contrast("#ffffff", "#767676") == pytest.approx(4.54, abs=0.01)  # the usual AA grey


def test_race_lines_stand_out_on_light_and_dark_backgrounds():
    for colour in render.RACE_COLOURS:
        assert render.contrast(colour, "#ffffff") >= 3 and render.contrast(colour, "#1e293b") >= 3, colour


@pytest.mark.parametrize("top", [1, 8, 17, 31])
def test_every_step_colour_keeps_its_text_readable(top):
    """WCAG AA asks 4.5:1 of text; mid-scale teal with white or near-black text reached only 3.6-3.9."""
    for step in range(top + 1):
        bg, fg = render.step_colour(step, top)
        assert render.contrast(bg, fg) >= 4.5, (step, top, bg, fg)


def test_each_forward_is_told_in_words():
    steps, table = fake_run(SEVEN, texts={token_id(3): "<b>"})
    with_confidences(steps, {3: 0.41})
    prefill, first, second, third = (render.forward_text(s, table.get, 0.9) for s in steps[:4])
    assert prefill.startswith("Forward 1: the prefill.") and "first token of block 1, 't0' (0.950)" in prefill
    assert first == ("Forward 2: denoising block 1. 2 of its 31 MASKs committed: 't1' 0.950, 't2' 0.950. "
                     "29 MASKs left.")
    assert second == ("Forward 3: denoising block 1. 1 of its 29 MASKs committed: '<b>' 0.410. None cleared 0.9, "
                      "and every forward commits at least one: a guess. 28 MASKs left.")
    assert "3 of its 28 MASKs committed" in third and "guess" not in third
    last = render.forward_text(steps[-2], table.get, 0.9)
    assert last.startswith(f"Forward {len(steps) - 1}: denoising block 1. Its last MASK committed") \
        and last.endswith("The block is complete.")
    commit = render.forward_text(steps[-1], table.get)
    assert "the commit forward. Block 1 is finished" in commit and "first token of block 2, 't0'" in commit
    small = render.forward_text(steps[2], table.get, 0.9, num_small_blocks=4)
    # Only the small block's MASKs (positions 0-7 of 32) can be committed: the count is theirs, not the block's.
    in_small_block = sum(1 for p in steps[2].candidates if p < 8)
    assert small.startswith(f"Forward 3: denoising block 1, small block 1 of 4. 1 of its {in_small_block} MASKs")
    assert f"{in_small_block - 1} MASKs left." in small and in_small_block < 29
    one_left = dataclasses.replace(steps[2], candidates={3: (token_id(3), 0.5), 20: (token_id(20), 0.5)},
                                   committed=[3], committed_tokens=[token_id(3)], committed_confidence=[0.95])
    assert render.forward_text(one_left, table.get, 0.9, num_small_blocks=4).endswith(
        "Its last MASK committed: '<b>' 0.950. Small block 1 is complete.")
    fused = dataclasses.replace(steps[1], kind="fused", block=1)
    assert "the commit of block 1 and the first denoising of block 2 in one pass" in render.forward_text(
        fused, table.get, 0.9)
    # No threshold (entropy and the like commit one per forward): no word on guesses.
    assert "guess" not in render.forward_text(steps[2], table.get, None)
    # In the grid, under the caption, escaped.
    grid = render.grid_html(steps, 3, table.get, MASK, threshold=0.9)
    # In the grid, the forward's number in its block: the step its cells show.
    assert ('<div class="pg-forward">Forward 3: denoising block 1 (its step 2). 1 of its 29 MASKs committed: '
            '&#x27;&lt;b&gt;') in grid
    assert re.findall(r'data-step="(\d+)"', grid)[-1] == "2"


def test_latest_forward_highlighted():
    steps, table = fake_run(SEVEN)
    tags = cells(render.grid_html(steps, 4, table.get, MASK))
    assert [i for i, t in enumerate(tags) if "pg-latest" in t] == [4, 5, 6]


def test_replay_shows_only_what_was_committed_up_to_k():
    steps, table = fake_run(SEVEN)
    for k in range(1, len(steps)):
        tags = cells(render.grid_html(steps, k, table.get, MASK))
        expected = {p for s in steps[:k] if s.block == 0 for p in s.committed}
        assert {i for i, t in enumerate(tags) if "pg-mask" not in t} == expected
        assert render.stats(steps, k)["nfe"] == k
        status = re.search(r'class="pg-status">([^<]*)<', render.stats_html(render.stats(steps, k))).group(1)
        assert status.startswith(f"replay: forward {k} of {len(steps)} ") and "chat" in status


def test_under_the_grid_the_readable_prefix_and_the_cache():
    steps, table = fake_run(SEVEN)
    steps = [dataclasses.replace(s, text=f"[unused16]<b>{s.nfe}</b>") for s in steps]
    raw = render.grid_html(steps, 3, table.get, MASK)
    during = html.unescape(raw)
    assert html.unescape(re.search(r'class="pg-sofar">([^<]*)<', raw).group(1)) == "‹think› <b>3</b>"
    assert "<b>3</b>" not in raw  # the model's text is never markup
    assert "KV cache</b>: the prompt; block 1 runs against it" in during
    # After the commit forward the cache holds block 1 too; a finished run never stored its last block.
    assert "KV cache</b>: the prompt and block 1; block 2 runs" in render.grid_html(steps, len(steps), table.get, MASK)
    done = render.grid_html(steps, len(steps), table.get, MASK, run_over=True)
    assert "the prompt and block 1; the last block was never stored" in done
    long = [dataclasses.replace(s, text="x" * 1000 + "END") for s in steps]
    tail = re.search(r'class="pg-sofar">([^<]*)<', render.grid_html(long, 3, table.get, MASK)).group(1)
    assert tail.startswith("…") and tail.endswith("END") and len(tail) == render.SO_FAR_CHARS + 1
    words = [dataclasses.replace(s, text="word " * 200) for s in steps]  # the tail starts at a word
    assert re.search(r'class="pg-sofar">([^<]*)<', render.grid_html(words, 3, table.get, MASK)).group(1).startswith(
        "…word word")


def test_finished_blocks_stay_as_rows():
    steps, table = fake_run(SEVEN)
    html_text = render.grid_html(steps, len(steps), table.get, MASK)
    assert html_text.count('class="pg-row"') == 1  # block 1 finished, block 2 is current
    assert "Block 2 (latest)" in html_text
    assert len(cells(html_text)) == 32
    # Its tokens per forward count the forward that opened it: 32 tokens in 28 denoising forwards + 1.
    assert "29 fwd<br>1.1 tok/fwd" in html_text and "32 tokens in 29 forwards" in html_text


def test_block_tokens_per_forward_sum_to_the_runs_figures(tiny_run):
    """The rows' forwards (each block's denoising ones and the one that opened it) add up to the run's NFE."""
    lm, steps, result = tiny_run
    html_text = render.grid_html(steps, len(steps), lm.tokenizer.token_text, lm.tokenizer.ids.mask, 4)
    first = render.block_states(steps)[0]
    assert f"32 tokens in {first.forwards + 1} forwards" in html_text
    assert sum(b.forwards + 1 for b in render.block_states(steps)) == result.nfe and len(result.tokens) == 64


def test_a_special_tokens_title_names_it_as_its_cell_shows_it():
    steps, table = fake_run(SEVEN, texts={token_id(1): "[unused17]", token_id(2): "cows"})
    html_text = html.unescape(render.grid_html(steps, len(steps) - 1, table.get, MASK))
    assert "token ‹/think› ([unused17], end of the thinking trace)" in html_text
    assert "token 'cows'\n" in html_text and "token '[unused17]'" not in html_text


@pytest.mark.parametrize("evil", ["<script>alert(1)</script>", "a & b", "\"quoted\" 'single'", "<b id=x>broken</b>"])
def test_tokens_are_escaped(evil):
    steps, table = fake_run(SEVEN, texts={token_id(1): evil, token_id(3): evil})
    html_text = render.grid_html(steps, len(steps) - 1, table.get, MASK)
    assert "<script" not in html_text and "<b id" not in html_text
    assert "&lt;" in html_text or "&amp;" in html_text or "&quot;" in html_text
    # An attribute value must not be closed early by a quote inside the token.
    for tag in re.findall(r"<[^>]+>", html_text):
        assert tag.count('"') % 2 == 0
    fig = render.heatmap_figure(steps, len(steps) - 1, "block", table.get)
    assert "<script" not in str(fig) and "<b id" not in str(fig)


@pytest.mark.parametrize("name", ["[x](http://evil.example)", "![img](http://evil.example/a.png)", "<b>bold</b>",
                                  "*a* _b_ `c` # d", "<http://evil.example>", r"back\\slash [x]\\(y)", "1. item",
                                  "Title\n=====", "$$x^2$$"])
def test_a_model_name_in_markdown_stays_text(name):
    # A visitor's folder sets the model's name; the model panel shows it in Markdown (CommonMark, as markdown-it).
    from markdown_it import MarkdownIt

    shown = MarkdownIt("commonmark").render(render.escape_markdown(name))
    assert "<a " not in shown and "<img" not in shown and "<b>" not in shown and "<em>" not in shown
    assert html.unescape(re.sub(r"<[^>]+>", "", shown)).strip() == name  # every character shown as typed


def test_prompts_and_replies_are_escaped_in_chat():
    reply = render.split_reply("[unused16]think <script>x</script>[unused17]<b id=x>broken</b> & \"q\"")
    messages = render.assistant_messages(reply, 1.5, running=False)
    text = " ".join(m["content"] for m in messages)
    assert "<" not in text and "&lt;b id=x&gt;" in text and "&amp;" in text
    assert render.escape_chat("<b id=x>") == "&lt;b id=x&gt;"
    # Quotes are inert in text and stay as they are, so a copied message keeps them.
    assert '"q"' in text and render.escape_chat("Don't \"go\"") == "Don't \"go\""


@pytest.mark.parametrize(("text", "thinking", "answer", "open_", "traced"), [
    ("[unused16]Add 3 and 4.[unused17]It is 7.", "Add 3 and 4.", "It is 7.", False, True),
    ("[unused16]Add 3", "Add 3", "", True, True),  # still thinking
    ("It is 7.", "", "It is 7.", False, False),  # no trace at all
    ("Add 3 and 4.[unused17]It is 7.", "Add 3 and 4.", "It is 7.", False, True),  # closes a trace it never opened
])
def test_a_reply_splits_into_its_trace_and_its_answer(text, thinking, answer, open_, traced):
    assert render.split_reply(text) == render.Reply(thinking, answer, open_, traced)


def test_a_byte_piece_says_what_it_is():
    steps, table = fake_run(SEVEN, texts={token_id(1): "<0xE6>", token_id(2): "<0x41>"})
    tags = cells(render.grid_html(steps, 2, table.get, MASK))
    assert "one byte of a character" in tags[1] and "one byte of a character" not in tags[2]


def test_whitespace_and_specials_visible():
    assert render.visible_text(" the") == "␣the"
    assert render.visible_text("\n") == "↵"
    assert render.visible_text("") == "∅"
    assert render.visible_text("[unused17]") == "‹/think›"


def test_thought_message_pending_then_done():
    running = render.assistant_messages(render.split_reply("[unused16]adding 4 and 5"), None, running=True)
    assert running[0]["metadata"]["status"] == "pending" and len(running) == 1
    done = render.assistant_messages(render.split_reply("[unused16]4 + 5 = 9[unused17]9"), 2.0, running=True)
    # A short finished trace stays open (no status, no spinner); a long one folds.
    assert "status" not in done[0]["metadata"] and done[0]["metadata"]["duration"] == 2.0
    assert done[1]["content"] == "9"
    long = render.assistant_messages(render.split_reply(f"[unused16]{'4 + 5 = 9. ' * 80}[unused17]9"), 2.0, False)
    assert long[0]["metadata"]["status"] == "done"
    no_think = render.assistant_messages(render.split_reply("[unused16][unused17]It is 9."), 0.01, running=False)
    assert no_think == [{"role": "assistant", "content": "It is 9."}]


@pytest.mark.parametrize(("stop_reason", "said"), [("cancelled", "Stopped by you"),
                                                   ("length", "Reached max new tokens"), ("stop_token", None)])
def test_an_unfinished_reply_says_so_in_the_chat(stop_reason, said):
    reply = render.split_reply("[unused16]4 + 5 = 9[unused17]The answer")
    messages = render.assistant_messages(reply, 1.0, running=False, stop_reason=stop_reason)
    assert messages[1]["content"] == "The answer"  # the answer's own message (and its Copy) unchanged
    assert (messages[2:] and messages[2]["metadata"]["title"].startswith(said)) if said else len(messages) == 2
    assert render.assistant_messages(reply, 1.0, running=True, stop_reason=stop_reason)[2:] == []


def test_heatmap_shape_and_marks():
    steps, table = fake_run(SEVEN)
    for k in (2, 4, 10):
        fig = render.heatmap_figure(steps, k, "block", table.get)
        z = fig["data"][0]["z"]
        n_denoise = sum(1 for s in steps[:k] if s.kind == "denoise")
        assert (len(z), len(z[0])) == (n_denoise, 32)
        marks = fig["data"][1]
        assert len(marks["x"]) == sum(len(s.committed) for s in steps[:k] if s.kind == "denoise")
    # After the commit forward, block 0 (the last one with denoising forwards) is still shown, and the title says so.
    after_commit = render.heatmap_figure(steps, len(steps), "block", table.get)
    z = after_commit["data"][0]["z"]
    assert len(z) == len(SEVEN)
    title = after_commit["layout"]["title"]["text"]
    assert title.startswith("Block 1: candidate confidence") and "block 2 has none yet" in title
    assert "none yet" not in render.heatmap_figure(steps, 4, "block", table.get)["layout"]["title"]["text"]
    # After the prefill alone there is nothing to draw yet; in an AR run, nothing ever.
    def said(figure: dict) -> str:
        return figure["layout"]["annotations"][0]["text"].replace("<br>", " ")  # lines short enough for a phone

    assert "no denoising forward yet" in said(render.heatmap_figure(steps, 1, "block", table.get))
    ar_steps = [dataclasses.replace(s, kind="ar") for s in steps[1:4]]
    assert "AR mode" in said(render.heatmap_figure([steps[0], *ar_steps], 4, "block", table.get))
    # A value is given exactly where the position was masked before that forward.
    assert z[0][1] is not None and z[0][0] is None and z[1][1] is None


def test_the_block_heatmap_fades_what_a_forward_could_not_commit():
    """With small blocks, a forward commits only inside its own: the other cells are faded, the bounds drawn."""
    steps, table = fake_run([[1, 2], [3], [16, 17], [18]])
    steps = [dataclasses.replace(s, small_block=1) if s.kind == "denoise" and s.committed[0] >= 16 else s
             for s in steps]
    fig = render.heatmap_figure(steps, 5, "block", table.get, num_small_blocks=2)
    heat, faded = fig["data"][:2]
    # Rows 1-2 decode small block 1, rows 3-4 small block 2: the other half of each row is drawn faded.
    assert [[j for j, v in enumerate(row) if v is not None] for row in faded["z"]] == [list(range(16, 32))] * 2 + [
        list(range(4, 16))] * 2
    assert faded["opacity"] < 1 and faded["name"] == "outside the small block"
    assert all(heat["z"][r][j] is None for r in range(4) for j in range(32) if faded["z"][r][j] is not None)
    assert [shape["x0"] for shape in fig["layout"]["shapes"]] == [15.5]
    assert "faded: outside the forward's small block" in fig["layout"]["title"]["text"]
    whole = render.heatmap_figure(steps, 5, "block", table.get)
    assert not whole["layout"]["shapes"] and all(t.get("name") != "outside the small block" for t in whole["data"])


def test_figures_draw_no_opaque_grid_lines():
    """Plotly's default grid is white: on the dark page it crossed the heatmap's cells. The block heatmap has none
    (its cells are the grid); every other axis a translucent one."""
    steps, table = fake_run(SEVEN)
    block = render.heatmap_figure(steps, 4, "block", table.get)["layout"]
    assert block["xaxis"]["showgrid"] is False and block["yaxis"]["showgrid"] is False
    others = [render.heatmap_figure(steps, 4, "answer", table.get)["layout"],
              render.race_figure([("run", steps)])["layout"]]
    axes = [axis for layout in others for name, axis in layout.items() if name.startswith(("xaxis", "yaxis"))]
    assert len(axes) == 6 and all(axis.get("showgrid", True) for axis in axes)
    for axis in axes:  # translucent grid and zero lines, whatever their colour
        for key in ("gridcolor", "zerolinecolor"):
            alpha = re.fullmatch(r"rgba\(\d+,\d+,\d+,([\d.]+)\)", axis[key])
            assert alpha and float(alpha[1]) < 1, axis[key]
    # Nothing to zoom in one block or in an empty figure: no zoom buttons to tab through; the PNG download stays.
    assert {"zoom", "pan", "select", "lasso", "autoscale"} <= set(block["modebar"]["remove"])
    assert "toimage" not in block["modebar"]["remove"]
    assert "toimage" in render.heatmap_figure(steps, 0, "block", table.get)["layout"]["modebar"]["remove"]


def test_answer_view_one_point_per_committed_token():
    steps, table = fake_run(SEVEN)
    for colour in ("confidence", "step"):
        fig = render.heatmap_figure(steps, len(steps), "answer", table.get, colour)
        assert len(fig["data"][0]["x"]) == 33  # block 0 complete + position 0 of block 1
        assert fig["data"][0]["x"][-1] == 32


def test_answer_view_ticks_only_numbers_that_occur_and_outlines_its_markers():
    steps, table = fake_run(SEVEN)
    first = render.heatmap_figure(steps, 1, "answer", table.get)  # one token, committed by forward 1
    for axis, value in (("xaxis", 0), ("yaxis", 1)):
        a = first["layout"][axis]
        assert a["dtick"] == 1 and a["range"][0] > value - 1 and a["range"][1] < value + 1  # no token -1, no 0.5
    whole = render.heatmap_figure(steps, len(steps), "answer", table.get)
    assert "dtick" not in whole["layout"]["xaxis"]  # 33 tokens: plotly's own ticks
    # Pale yellow (sure) and near-black (unsure) markers each vanish on one theme's plot area without an outline.
    assert whole["data"][0]["marker"]["line"]["width"] >= 1


def test_stats_line():
    steps, _ = fake_run(SEVEN)
    s = render.stats(steps, 4, max_new_tokens=64)
    assert (s["nfe"], s["tokens"], s["ar_forwards"], s["block"], s["blocks_planned"]) == (4, 7, 7, 1, 2)
    assert s["tokens_per_forward"] == pytest.approx(7 / 4)
    result = Result(tokens=list(range(20)), text="x", nfe=10, seconds=2.0, stop_reason="stop_token", prompt_ids=[1],
                    config={"max_new_tokens": 64})
    final = render.stats(steps, len(steps), result)
    assert (final["tokens"], final["nfe"], final["tokens_per_second"]) == (20, 10, 10.0)
    assert (final["ar_forwards"], final["block"], final["blocks_planned"]) == (20, 2, 2)


@pytest.fixture(scope="module")
def tiny_run(tiny_checkpoint):
    from pangu_demo.loading import load_model

    lm = load_model(tiny_checkpoint, progress=False)
    steps, result = run(Decoder(lm.model, lm.tokenizer), lm.tokenizer.encode("Hello & <b>"),
                        DecodeConfig(max_new_tokens=64, num_small_blocks=4, threshold=0.5, stop_ids=()))
    return lm, steps, result


def test_the_race_line_counts_reply_tokens_as_the_stats_do(tiny_run):
    _, steps, _ = tiny_run
    # Any frequent token as the stop token cuts blocks mid-way, where the padding after it must not count.
    tokens = [t for s in steps for t in s.committed_tokens]
    stop = {max(set(tokens), key=tokens.count)}
    for stop_ids in ((), stop):
        expected = [render.reply_commits(steps, k, stop_ids)[0] for k in range(1, len(steps) + 1)]
        assert render.reply_curve(steps, stop_ids) == expected
    assert render.reply_curve(steps, stop) != render.reply_curve(steps)


def test_real_run_renders_consistently(tiny_run):
    lm, steps, result = tiny_run
    mask = lm.tokenizer.ids.mask
    for k in range(1, len(steps) + 1):
        tags = cells(render.grid_html(steps, k, lm.tokenizer.token_text, mask, 4))
        assert len(tags) == 32
        current = steps[k - 1]
        assert sum("pg-mask" not in t for t in tags) == sum(t != mask for t in current.block_tokens)
    fig = render.heatmap_figure(steps, None, "block", lm.tokenizer.token_text)
    rows = [s for s in steps if s.kind == "denoise" and s.block == len(result.tokens) // 32 - 1]
    assert len(fig["data"][0]["z"]) == len(rows)
    assert render.stats(steps, None, result)["nfe"] == result.nfe == len(steps)


def test_comparison_reports_the_measured_speed_up_and_forwards():
    def result(tokens: int, nfe: int, seconds: float, stop: str = "stop_token") -> Result:
        return Result(tokens=list(range(tokens)), text="", nfe=nfe, seconds=seconds, stop_reason=stop,
                      prompt_ids=[1], config={})

    text = re.sub("<[^>]+>", "", render.comparison_html(result(60, 20, 0.25), result(60, 60, 0.5)))
    assert "60 tokens in 20 forwards, 0.25 s (240 tokens/s)" in text
    assert "60 tokens in 60 forwards, 0.50 s (120 tokens/s)" in text
    assert "Speed-up over AR on this machine: 2.00×" in text and "3.00 tokens per forward" in text
    assert "differ" not in text and "stopped" not in text
    text = re.sub("<[^>]+>", "", render.comparison_html(result(30, 20, 0.25, "cancelled"), result(60, 60, 0.5)))
    assert "differ" in text and "stopped early" in text
    assert "Speed-up" not in text and "Slower" not in text  # no verdict from a stopped run's few tokens
    # Slower than AR is said as such, and one of anything is singular.
    text = re.sub("<[^>]+>", "", render.comparison_html(result(1, 1, 0.5), result(1, 1, 0.1)))
    assert "Slower than AR on this machine: 0.20× its speed" in text and "Speed-up" not in text
    assert "1 token in 1 forward," in text


def test_the_race_figure_climbs_by_the_commits_of_each_forward():
    steps, _ = fake_run(SEVEN)  # forwards commit 1, 2, 1, 3, then 1 token each
    ar, _ = fake_run([[j] for j in range(1, 32)])  # one token per forward, as AR
    fig = render.race_figure([("block diffusion", steps), ("AR", ar)])
    run_by_nfe, run_by_time, ar_by_nfe, ar_by_time = fig["data"]
    assert run_by_nfe["y"][:5] == [1, 3, 4, 7, 8] and run_by_nfe["x"][:5] == [1, 2, 3, 4, 5]
    assert ar_by_nfe["y"][:5] == [1, 2, 3, 4, 5]
    assert run_by_time["y"] == run_by_nfe["y"] and run_by_time["x"] == pytest.approx([s.elapsed for s in steps])
    assert run_by_time["xaxis"] == ar_by_time["xaxis"] == "x2" and "xaxis" not in ar_by_nfe


def test_runs_with_the_same_curve_stay_told_apart():
    # AR and the one-token rules draw the same line: a dash pattern each keeps every one visible over the others.
    steps, _ = fake_run(SEVEN)
    fig = render.race_figure([(f"run {k}", steps) for k in range(6)])
    assert len({line["line"]["dash"] for line in fig["data"][::2]}) == 6


def sweep_row(label: str, text: str, threshold: float | None, this_run: bool = False) -> render.SweepRow:
    steps, _ = fake_run(SEVEN)
    with_confidences(steps, {3: 0.41, 4: 0.6})  # below 0.7 and 0.9: one guess at 0.5, two at 0.9
    result = Result(tokens=[1] * 10, text=text, nfe=4, seconds=0.1, stop_reason="stop_token", prompt_ids=[],
                    config={})
    return render.SweepRow(label, steps, result, threshold, this_run)


def test_the_threshold_sweep_table_lists_each_run_in_order():
    html_text, figure = render.sweep_view([sweep_row("0.5", "[unused16]t[unused17]" + "x" * 100, 0.5),
                                           sweep_row("0.9", "[unused16]t[unused17]It is <b>7</b>.", 0.9, True)])
    assert [t["name"] for t in figure["data"][::2]] == ["threshold 0.5", "threshold 0.9"]  # a line each
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html_text)[1:]
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows]
    assert [c[0] for c in cells] == ["0.5", "0.9 · this run"]  # in the order given, the recorded run marked
    assert [c[1:4] for c in cells] == [["4", "2.50", "1"], ["4", "2.50", "2"]]
    assert cells[1][4] == "It is &lt;b&gt;7&lt;/b&gt;." and cells[0][4] == "x" * 69 + "…"
    assert 'class="pg-this-run"' in html_text and "<th>threshold</th>" in html_text
    # A reply that ended inside its thinking trace says so, not a bare "(no answer)".
    unfinished, _ = render.sweep_view([sweep_row("0.5", "[unused16]14 + 4 = 18", 0.5)])
    assert "(no answer: the reply ended inside its thinking trace)" in unfinished
    assert "below its threshold" in unfinished  # each row's own threshold


def test_the_rule_sweep_counts_guesses_only_for_rules_with_a_threshold():
    html_text, figure = render.sweep_view([sweep_row("confidence_threshold 0.9", "[unused16][unused17]7", 0.9),
                                           sweep_row("entropy", "[unused16][unused17]7", None, True),
                                           sweep_row("<AR>", "[unused16][unused17]7", None)], varies="rule")
    assert [t["name"] for t in figure["data"][::2]] == ["confidence_threshold 0.9", "entropy", "<AR>"]
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", html_text)[1:]]
    assert [c[0] for c in cells] == ["confidence_<wbr>threshold 0.9", "entropy · this run", "&lt;AR&gt;"]
    assert [c[3] for c in cells] == ["2", "—", "—"]
    assert "<th>rule</th>" in html_text and "other rules" in html_text
    assert "need more forwards than AR" in html_text  # why the one-token rules lose to AR, said by the table
    assert "more forwards than AR" not in render.sweep_view([sweep_row("0.5", "[unused16][unused17]7", 0.5)])[0]


def test_the_race_figure_gives_each_run_its_colour():
    steps, _ = fake_run(SEVEN)
    fig = render.race_figure([(f"threshold {t}", steps) for t in (0.5, 0.7, 0.9)], title="Sweep")
    lines = fig["data"][::2]  # one line per run against forwards, its twin against seconds
    assert [line["name"] for line in lines] == ["threshold 0.5", "threshold 0.7", "threshold 0.9"]
    assert len({line["line"]["color"] for line in lines}) == 3 and fig["layout"]["title"]["text"].startswith("Sweep")


def test_the_caption_of_a_finished_run_is_not_live():
    steps, table = fake_run(SEVEN)
    live = render.grid_html(steps, len(steps), table.get, MASK)
    done = render.grid_html(steps, len(steps), table.get, MASK, run_over=True)
    # The commit forward of block 1 opened block 2 and wrote its first token.
    assert "Block 2 (latest) · one small block of 32 · 1 forward so far, 1.0 tok/fwd · 31 MASKs left" in live
    assert "Block 2 (last) · one small block of 32 · 1 forward, 1.0 tok/fwd · 31 MASKs left unused" in done
    assert "so far" not in done


def test_the_current_block_shows_its_tokens_per_forward():
    steps, table = fake_run(SEVEN)
    for k in range(1, 6):  # the prefill, then denoising forwards of block 1
        committed = sum(len(s.committed) for s in steps[:k])
        caption = f"{k} forward{'s' if k > 1 else ''} so far, {committed / k:.1f} tok/fwd"
        assert caption in render.grid_html(steps, k, table.get, MASK), caption


def test_a_block_of_only_padding_is_explained():
    from pangu_demo.tokenizer import ROLE_TOKENS

    pad = {token_id(j): ROLE_TOKENS["turn_end"] for j in range(L)}
    steps, table = fake_run(SEVEN, texts=pad)
    full = len(steps) - 1  # block 0 complete, before the commit forward opens block 1
    assert "only end-of-turn padding" in render.grid_html(steps, full, table.get, MASK, stop_ids=set(pad))
    steps, table = fake_run(SEVEN)  # the same tokens, but none of them ends the reply
    assert "only end-of-turn padding" not in render.grid_html(steps, full, table.get, MASK)


def test_padding_after_the_stop_token_is_a_dot_and_the_stop_token_keeps_its_name():
    from pangu_demo.tokenizer import ROLE_TOKENS

    end = {token_id(j): ROLE_TOKENS["turn_end"] for j in range(20, L)}  # the reply stops at position 20
    steps, table = fake_run(SEVEN, texts=end)
    page = render.grid_html(steps, len(steps) - 1, table.get, MASK, stop_ids=set(end))
    tags = cells(page)
    labels = re.findall(r'<span class="pg-tok">([^<]*)</span>', page.split('class="pg-cells"', 1)[1])
    assert labels[20] == html_escape(render.visible_text(ROLE_TOKENS["turn_end"]))
    assert labels[21:] == ["·"] * (L - 21) and "·" not in labels[:20]
    assert "pg-pad" not in tags[20] and all("pg-pad" in t for t in tags[21:])
    assert "padding after the stop token" in tags[31] and "end-of-turn padding" in page
    plain, table = fake_run(SEVEN)
    assert "pg-pad" not in render.grid_html(plain, len(plain) - 1, table.get, MASK)


def with_confidences(steps: list[Step], conf: dict[int, float]) -> list[Step]:
    """Give the committed positions of every denoising step the confidence in `conf` (default 0.95)."""
    for s in steps:
        if s.kind == "denoise":
            s.committed_confidence = [conf.get(p, 0.95) for p in s.committed]
    return steps


def test_commits_below_the_threshold_are_marked_in_grid_rows_heatmap_and_stats():
    steps, table = fake_run(SEVEN)
    with_confidences(steps, {3: 0.41, 5: 0.9, 6: 0.93})  # 0.9 does not clear 0.9: the engine needs > threshold
    html_text = render.grid_html(steps, 5, table.get, MASK, threshold=0.9)
    marked = [i for i, t in enumerate(cells(html_text)) if "pg-below" in t]
    assert marked == [3, 5]
    assert "2 committed below the threshold" in html_text
    assert "committed below the threshold 0.9" in html_text  # legend
    # Before any run the setting may still change: the legend names no number that could go stale.
    empty = render.grid_html([], 0, table.get, MASK, threshold=0.9)
    assert "committed below the threshold (every forward" in empty and "0.9" not in empty
    assert "below the threshold: every forward commits a token, sure or not" in html_text  # marked cells' hover
    # No threshold (an algorithm without one): nothing is marked, no legend entry.
    plain = render.grid_html(steps, 5, table.get, MASK)
    assert "pg-below" not in plain and "below the threshold" not in plain
    # The finished block keeps its marks as a row once the next block opens.
    finished = render.grid_html(steps, len(steps), table.get, MASK, threshold=0.9)
    row = finished.split('class="pg-finished"', 1)[1].split('class="pg-caption"', 1)[0]
    assert row.count("pg-chip pg-below") == 2
    fig = render.heatmap_figure(steps, 5, "block", table.get, threshold=0.9)
    below = [t for t in fig["data"] if t.get("name") == "committed below the threshold"]
    assert len(below) == 1 and sorted(below[0]["x"]) == [3, 5]
    assert 3 not in fig["data"][1]["x"] and 4 in fig["data"][1]["x"]
    # Under each red cross a wider white one, so that it shows on the red cell of a low confidence.
    halo = fig["data"][fig["data"].index(below[0]) - 1]
    assert halo["x"] == below[0]["x"] and halo["y"] == below[0]["y"] and not halo["showlegend"]
    assert halo["marker"]["line"]["width"] > below[0]["marker"]["line"]["width"]
    assert halo["marker"]["color"] == "#ffffff" and below[0]["marker"]["color"] == "#f43f5e"
    answer = render.heatmap_figure(steps, 5, "answer", table.get, threshold=0.9)
    assert sorted(answer["data"][1]["x"]) == [3, 5] and answer["layout"]["showlegend"]
    assert render.stats(steps, 5, threshold=0.9)["below_threshold"] == 2
    assert render.stats(steps, 2, threshold=0.9)["below_threshold"] == 0  # before the forward that committed 3
    assert render.stats(steps, 5)["below_threshold"] is None
    html_ = render.stats_html(render.stats(steps, 5, threshold=0.9))
    assert "below threshold" in html_
    # Every figure explains itself on hover.
    assert html_.count('class="pg-stat"') == html_.count('class="pg-stat" title="') == 8


@pytest.mark.parametrize(("config", "expected"), [
    (DecodeConfig(threshold=0.8), 0.8),
    (DecodeConfig(algorithm="elastic", threshold=0.7), 0.7),
    (DecodeConfig(algorithm="entropy"), None),
    (DecodeConfig(algorithm="low_confidence"), None),
    (DecodeConfig(mode="ar"), None),
    (None, None),
])
def test_commit_threshold_only_for_algorithms_with_one(config, expected):
    assert render.commit_threshold(config) == expected


def test_fused_forward_position_zero_is_never_below_the_threshold():
    steps, _ = fake_run(SEVEN)
    s = steps[1]
    s.kind, s.committed, s.committed_confidence = "fused", [0, 1, 2], [0.3, 0.5, 0.95]
    assert render.below_threshold(s, 0.9) == [1]
    s.kind = "commit"
    assert render.below_threshold(s, 0.9) == []


def test_figures_count_the_reply_not_the_padding_after_its_stop_token():
    from pangu_demo.tokenizer import ROLE_TOKENS

    # The padding after the stop token at position 20 is committed first, all of it below the threshold.
    end = {token_id(j): ROLE_TOKENS["turn_end"] for j in range(20, L)}
    steps, table = fake_run([list(range(20, L)), [1, 2], list(range(3, 20))], texts=end, confidence=0.5)
    steps = steps[:-1]  # the run ends in this block: no commit forward
    stop_ids = set(end)
    figures = [render.stats(steps, k, threshold=0.9, stop_ids=stop_ids) for k in range(1, len(steps) + 1)]
    assert [f["tokens"] for f in figures] == [1, 2, 4, 21]  # never more than the reply, and it only grows
    assert [f["below_threshold"] for f in figures] == [0, 1, 3, 20]
    result = Result(tokens=[token_id(j) for j in range(21)], text="", nfe=len(steps), seconds=0.1,
                    stop_reason="stop_token", prompt_ids=[1], config={"max_new_tokens": 64})
    assert render.stats(steps, None, result, threshold=0.9, stop_ids=stop_ids)["tokens"] == figures[-1]["tokens"]
    # The block's own count (its row label) is the reply's too, and the forward line names the padding as such.
    assert render.block_speed(render.block_states(steps, None, 0.9, stop_ids)[0], MASK)[0] == figures[-1]["tokens"]
    said = render.forward_text(steps[1], table.get, 0.9, stop_ids=stop_ids)
    assert "'‹end›' 0.500 and 11 positions of padding after the stop token." in said and said.count("‹end›") == 1
    # The grid marks the same 20 commits below the threshold; the padding cells are padding only.
    page = render.grid_html(steps, None, table.get, MASK, threshold=0.9, stop_ids=stop_ids)
    tags = cells(page)
    assert sum("pg-below" in t for t in tags) == 20 and not any("pg-below" in t for t in tags[21:])
    assert "20 committed below the threshold" in page
    # And both heatmap views mark the same 20.
    for view in ("block", "answer"):
        fig = render.heatmap_figure(steps, None, view, table.get, threshold=0.9, stop_ids=stop_ids)
        below = [t for t in fig["data"] if t.get("name") == "committed below the threshold"]
        assert sorted(below[0]["x"]) == list(range(1, 21)), view
    # The whole-reply view plots the reply as the stats count it: 21 tokens, not the 11 padding cells after them.
    answer = render.heatmap_figure(steps, None, "answer", table.get, threshold=0.9, stop_ids=stop_ids)
    assert sorted(answer["data"][0]["x"]) == list(range(21)) == list(range(figures[-1]["tokens"]))


def test_any_stop_id_ends_the_reply_in_the_grid_as_in_the_figures():
    # The reply stops at position 20 on a stop id that is not the end-of-turn token (</s>, say); the model then
    # fills the rest of the block with ordinary tokens, all below the threshold.
    steps, table = fake_run([list(range(21, L)), list(range(1, 21))], confidence=0.5)
    steps = steps[:-1]
    stop_ids = {token_id(20)}
    page = render.grid_html(steps, None, table.get, MASK, threshold=0.9, stop_ids=stop_ids)
    tags = cells(page)
    labels = re.findall(r'<span class="pg-tok">([^<]*)</span>', page.split('class="pg-cells"', 1)[1])
    assert not any("pg-below" in t for t in tags[21:]) and labels[21:] == [f"t{j}" for j in range(21, L)]
    figures = render.stats(steps, None, threshold=0.9, stop_ids=stop_ids)
    assert figures["tokens"] == 21 and sum("pg-below" in t for t in tags) == figures["below_threshold"] == 20


def test_a_long_reply_draws_only_the_latest_finished_blocks(tiny_decoder: Decoder, monkeypatch) -> None:
    monkeypatch.setattr(render, "FINISHED_SHOWN", 2)
    steps, result = run(tiny_decoder, tiny_decoder.tok.encode("How many eggs?"),
                        DecodeConfig(max_new_tokens=160, threshold=0.5, stop_ids=(-1,)))  # no stop: five blocks
    assert len(result.tokens) == 160
    text_of = tiny_decoder.tok.token_text
    whole = render.grid_html(steps, len(steps), text_of, tiny_decoder.mask_id)
    assert re.findall(r"block (\d+) · \d+ fwd", whole) == ["4", "3"]  # newest first in the page source
    assert "the latest 2; blocks 1-2 are in the chat" in whole
    third = next(i for i, s in enumerate(steps, 1) if s.block == 2)  # the first forward of block 3
    early = render.grid_html(steps, third, text_of, tiny_decoder.mask_id)
    assert re.findall(r"block (\d+) · \d+ fwd", early) == ["2", "1"] and "blocks 1-" not in early


def test_moving_frames_of_a_long_reply_draw_the_latest_blocks_of_the_answer(tiny_decoder: Decoder,
                                                                            monkeypatch) -> None:
    from pangu_demo import streaming
    from pangu_demo.streaming import FrameOptions, Recording, build_frame

    monkeypatch.setattr(streaming, "ANSWER_BLOCKS_MOVING", 2)
    steps, result = run(tiny_decoder, tiny_decoder.tok.encode("How many eggs?"),
                        DecodeConfig(max_new_tokens=160, threshold=0.5, stop_ids=(-1,)))
    rec = Recording(steps=steps, result=result, config=DecodeConfig(max_new_tokens=160, threshold=0.5))
    answer = FrameOptions(view="answer")

    def token_indices(**frame) -> list[int]:
        figure = build_frame(rec, tiny_decoder.tok.token_text, tiny_decoder.mask_id, answer, **frame).figure
        return figure["data"][0]["x"]

    assert sorted(token_indices(final=True)) == list(range(160))  # at rest: every token
    assert sorted(token_indices(final=False)) == list(range(96, 160))  # streaming: blocks 4 and 5
    assert sorted(token_indices(final=True, moving=True)) == list(range(96, 160))  # Play
    title = render.heatmap_figure(steps, len(steps), "answer", latest_blocks=2)["layout"]["title"]["text"]
    assert "blocks 4-5 while it runs" in title


def test_a_guess_passed_over_for_the_leftmost_mask_is_told_as_elastic_does_it():
    steps, table = fake_run(SEVEN)
    # The leftmost MASK at 0.5 is committed while position 9 cleared 0.9: only elastic leaves a sure one for later.
    leftmost = dataclasses.replace(steps[2], candidates={3: (token_id(3), 0.5), 9: (token_id(9), 0.95)},
                                   committed=[3], committed_tokens=[token_id(3)], committed_confidence=[0.5])
    said = render.forward_text(leftmost, table.get, 0.9)
    assert "Elastic commits the leftmost MASK first" in said and "1 further right cleared 0.9" in said
    assert "None cleared" not in said
    nothing_cleared = dataclasses.replace(leftmost, candidates={3: (token_id(3), 0.5), 9: (token_id(9), 0.4)})
    assert "None cleared 0.9" in render.forward_text(nothing_cleared, table.get, 0.9)


def test_ar_blocks_are_told_without_denoising_words():
    steps, table = fake_run(SEVEN)
    ar = [dataclasses.replace(s, kind="ar") if s.kind == "denoise" else s for s in steps]
    live = render.grid_html(ar, 4, table.get, MASK)
    caption = live.split('class="pg-caption"', 1)[1].split("</div>", 1)[0]
    assert "AR, one token per forward" in caption and "MASK" not in caption and "positions not written" in caption
    assert "step 1: committed by AR forward 1 of this block" in html.unescape(live)
    assert 'title="position 9: not written yet"' in live and "MASK (small block" not in live
    assert "How to read this (AR mode)" in live and "still MASK" not in live and "small-block boundary" not in live
    # After the prefill alone no step says "ar" yet: the run's mode does.
    first = render.grid_html(ar, 1, table.get, MASK, blocks=render.block_states(ar, 1, ar=True))
    assert "How to read this (AR mode)" in first and "MASK left" not in first
    assert "How to read this (AR mode)" not in render.grid_html(ar, 1, table.get, MASK)
    # The heatmap says so too: no denoising forward to draw, as AR has none.
    empty = render.heatmap_figure(ar, 1, blocks=render.block_states(ar, 1, ar=True))
    assert "No denoising forwards in this view (AR mode" in empty["layout"]["annotations"][0]["text"].replace("<br>",
                                                                                                          " ")
    done = html.unescape(render.grid_html(ar, len(ar), table.get, MASK))  # block 1 finished, shown as a row
    assert re.search(r"the one that opened it and \d+ AR\)", done) and "denoising)" not in done
    # The same run by block diffusion keeps its words.
    assert re.search(r"the one that opened it and \d+ denoising\)", html.unescape(
        render.grid_html(steps, len(steps), table.get, MASK)))


def test_small_blocks_count_from_one_in_a_mask_cells_title():
    steps, table = fake_run(SEVEN)
    tags = cells(render.grid_html(steps, 2, table.get, MASK, num_small_blocks=4))
    assert 'title="position 9: MASK (small block 2)"' in tags[9]  # as the forward line says "small block 2 of 4"

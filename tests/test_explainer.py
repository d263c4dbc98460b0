"""The "How block diffusion works" panel: its pictures are the engine's attention masks."""

from __future__ import annotations

import re

from pangu_demo import explainer


def pattern(f: explainer.Forward) -> list[str]:
    return ["".join("#" if seen else "." for seen in row) for row in f.allowed()]


def test_each_forward_sees_what_context_causal_block_diffusion_allows() -> None:
    prefill, denoise_1, commit, denoise_2 = explainer.FORWARDS
    assert pattern(prefill) == ["#..", "##.", "###"]  # causal
    assert pattern(denoise_1) == ["#######"] * 4  # the prompt, and the whole block both ways
    assert pattern(commit) == ["####...", "#####..", "######.", "#######"]  # the prompt, the block causally
    assert pattern(denoise_2) == ["#" * 11] * 4


def test_the_html_draws_every_cell_and_says_whether_it_is_cached() -> None:
    page = explainer.explainer_html()
    cells = re.findall(r'<td class="(pg-att-\w+)"', page)
    assert len(cells) == sum(len(f.queries) * (len(f.cached) + len(f.queries)) for f in explainer.FORWARDS)
    # Denoising block 2: 7 cached keys and the block's 4 positions, for each of 4 rows.
    panel = page.split("4. Denoising block 2", 1)[1]
    assert re.findall(r'<td class="(pg-att-\w+)"', panel) == (["pg-att-cache"] * 7 + ["pg-att-yes"] * 4) * 4
    assert 'title="a2 does not see a3"' in page and 'title="M sees b1"' in page
    # A screen reader reads each cell and every header: none is empty.
    assert re.findall(r"<(th|td)[^>]*></\1>", page) == []


def test_the_pictures_follow_the_engine(monkeypatch) -> None:
    """A different mask in the engine gives different pictures: they are computed, not drawn by hand."""
    before = explainer.explainer_html()
    monkeypatch.setattr(explainer, "attention_allowed", lambda valid, q, c: valid[:, None, None, :].expand(
        valid.shape[0], 1, q, valid.shape[1]))
    assert explainer.explainer_html() != before

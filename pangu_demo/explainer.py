"""The page's "How block diffusion works" panel: what each kind of forward pass sees.

The attention pictures are drawn from the engine's own mask (`engine.attention_allowed`) for a toy prompt of
three tokens and blocks of four, so they show what the decoder does, not a drawing of it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch

from .engine import attention_allowed

PROMPT = ["p1", "p2", "p3"]
BLOCK_1 = ["a1", "a2", "a3", "a4"]
MASK = "M"


@dataclass
class Forward:
    title: str
    cached: list[str]  # keys already in the KV cache
    queries: list[str]  # the tokens this forward runs (the last keys)
    causal: bool  # prefill and commit forwards are causal; a block being denoised sees itself in full
    text: str

    def allowed(self) -> list[list[bool]]:
        keys = len(self.cached) + len(self.queries)
        causal_len = len(self.queries) if self.causal else 0
        grid = attention_allowed(torch.ones(1, keys, dtype=torch.bool), len(self.queries), causal_len)
        return grid[0, 0].tolist()


FORWARDS = [
    Forward("1. Prefill", [], PROMPT, True,
            "The prompt runs in one forward with a causal mask and enters the KV cache. As in autoregressive "
            "decoding, each position's output predicts the next token: the prompt's last position predicts a1, "
            "the first token of block 1."),
    Forward("2. Denoising block 1", PROMPT, ["a1", MASK, MASK, MASK], False,
            "a1 and the MASKs see the whole prompt (from the cache) and every position of their block, left and "
            "right. Outputs are still read one position on: a1's output predicts the first MASK. Each forward "
            "commits at least one MASK (by the default rule, every one the model is sure enough of) and runs "
            "again; nothing of the block is stored yet."),
    Forward("3. Commit forward", PROMPT, BLOCK_1, True,
            "The finished block runs once more, causally, and enters the cache, exactly as if it had been "
            "written left to right. Its last position predicts b1, the first token of block 2."),
    Forward("4. Denoising block 2", PROMPT + BLOCK_1, ["b1", MASK, MASK, MASK], False,
            "The same with block 1 in the cache. The context was written causally, one block after another; the "
            "block sees all of it, and itself in full, and is decoded in parallel. Hence context-causal block "
            "diffusion."),
]


def _matrix_html(f: Forward) -> str:
    keys = f.cached + f.queries
    head = "".join(f'<th scope="col" class="pg-att-key{" pg-att-cached" if k < len(f.cached) else ""}">'
                   f'{html.escape(name)}</th>' for k, name in enumerate(keys))
    rows = []
    for name, row in zip(f.queries, f.allowed(), strict=True):
        cells = []
        for k, seen in enumerate(row):
            kind = ("pg-att-cache" if k < len(f.cached) else "pg-att-yes") if seen else "pg-att-no"
            verb = "sees" if seen else "does not see"
            cells.append(f'<td class="{kind}" title="{html.escape(f"{name} {verb} {keys[k]}")}">'
                         f'<span class="pg-sr">{"yes" if seen else "no"}</span></td>')
        rows.append(f'<tr><th scope="row" class="pg-att-query">{html.escape(name)}</th>{"".join(cells)}</tr>')
    return (f'<table class="pg-att" aria-label="{html.escape(f.title)}: which tokens each query sees">'
            f'<tr><th scope="col"><span class="pg-sr">row sees column</span></th>{head}</tr>{"".join(rows)}</table>')


def explainer_html() -> str:
    """Four forward passes of a toy run: the attention each one uses (rows see columns), and why."""
    panels = "".join(
        f'<div class="pg-att-panel"><div class="pg-att-title">{html.escape(f.title)}</div>{_matrix_html(f)}'
        f'<div class="pg-att-text">{html.escape(f.text)}</div></div>' for f in FORWARDS)
    legend = ('<div class="pg-att-legend"><span><span class="pg-att-swatch pg-att-cache"></span> seen, from the KV '
              'cache</span><span><span class="pg-att-swatch pg-att-yes"></span> seen, run in this forward</span>'
              '<span><span class="pg-att-swatch pg-att-no"></span> not seen</span></div>')
    intro = ("Each picture is one forward pass of a toy run (a prompt of 3 tokens, blocks of 4; the real blocks "
             "hold 32). A row is a token the forward runs, a column a token it can attend to. The pictures come "
             "from the decoder's own attention mask.")
    outro = ("With small blocks (Decoding settings) the MASKs of a block are filled one small block at a time, left "
             "to right; the attention stays as drawn. Every block costs the forward that opens it (the prefill or the "
             "commit of the block before, which writes its first token) and at least one denoising forward for each "
             "small block that still holds a MASK (31 with 32 small blocks of one token), where autoregressive "
             "decoding spends one per token: the fewer denoising forwards a block needs, the larger the saving the "
             "stats over the grid show.")
    return (f'<div class="pg-explainer"><p>{html.escape(intro)}</p>{legend}'
            f'<div class="pg-att-panels">{panels}</div><p>{html.escape(outro)}</p></div>')

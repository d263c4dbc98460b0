"""The optional fused forward (commit of block b + first denoising forward of block b+1) against an
uncached reference of the same procedure, and what it saves."""

from __future__ import annotations

import pytest
from test_engine import L, blocks_of, cfg, full_forward, next_token

from pangu_demo.engine import Decoder, run
from pangu_demo.loading import LoadedModel
from pangu_demo.sampling import sample


def reference_fused(model, prompt: list[int], mask_id: int, algorithm: str, num_small_blocks: int,
                    max_new_tokens: int, threshold: float = 0.9) -> list[int]:
    """Greedy block diffusion where every block after the first starts all-MASK: position 0 comes from
    the previous block's last output (causal), the rest from a full-attention pass over the masks."""
    size = L // num_small_blocks
    seq = list(prompt)
    block = [next_token(model, seq, mask_id)] + [mask_id] * (L - 1)
    generated: list[int] = []
    for b in range(-(-max_new_tokens // L)):
        fused = b > 0
        if fused:
            block = [mask_id] * L
        for sb in range(num_small_blocks):
            lo, hi = (sb * size if fused else max(sb * size, 1)), (sb + 1) * size
            while any(block[j] == mask_id for j in range(lo, hi)):
                logits = full_forward(model, seq + block, len(seq))
                cand = sample(logits[len(seq) - 1: len(seq) + L - 1], 0.0, 1.0, 0, suppress=(mask_id,))
                probs, tokens = cand.token_probs.tolist(), cand.tokens.tolist()
                targets = [j for j in range(lo, hi) if block[j] == mask_id]
                if fused:  # the fused forward: position 0 is forced, plus what clears the threshold
                    chosen = {0} | ({j for j in targets if probs[j] > threshold}
                                    if algorithm == "confidence_threshold" else set())
                    fused = False
                else:
                    best = max(targets, key=lambda j: (probs[j], -j))
                    chosen = {best} | ({j for j in targets if probs[j] > threshold}
                                       if algorithm == "confidence_threshold" else set())
                for j in chosen:
                    block[j] = tokens[j]
        generated += block
        seq += block
    return generated[:max_new_tokens]


@pytest.mark.parametrize("num_small_blocks", [1, 4])
@pytest.mark.parametrize("algorithm", ["confidence_threshold", "low_confidence"])
def test_fused_equals_uncached_reference(tiny_model: LoadedModel, tiny_decoder: Decoder, algorithm: str,
                                         num_small_blocks: int) -> None:
    tok = tiny_model.tokenizer
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Count the eggs."}]))
    config = cfg(algorithm=algorithm, num_small_blocks=num_small_blocks, max_new_tokens=80, fused_commit=True)
    steps, result = run(tiny_decoder, prompt, config)
    assert result.tokens == reference_fused(tiny_model.model, prompt, tiny_decoder.mask_id, algorithm,
                                            num_small_blocks, 80)
    kinds = [s.kind for s in steps]
    assert "commit" not in kinds and kinds.count("fused") == 2  # blocks 1 and 2 start with a fused forward


def test_fused_saves_one_forward_per_block(tiny_decoder: Decoder) -> None:
    prompt = tiny_decoder.tok.encode("Shall I compare thee")
    # A threshold near 0 fills a block in one forward: plain = denoise + commit per block, fused = one forward.
    plain, _ = run(tiny_decoder, prompt, cfg(threshold=1e-9, max_new_tokens=96))
    fused, _ = run(tiny_decoder, prompt, cfg(threshold=1e-9, max_new_tokens=96, fused_commit=True))
    assert [s.kind for s in plain] == ["prefill", "denoise", "commit", "denoise", "commit", "denoise"]
    assert [s.kind for s in fused] == ["prefill", "denoise", "fused", "fused"]
    for b, rows in blocks_of(fused).items():
        if b > 0:
            assert rows[0].kind == "fused" and rows[0].committed[0] == 0

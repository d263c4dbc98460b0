"""The decoding engine against independent references, and the invariants of its step stream.

Everything runs on the tiny random checkpoint in float64 (see conftest.py), so greedy choices do not
depend on summation order and the cached engine must match the uncached references token for token.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from pangu_demo.engine import ALGORITHMS, DecodeConfig, Decoder, Result, Step, run
from pangu_demo.loading import LoadedModel
from pangu_demo.sampling import confidence, sample

L = 32  # block length


@pytest.fixture(scope="module")
def prompt(tiny_model: LoadedModel) -> list[int]:
    tok = tiny_model.tokenizer
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": "How many eggs does Claire eat?"}]))


def cfg(**kw) -> DecodeConfig:
    """Greedy, no stop tokens unless asked: random weights rarely produce a stop token anyway."""
    kw.setdefault("stop_ids", ())
    return DecodeConfig(**kw)


def blocks_of(steps: list[Step]) -> dict[int, list[Step]]:
    out: dict[int, list[Step]] = {}
    for s in steps:
        out.setdefault(s.block, []).append(s)
    return out


# -- uncached reference --------------------------------------------------------------------------
def full_forward(model: torch.nn.Module, seq: list[int], block_start: int | None) -> torch.Tensor:
    """Logits for the whole sequence, no cache. Causal everywhere; if block_start is given, the
    positions from there on (the current block) also see each other in full."""
    n = len(seq)
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    if block_start is not None:
        allowed[block_start:, block_start:] = True
    mask = torch.zeros(1, 1, n, n, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([seq]), position_ids=torch.arange(n)[None], attention_mask=mask,
                    use_cache=False)
    return out.logits[0]


def next_token(model: torch.nn.Module, seq: list[int], mask_id: int) -> int:
    """The greedy next token after `seq` (causal), never MASK: the prefill's and each commit forward's."""
    return int(sample(full_forward(model, seq, None)[-1], 0.0, 1.0, 0, suppress=(mask_id,)).tokens)


def reference_block_diffusion(model: torch.nn.Module, prompt: list[int], mask_id: int, algorithm: str,
                              num_small_blocks: int, max_new_tokens: int, threshold: float = 0.9,
                              stop_id: int | None = None) -> tuple[list[int], list[tuple[int, list[int]]], int]:
    """Greedy context-causal block diffusion recomputing the full sequence for every forward.

    Returns the generated tokens (up to and including `stop_id`), per denoising forward (block, committed
    positions), and the number of forwards (prefill, denoising forwards, commit forwards between blocks)."""
    size = L // num_small_blocks
    seq = list(prompt)
    first = next_token(model, seq, mask_id)
    generated: list[int] = []
    commits: list[tuple[int, list[int]]] = []
    n_blocks = -(-max_new_tokens // L)
    for b in range(n_blocks):
        block = [first] + [mask_id] * (L - 1)
        for sb in range(num_small_blocks):
            lo, hi = max(sb * size, 1), (sb + 1) * size
            while any(block[j] == mask_id for j in range(lo, hi)):
                logits = full_forward(model, seq + block, len(seq))
                # Block position j is predicted by the output at absolute position len(seq) + j - 1.
                cand = sample(logits[len(seq) - 1: len(seq) + L - 1], 0.0, 1.0, 0, suppress=(mask_id,))
                score, probs, tokens = confidence(algorithm, cand).tolist(), cand.token_probs.tolist(), \
                    cand.tokens.tolist()
                targets = [j for j in range(lo, hi) if block[j] == mask_id]
                if algorithm == "elastic":
                    chosen = [targets[0]]
                    j = targets[0] + 1
                    while j < hi and block[j] == mask_id and probs[j] > threshold:
                        chosen.append(j)
                        j += 1
                else:
                    best = targets[0]
                    for j in targets:  # strict '>' keeps the lowest position on ties
                        if score[j] > score[best]:
                            best = j
                    chosen = {best}
                    if algorithm == "confidence_threshold":
                        chosen |= {j for j in targets if probs[j] > threshold}
                    chosen = sorted(chosen)
                for j in chosen:
                    block[j] = tokens[j]
                commits.append((b, chosen))
            # After each small block: stop once the stop token has been produced.
            if stop_id is not None and stop_id in generated + block[:hi]:
                out = generated + block[:hi]
                return out[: out.index(stop_id) + 1][:max_new_tokens], commits, 1 + len(commits) + b
        generated += block
        seq += block
        if b < n_blocks - 1:
            first = next_token(model, seq, mask_id)  # the commit forward
    return generated[:max_new_tokens], commits, 1 + len(commits) + n_blocks - 1


@pytest.mark.parametrize("num_small_blocks", [1, 4, 32])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cached_diffusion_equals_uncached_reference(tiny_model: LoadedModel, tiny_decoder: Decoder,
                                                    prompt: list[int], algorithm: str, num_small_blocks: int) -> None:
    max_new = 70  # not a multiple of 32: the last block is cut
    steps, result = run(tiny_decoder, prompt, cfg(algorithm=algorithm, num_small_blocks=num_small_blocks,
                                                  max_new_tokens=max_new))
    ref_tokens, ref_commits, ref_nfe = reference_block_diffusion(tiny_model.model, prompt, tiny_decoder.mask_id,
                                                                 algorithm, num_small_blocks, max_new)
    assert result.tokens == ref_tokens
    # Whole blocks are decoded, then cut: every forward the reference makes, and no other.
    assert [(s.block, s.committed) for s in steps if s.kind == "denoise"] == ref_commits
    assert result.nfe == ref_nfe == len(steps)


# Prompts on which the tiny model opens a block with a token it has not produced before.
@pytest.mark.parametrize(("num_small_blocks", "question"), [(1, "What is 2 + 2?"), (4, "Tell me a story.")])
def test_a_stop_token_ends_decoding_after_its_small_block(tiny_model: LoadedModel, tiny_decoder: Decoder,
                                                          num_small_blocks: int, question: str) -> None:
    """As in the reference, the small block that holds the stop token is denoised to the end (what follows
    the stop token is dropped), and a stop token that opens a block still costs that block's first small block."""
    tok = tiny_model.tokenizer
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": question}]))
    config = dict(algorithm="confidence_threshold", num_small_blocks=num_small_blocks, max_new_tokens=96)
    _, base = run(tiny_decoder, prompt, cfg(**config))
    size = 32 // num_small_blocks
    # A token first produced mid-way through a small block, and one first produced at a block's position 0.
    mid = next(i for i in range(5, 90) if i % size not in (0, size - 1) and base.tokens[i] not in base.tokens[:i])
    opening = [i for i in (32, 64) if base.tokens[i] not in base.tokens[:i]]
    assert opening, "no block opens with a new token: the test would not cover that case"
    for i in [mid, *opening]:
        stop_id = base.tokens[i]
        steps, result = run(tiny_decoder, prompt, cfg(**config, stop_ids=(stop_id,)))
        ref_tokens, ref_commits, ref_nfe = reference_block_diffusion(
            tiny_model.model, prompt, tiny_decoder.mask_id, "confidence_threshold", num_small_blocks, 96,
            stop_id=stop_id)
        assert result.tokens == ref_tokens == base.tokens[: i + 1] and result.stop_reason == "stop_token"
        assert [(s.block, s.committed) for s in steps if s.kind == "denoise"] == ref_commits
        assert result.nfe == ref_nfe


# -- AR mode ------------------------------------------------------------------------------------
def test_ar_mode_equals_transformers_generate(tiny_model: LoadedModel, tiny_decoder: Decoder,
                                              prompt: list[int]) -> None:
    steps, result = run(tiny_decoder, prompt, cfg(mode="ar", max_new_tokens=40))
    out = tiny_model.model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False,
                                    eos_token_id=None, pad_token_id=tiny_model.tokenizer.ids.pad)
    assert result.tokens == out[0, len(prompt):].tolist()
    assert result.nfe == 40 == len(steps)  # one forward per token, the prefill included
    assert {s.kind for s in steps[1:]} == {"ar"}


# -- ties -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_ties_commit_lowest_position_and_lowest_token(tiny_model: LoadedModel, prompt: list[int],
                                                      algorithm: str) -> None:
    # A zero lm_head makes every distribution exactly uniform: every position and token ties.
    model = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    steps, result = run(Decoder(model, tiny_model.tokenizer), prompt, cfg(algorithm=algorithm, max_new_tokens=32))
    denoise = [s for s in steps if s.kind == "denoise"]
    assert [s.committed for s in denoise] == [[j] for j in range(1, 32)]
    assert result.tokens == [0] * 32


# -- the step stream ------------------------------------------------------------------------------
def check_stream(steps: list[Step], result: Result, mask_id: int, num_small_blocks: int) -> None:
    size = L // num_small_blocks
    assert result.nfe == len(steps)
    assert [s.nfe for s in steps] == list(range(1, len(steps) + 1))
    assert steps[0].kind == "prefill"
    prev: list[int] | None = None
    for s in steps:
        if s.kind in ("prefill", "commit"):  # a new block starts with one AR token at position 0
            assert s.committed == [0] and s.block_tokens[1:] == [mask_id] * (L - 1)
        else:
            assert s.kind == "denoise" and prev is not None
            assert len(s.committed) >= 1
            for j in s.committed:  # only masked positions of the current small block are committed
                assert prev[j] == mask_id and s.small_block * size <= j < (s.small_block + 1) * size
            for j, t in enumerate(prev):  # committed tokens never change
                if t != mask_id:
                    assert s.block_tokens[j] == t
        prev = s.block_tokens
    for block_steps in blocks_of(steps).values():
        assert sum(s.kind == "denoise" for s in block_steps) <= L - 1


@pytest.mark.parametrize(("algorithm", "num_small_blocks", "threshold"),
                         [("confidence_threshold", 1, 0.9), ("entropy", 4, 0.9), ("elastic", 8, 0.5),
                          ("topk_margin", 2, 0.9), ("low_confidence", 16, 0.9), ("confidence_threshold", 4, 0.3)])
def test_step_stream_invariants(tiny_decoder: Decoder, prompt: list[int], algorithm: str, num_small_blocks: int,
                                threshold: float) -> None:
    steps, result = run(tiny_decoder, prompt, cfg(algorithm=algorithm, num_small_blocks=num_small_blocks,
                                                  threshold=threshold, max_new_tokens=70))
    check_stream(steps, result, tiny_decoder.mask_id, num_small_blocks)
    assert len(result.tokens) == 70


@pytest.mark.parametrize("algorithm", ["confidence_threshold", "elastic"])
def test_threshold_one_commits_one_token_per_forward(tiny_decoder: Decoder, prompt: list[int],
                                                     algorithm: str) -> None:
    steps, result = run(tiny_decoder, prompt, cfg(algorithm=algorithm, threshold=1.0, max_new_tokens=64))
    check_stream(steps, result, tiny_decoder.mask_id, 1)
    denoise = [s for s in steps if s.kind == "denoise"]
    assert all(len(s.committed) == 1 for s in denoise)
    assert len(denoise) == 2 * (L - 1)


@pytest.mark.parametrize("algorithm", ["confidence_threshold", "elastic"])
@pytest.mark.parametrize("num_small_blocks", [1, 4])
def test_threshold_near_zero_finishes_each_small_block_in_one_forward(tiny_decoder: Decoder, prompt: list[int],
                                                                      algorithm: str, num_small_blocks: int) -> None:
    steps, result = run(tiny_decoder, prompt, cfg(algorithm=algorithm, threshold=1e-9, max_new_tokens=64,
                                                  num_small_blocks=num_small_blocks))
    check_stream(steps, result, tiny_decoder.mask_id, num_small_blocks)
    for b in (0, 1):
        denoise = [s for s in blocks_of(steps)[b] if s.kind == "denoise"]
        assert [s.small_block for s in denoise] == list(range(num_small_blocks))
    # prefill + per block (small blocks + commit forward), without the last commit forward
    assert result.nfe == 1 + 2 * num_small_blocks + 1
    assert result.tpf == pytest.approx(64 / result.nfe)


def test_32_small_blocks_take_31_denoising_forwards(tiny_decoder: Decoder, prompt: list[int]) -> None:
    steps, result = run(tiny_decoder, prompt, cfg(algorithm="confidence_threshold", threshold=0.0,
                                                  num_small_blocks=32, max_new_tokens=64))
    check_stream(steps, result, tiny_decoder.mask_id, 32)
    for b in (0, 1):
        assert sum(s.kind == "denoise" for s in blocks_of(steps)[b]) == 31


def test_denoising_forwards_run_the_lm_head_only_where_a_mask_is_left(tiny_model: LoadedModel,
                                                                      tiny_decoder: Decoder, prompt: list[int]) -> None:
    head_rows: list[int] = []
    hook = tiny_model.model.lm_head.register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[1]))
    try:
        steps, _ = run(tiny_decoder, prompt, cfg(threshold=0.5, max_new_tokens=64))
    finally:
        hook.remove()
    assert len(head_rows) == len(steps)  # one forward per recorded step
    masks_before = L - 1  # a denoising forward sees the MASKs the previous step left
    for rows, step in zip(head_rows, steps, strict=True):
        if step.kind == "denoise":
            assert rows == masks_before == len(step.candidates)
            masks_before -= len(step.committed)
        else:  # prefill and commit forwards need only the last position
            assert rows == 1
            masks_before = L - 1


# -- stopping -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["diffusion", "ar"])
def test_stop_token_ends_decoding(tiny_model: LoadedModel, tiny_decoder: Decoder, prompt: list[int],
                                  mode: str) -> None:
    tok = tiny_model.tokenizer
    config = dict(mode=mode, algorithm="confidence_threshold", num_small_blocks=4, max_new_tokens=70)
    _, base = run(tiny_decoder, prompt, cfg(**config))
    # Tokens the model really produces mid-way, each first seen at index i (several, so that some
    # stop tokens land inside a run of tokens that becomes contiguous in one forward).
    firsts = [i for i in range(5, 60) if base.tokens[i] not in base.tokens[:i]][:4]
    assert firsts
    for i in firsts:
        steps, result = run(tiny_decoder, prompt, cfg(**config, stop_ids=(base.tokens[i],)))
        assert result.tokens == base.tokens[: i + 1]
        assert result.stop_reason == "stop_token"
        assert result.text == tok.decode(base.tokens[:i])
        assert result.nfe < base.nfe
        assert steps[-1].n_generated == i + 1


@pytest.mark.parametrize("mode", ["diffusion", "ar"])
def test_max_new_tokens(tiny_decoder: Decoder, prompt: list[int], mode: str) -> None:
    _, result = run(tiny_decoder, prompt, cfg(mode=mode, max_new_tokens=45))
    assert len(result.tokens) == 45 and result.stop_reason == "length"
    _, with_stops = run(tiny_decoder, prompt, DecodeConfig(mode=mode, max_new_tokens=45))  # default stop ids
    assert len(with_stops.tokens) <= 45


def test_seeded_sampling_is_reproducible(tiny_decoder: Decoder, prompt: list[int]) -> None:
    def tokens(seed: int) -> list[int]:
        config = cfg(temperature=0.8, seed=seed, num_small_blocks=4, max_new_tokens=40)
        return run(tiny_decoder, prompt, config)[1].tokens

    first = tokens(1)
    assert tokens(1) == first
    assert tokens(2) != first  # 40 draws at temperature 0.8: identical by chance is vanishingly unlikely


def test_whole_number_sampling_settings_run(tiny_decoder: Decoder, prompt: list[int]) -> None:
    """A trace's JSON (or an API call) may hold temperature 2 rather than 2.0: the same run, not an error."""
    as_ints = run(tiny_decoder, prompt, cfg(temperature=2, seed=3, max_new_tokens=32))[1].tokens
    assert as_ints == run(tiny_decoder, prompt, cfg(temperature=2.0, seed=3, max_new_tokens=32))[1].tokens


# -- validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "words"), [
    (dict(algorithm="origin"), ["confidence_threshold", "entropy", "low_confidence", "topk_margin", "elastic"]),
    (dict(num_small_blocks=3), ["num_small_blocks", "1, 2, 4, 8, 16, 32"]),
    (dict(threshold=1.5), ["threshold", "between 0 and 1"]),
    (dict(top_k=True), ["top_k must be a number, got True"]),  # a bool is an int to Python, not a setting
    (dict(seed=False), ["seed must be a number, got False"]),
    (dict(threshold=float("nan")), ["threshold", "between 0 and 1"]),
    (dict(temperature=float("nan")), ["temperature must be 0 (greedy) or from 0.01 to 100"]),
    (dict(temperature=float("inf")), ["temperature must be 0 (greedy) or from 0.01 to 100"]),
    # Finite, but the sampling's arithmetic overflows: it raised torch's "probability tensor contains inf, nan".
    (dict(temperature=1e-40), ["temperature must be 0 (greedy) or from 0.01 to 100"]),
    (dict(temperature=1e300), ["temperature must be 0 (greedy) or from 0.01 to 100"]),
    (dict(top_p=0.0), ["top_p", "(0, 1]"]),
    (dict(max_new_tokens=0), ["max_new_tokens", "positive"]),
    (dict(mode="fast"), ["diffusion", "ar"]),
])
def test_invalid_config_says_what_is_allowed(tiny_decoder: Decoder, prompt: list[int], kw: dict,
                                             words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        run(tiny_decoder, prompt, cfg(**kw))
    for word in words:
        assert word in str(err.value)


def test_fit_context_lowers_max_new_tokens_to_whole_blocks_that_fit() -> None:
    from pangu_demo.engine import fit_context

    c = cfg(max_new_tokens=300)
    assert fit_context(100, c, 1024) is c  # 100 + 320 fits
    assert fit_context(800, c, 1024).max_new_tokens == 224  # 7 blocks of 32 after the prompt
    assert fit_context(800, c, None) is c  # no known context: nothing to fit
    with pytest.raises(ValueError, match="no room"):
        fit_context(1000, c, 1024)  # 24 tokens left: not one block
    # AR needs no whole blocks: the 24 tokens left are its to use.
    ar = cfg(mode="ar", max_new_tokens=300)
    assert fit_context(1000, ar, 1024).max_new_tokens == 24
    with pytest.raises(ValueError, match="room for a new token"):
        fit_context(1024, ar, 1024)


def test_ar_mode_runs_up_to_the_last_position_of_the_context(tiny_model: LoadedModel, tiny_decoder: Decoder) -> None:
    context = tiny_model.context_length
    prompt = [tiny_model.tokenizer.ids.bos] + [5] * (context - 13)
    _, result = run(tiny_decoder, prompt, cfg(mode="ar", max_new_tokens=12))
    assert len(result.tokens) == 12 and len(prompt) + 12 == context


def test_prompt_longer_than_context(tiny_model: LoadedModel, tiny_decoder: Decoder) -> None:
    ctx = tiny_model.model.config.max_position_embeddings
    with pytest.raises(ValueError, match="context"):
        run(tiny_decoder, [1] * (ctx + 10), cfg(max_new_tokens=8))
    with pytest.raises(ValueError, match="context"):  # fits alone, but not with the new tokens
        run(tiny_decoder, [1] * (ctx - 20), cfg(max_new_tokens=40))


# -- cancellation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True])
def test_stop_pressed_as_a_block_is_finished_costs_no_further_forward(tiny_decoder: Decoder, prompt: list[int],
                                                                      fused: bool) -> None:
    event = threading.Event()
    gen = tiny_decoder.generate(prompt, cfg(max_new_tokens=96, fused_commit=fused), stop_event=event)
    for step in gen:  # up to the forward that fills block 0
        if step.kind in ("denoise", "fused") and step.block == 0 and tiny_decoder.mask_id not in step.block_tokens:
            break
    event.set()
    rest = list(gen)
    assert len(rest) == 1 and rest[0].stop_reason == "cancelled"  # no commit forward after the Stop


@pytest.mark.parametrize("num_small_blocks", [4, 8])  # with 1 small block the whole block is decoded anyway
def test_a_stop_token_past_a_partial_last_block_still_ends_the_run(tiny_model: LoadedModel, tiny_decoder: Decoder,
                                                                   prompt: list[int], num_small_blocks: int) -> None:
    """max_new_tokens 40: whole blocks are decoded and cut, so a stop token at position 41-63 ends the run after its
    small block, as it would in the reference decoding 64 tokens; the result is the first 40 tokens."""
    config = dict(num_small_blocks=num_small_blocks, max_new_tokens=40)
    _, whole = run(tiny_decoder, prompt, cfg(num_small_blocks=num_small_blocks, max_new_tokens=64))
    i = next(i for i in range(41, 63) if whole.tokens[i] not in whole.tokens[:i])
    stop_id = whole.tokens[i]
    _, result = run(tiny_decoder, prompt, cfg(**config, stop_ids=(stop_id,)))
    ref_tokens, _, ref_nfe = reference_block_diffusion(tiny_model.model, prompt, tiny_decoder.mask_id,
                                                       "confidence_threshold", num_small_blocks, 40, stop_id=stop_id)
    assert result.tokens == ref_tokens == whole.tokens[:40] and result.stop_reason == "length"
    assert result.nfe == ref_nfe


@pytest.mark.parametrize("mode", ["diffusion", "ar"])
def test_cancel_event_stops_within_one_forward(tiny_decoder: Decoder, prompt: list[int], mode: str) -> None:
    config = cfg(mode=mode, num_small_blocks=4, max_new_tokens=96)
    _, full = run(tiny_decoder, prompt, config)
    event = threading.Event()
    gen = tiny_decoder.generate(prompt, config, stop_event=event)
    steps = [next(gen) for _ in range(20)]
    event.set()
    rest = list(gen)
    assert isinstance(rest[-1], Result) and len(rest) <= 2  # at most one more forward, then the result
    steps += rest[:-1]
    result = rest[-1]
    assert result.stop_reason == "cancelled"
    assert result.nfe == len(steps) < full.nfe
    n = steps[-1].n_generated
    assert 0 < n < len(full.tokens) and result.tokens == full.tokens[:n]


def test_closing_the_generator_early(tiny_decoder: Decoder, prompt: list[int]) -> None:
    config = cfg(num_small_blocks=4, max_new_tokens=40)
    gen = tiny_decoder.generate(prompt, config)
    for _ in range(3):
        next(gen)
    gen.close()  # must not raise
    _, again = run(tiny_decoder, prompt, config)  # the decoder is still usable
    assert len(again.tokens) == 40


# -- batches ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["diffusion", "ar"])
def test_batch_rows_equal_single_runs(tiny_model: LoadedModel, tiny_decoder: Decoder, prompt: list[int],
                                      mode: str) -> None:
    short = tiny_model.tokenizer.encode("The answer is")
    assert len(short) < len(prompt)  # different lengths: the short one is left-padded
    config = cfg(mode=mode, algorithm="entropy", num_small_blocks=4, max_new_tokens=45)
    _, batch = run(tiny_decoder, [prompt, short], config)
    assert len(batch.batch) == 2
    for row, p in zip(batch.batch, [prompt, short], strict=True):
        assert row.tokens == run(tiny_decoder, p, config)[1].tokens
        assert row.prompt_ids == p


# -- text -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop_at", [None, 20])
def test_last_step_text_is_the_decoded_result(tiny_model: LoadedModel, tiny_decoder: Decoder, prompt: list[int],
                                              stop_at: int | None) -> None:
    tok = tiny_model.tokenizer
    config = dict(num_small_blocks=4, max_new_tokens=70)
    stop_ids: tuple[int, ...] = ()
    if stop_at is not None:
        base = run(tiny_decoder, prompt, cfg(**config))[1].tokens
        stop_ids = (next(t for i, t in enumerate(base) if i >= stop_at and t not in base[:i]),)
    steps, result = run(tiny_decoder, prompt, cfg(**config, stop_ids=stop_ids))
    body = result.tokens[:-1] if result.stop_reason == "stop_token" else result.tokens
    assert result.text == tok.decode(body)
    # While streaming, only an incomplete UTF-8 tail may be held back.
    last = steps[-1].text
    assert result.text.startswith(last) and set(result.text[len(last):]) <= {"\ufffd"}


@pytest.mark.parametrize("mode", ["diffusion", "ar"])
def test_a_model_that_prefers_mask_still_finishes(tiny_model: LoadedModel, tiny_decoder: Decoder,
                                                  prompt: list[int], mode: str) -> None:
    """MASK is never a candidate. A random model once put MASK first at a masked position: committing it
    left the position masked, and the block never finished (one forward after another, for ever)."""
    mask = tiny_decoder.mask_id

    def mask_first(module, args, logits):
        return logits.index_fill(-1, torch.tensor([mask]), 1e4)

    hook = tiny_model.model.lm_head.register_forward_hook(mask_first)
    try:
        steps = []
        for item in tiny_decoder.generate(prompt, cfg(mode=mode, max_new_tokens=64)):
            if isinstance(item, Step):
                steps.append(item)
                assert item.nfe <= 64 * 32, "the run does not progress"
    finally:
        hook.remove()
    assert item.stop_reason == "length" and len(item.tokens) == 64
    assert all(t != mask for s in steps for t in s.committed_tokens)
    assert all(tok != mask for s in steps for tok, _ in s.candidates.values())

"""Context-causal block diffusion decoding, as openPangu-R-7B-Diffusion's authors run it.

The generation is cut into blocks of `block_length` tokens. Position 0 of each block comes from an
ordinary autoregressive prediction (the prefill for block 0, the commit forward of the previous
block otherwise). The rest of the block starts as MASK and is filled small block by small block:
every *denoising* forward runs the whole block against the KV cache with full attention inside the
block, and commits the most confident candidates. A finished block is run once more causally
(the *commit* forward), which stores it in the cache and predicts position 0 of the next block.

`Decoder.generate` is a generator: it yields a `Step` after every forward pass and a `Result` last.
Batches are left-padded; a `Step` describes row 0 of the batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import torch
from transformers import DynamicCache

from .sampling import Candidates, confidence, sample
from .tokenizer import PanguTokenizer

# The reference's four, then elastic (ours: the leftmost mask plus the run after it that clears the threshold).
ALGORITHMS = ("confidence_threshold", "entropy", "low_confidence", "topk_margin", "elastic")
MODES = ("diffusion", "ar")
THRESHOLD_ALGORITHMS = ("confidence_threshold", "elastic")  # the rules that read `threshold`
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0  # besides 0 (greedy)


def small_block_counts(block_length: int) -> list[int]:
    """The numbers of small blocks a block can be cut into: the divisors of its length."""
    return [n for n in range(1, block_length + 1) if block_length % n == 0]


@dataclass
class DecodeConfig:
    mode: str = "diffusion"
    algorithm: str = "confidence_threshold"
    block_length: int = 32
    num_small_blocks: int = 1
    threshold: float = 0.9
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int = 0
    fused_commit: bool = False  # ours: fuse each commit forward with the next block's first denoising forward
    stop_ids: tuple[int, ...] | None = None  # None: the tokenizer's end-of-turn and </s>

    def validate(self) -> None:
        """Raise ValueError saying what is allowed."""
        for name in ("block_length", "num_small_blocks", "threshold", "temperature", "top_p", "top_k",
                     "max_new_tokens", "seed"):
            if isinstance(getattr(self, name), bool):  # a bool passes for an int in Python, not in a setting
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}.")
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}.")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"Unknown algorithm {self.algorithm!r}; valid algorithms: {', '.join(ALGORITHMS)}.")
        if not isinstance(self.block_length, int) or self.block_length < 2:
            raise ValueError(f"block_length must be an integer ≥ 2, got {self.block_length!r}.")
        n = self.num_small_blocks
        if not isinstance(n, int) or n < 1 or self.block_length % n:
            raise ValueError(f"num_small_blocks must divide block_length {self.block_length}: one of "
                             f"{', '.join(map(str, small_block_counts(self.block_length)))} (got {n!r}).")
        if not 0.0 <= self.threshold <= 1.0:  # also refuses nan
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}.")
        # Outside these the sampling's float32 arithmetic breaks (a logit over 1e-40 is infinite, over 1e300 nan).
        if not (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE):
            raise ValueError(f"temperature must be 0 (greedy) or from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}, "
                             f"got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}.")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer ≥ 0 (0 = off), got {self.top_k!r}.")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:  # the range torch's generator takes
            raise ValueError(f"seed must be a whole number from 0 to 2^63 - 1, got {self.seed!r}.")


@dataclass
class Step:
    """What one forward pass did, for row 0 of the batch. Positions count inside `block`."""

    kind: str  # "prefill" | "denoise" | "commit" | "fused" (commit + first denoise) | "ar"
    block: int
    small_block: int | None
    nfe: int  # forwards so far, this one included
    block_tokens: list[int]  # the block after this forward; MASK where still undecided
    committed: list[int]  # positions committed by this forward
    committed_tokens: list[int]
    committed_confidence: list[float]  # probability of each committed token
    candidates: dict[int, tuple[int, float]]  # masked-before-this-forward position -> (token, probability)
    text: str  # the contiguous committed prefix of the whole generation, decoded
    n_generated: int  # tokens in that prefix
    elapsed: float


@dataclass
class Result:
    tokens: list[int]  # generated tokens, up to and including the stop token
    text: str  # decoded reply without the stop token
    nfe: int
    seconds: float
    stop_reason: str  # "stop_token" | "length" | "cancelled"
    prompt_ids: list[int]
    config: dict
    batch: list[Result] = field(default_factory=list)  # every row's result when batched

    @property
    def tpf(self) -> float:
        return len(self.tokens) / self.nfe if self.nfe else 0.0

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0


class _Row:
    """Book-keeping for one sequence: committed prefix, stop detection, streamed text."""

    def __init__(self, tok: PanguTokenizer, stop_ids: set[int], max_new: int) -> None:
        self.tokens: list[int] = []  # the committed contiguous prefix, cut at the stop token
        self.stop_ids, self.max_new = stop_ids, max_new
        self.stopped = False
        self.stop_seen = False  # a stop token anywhere in the decoded prefix, past max_new too
        self.stream = tok.stream_decoder()

    @property
    def done(self) -> bool:
        return self.stopped or len(self.tokens) >= self.max_new

    def extend(self, new: list[int]) -> None:
        """Take newly contiguous tokens. Those past max_new are dropped, but a stop token among them is noted:
        whole blocks are decoded and then cut, so it still ends the run."""
        stop = next((i for i, t in enumerate(new) if t in self.stop_ids), None)
        self.stop_seen = self.stop_seen or stop is not None
        if self.done:
            return
        room = self.max_new - len(self.tokens)
        if stop is not None and stop < room:
            self.tokens.extend(new[: stop + 1])
            self.stream.feed(new[:stop])
            self.stopped = True
            return
        self.tokens.extend(new[:room])
        self.stream.feed(new[:room])


def attention_allowed(key_valid: torch.Tensor, q_len: int, causal_len: int) -> torch.Tensor:
    """Which keys each query of a forward may see, (batch, 1, q_len, keys). The queries are the last q_len keys
    (the cache holds the rest): the first `causal_len` of them attend causally and not to the others (a prefill
    or commit forward), the others attend to all of them (a block being denoised); earlier keys where valid."""
    batch, kv_len = key_valid.shape
    allowed = key_valid[:, None, None, :].expand(batch, 1, q_len, kv_len).clone()
    inner = torch.ones(q_len, q_len, dtype=torch.bool, device=key_valid.device)
    inner[:causal_len, :causal_len].tril_()
    inner[:causal_len, causal_len:] = False
    allowed[..., kv_len - q_len:] &= inner
    return allowed


class Decoder:
    """Runs block diffusion (or AR) decoding of a Llama-style model through one KV cache."""

    def __init__(self, model: torch.nn.Module, tokenizer: PanguTokenizer) -> None:
        self.model, self.tok = model, tokenizer
        self.mask_id = tokenizer.ids.mask
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    def stop_ids(self, cfg: DecodeConfig) -> tuple[int, ...]:
        """What ends a reply under `cfg`: its own stop ids, else the tokenizer's."""
        return tuple(cfg.stop_ids if cfg.stop_ids is not None else self.tok.stop_ids)

    @property
    def context(self) -> int | None:
        """The longest sequence (prompt + reply) the model takes, if its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)

    # -- the forward passes ---------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: DynamicCache,
                 keep: int, logits_to_keep: int | torch.Tensor = 0) -> torch.Tensor:
        """Run `ids` against the cache; only the first `keep` of them stay in it. `logits_to_keep` as in
        transformers: 0 = every position, n = the last n, a 1-D tensor = those positions."""
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask, cache=cache, use_cache=True,
                         logits_to_keep=logits_to_keep)
        if keep < ids.shape[1]:  # denoised tokens must leave the cache as they found it
            cache.crop(keep - ids.shape[1])
        return out.logits

    def _mask(self, key_valid: torch.Tensor, q_len: int, causal_len: int) -> torch.Tensor:
        """Additive 4-D form of `attention_allowed`."""
        allowed = attention_allowed(key_valid, q_len, causal_len)
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        return mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)

    # -- the decoding loop ----------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompt_ids: list[int] | list[list[int]], config: DecodeConfig | None = None,
                 stop_event: threading.Event | None = None) -> Iterator[Step | Result]:
        cfg = config or DecodeConfig()
        cfg.validate()
        prompts = [list(p) for p in prompt_ids] if prompt_ids and isinstance(prompt_ids[0], list) else [
            list(prompt_ids)]
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("The prompt is empty: give at least one token (e.g. BOS).")
        check_context(max(map(len, prompts)), cfg, self.context)
        generation = _Run(self, prompts, cfg, stop_event)
        try:
            yield from generation.steps()
            yield generation.result()
        finally:
            generation.cache = None  # free the KV cache at once, also when the consumer closes us early


def fit_context(prompt_len: int, cfg: DecodeConfig, context: int | None) -> DecodeConfig:
    """`cfg`, with max_new_tokens lowered to what fits after the prompt when it asks for more (whole blocks for
    block diffusion, any number of tokens for AR); ValueError when nothing fits."""
    if not context:
        return cfg
    unit = 1 if cfg.mode == "ar" else cfg.block_length  # AR decodes token by token, block diffusion whole blocks
    room = (context - prompt_len) // unit * unit
    if room < 1:
        wanted = "a new token" if unit == 1 else f"a block of {unit} new tokens"
        raise ValueError(f"The prompt is {prompt_len:,} tokens: the model's context of {context:,} tokens leaves no "
                         f"room for {wanted}. Shorten the prompt or the conversation before it.")
    return cfg if cfg.max_new_tokens <= room else replace(cfg, max_new_tokens=room)


def check_context(prompt_len: int, cfg: DecodeConfig, context: int | None) -> None:
    """ValueError unless the prompt plus max_new_tokens (rounded up to whole blocks for block diffusion) fits."""
    fitted = fit_context(prompt_len, cfg, context)
    if fitted is not cfg:
        blocks = "" if cfg.mode == "ar" else f" (whole blocks of {cfg.block_length})"
        raise ValueError(f"The prompt is {prompt_len:,} tokens; with {cfg.max_new_tokens:,} new tokens{blocks} that "
                         f"exceeds the model's context of {context:,} tokens. Lower max new tokens to "
                         f"{fitted.max_new_tokens:,} or less, or shorten the prompt.")


class _Run:
    """One generation: the state the decoding loop reads and updates."""

    def __init__(self, dec: Decoder, prompts: list[list[int]], cfg: DecodeConfig,
                 stop_event: threading.Event | None) -> None:
        self.dec, self.cfg, self.prompts, self.stop_event = dec, cfg, prompts, stop_event
        stop_ids = set(dec.stop_ids(cfg))
        self.rows = [_Row(dec.tok, stop_ids, cfg.max_new_tokens) for _ in prompts]
        self.generator = torch.Generator(device=dec.device).manual_seed(cfg.seed)
        self.cache = DynamicCache(config=dec.model.config)
        self.nfe, self.cancelled = 0, False
        self.start = time.perf_counter()
        width = max(map(len, prompts))
        pad = dec.tok.ids.pad
        self.prompt = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=dec.device)
        self.prompt_valid = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts],
                                         device=dec.device)
        self.key_valid = self.prompt_valid[:, :0]  # which cached keys are real tokens (not padding)
        # Denoising forwards of a block share one mask: build it once per (cache length, shape).
        self._masks: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        # Position of the first generated token per row: padding does not count.
        self.gen_start = torch.tensor([len(p) for p in prompts], device=dec.device)

    # -- helpers --------------------------------------------------------------------------------
    def _sample(self, logits: torch.Tensor) -> Candidates:
        c = self.cfg
        return sample(logits, c.temperature, c.top_p, c.top_k, self.generator, suppress=(self.dec.mask_id,))

    def _positions(self, offset: int, length: int) -> torch.Tensor:
        return (self.gen_start + offset)[:, None] + torch.arange(length, device=self.dec.device)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, causal_len: int, keep: int,
                 logits_to_keep: int | torch.Tensor = 0, ids_valid: torch.Tensor | None = None) -> torch.Tensor:
        key = (self.key_valid.shape[1], ids.shape[1], causal_len)
        if ids_valid is None and key in self._masks:
            keys_valid, mask = self._masks[key]
        else:
            valid = torch.ones_like(ids, dtype=torch.bool) if ids_valid is None else ids_valid
            keys_valid = torch.cat([self.key_valid, valid], 1)
            mask = self.dec._mask(keys_valid, ids.shape[1], causal_len)
            if ids_valid is None:
                self._masks = {key: (keys_valid, mask)}  # the cache only grows: older masks are dead
        logits = self.dec._forward(ids, positions, mask, self.cache, keep, logits_to_keep)
        self.key_valid = keys_valid[:, : self.key_valid.shape[1] + keep]
        self.nfe += 1
        return logits

    def _cancel_requested(self) -> bool:
        if self.stop_event is not None and self.stop_event.is_set():
            self.cancelled = True
        return self.cancelled

    def _finished(self, end_of_block: bool) -> bool:
        """The reference's test after each small block: every row has produced its stop token. Rows that
        reached max_new_tokens end only with their block (whole blocks are decoded, then cut)."""
        return all(r.stop_seen or (end_of_block and r.done) for r in self.rows)

    def _update_rows(self, block: torch.Tensor, prefix_before: list[int]) -> list[int]:
        """Feed each row's newly contiguous committed tokens; return the new prefix lengths."""
        mask_id = self.dec.mask_id
        prefix = []
        for r, (row, tokens) in enumerate(zip(self.rows, block.tolist(), strict=True)):
            n = tokens.index(mask_id) if mask_id in tokens else len(tokens)
            if n > prefix_before[r]:
                row.extend(tokens[prefix_before[r]:n])
            prefix.append(n)
        return prefix

    def _step(self, kind: str, b: int, sb: int | None, block: torch.Tensor, committed: torch.Tensor,
              cand: Candidates | None, was_masked: torch.Tensor | None, first_prob: float | None = None) -> Step:
        # Row 0 only, converted with one tolist() per tensor: no per-element tensor access.
        row_tokens = block[0].tolist()
        pos = [j for j, c in enumerate(committed[0].tolist()) if c]
        if cand is not None:
            probs = cand.token_probs[0].tolist()
            toks = cand.tokens[0].tolist()
            candidates = {j: (toks[j], probs[j]) for j, m in enumerate(was_masked[0].tolist()) if m}
            conf = [probs[j] for j in pos]
        else:
            candidates, conf = {}, [first_prob if first_prob is not None else 1.0] * len(pos)
        return Step(kind=kind, block=b, small_block=sb, nfe=self.nfe, block_tokens=row_tokens,
                    committed=pos, committed_tokens=[row_tokens[j] for j in pos], committed_confidence=conf,
                    candidates=candidates, text=self.rows[0].stream.text, n_generated=len(self.rows[0].tokens),
                    elapsed=time.perf_counter() - self.start)

    # -- the procedure --------------------------------------------------------------------------
    def steps(self) -> Iterator[Step]:
        L = self.cfg.block_length
        positions = (self.prompt_valid.long().cumsum(1) - 1).clamp(min=0)
        P = self.prompt.shape[1]
        logits = self._forward(self.prompt, positions, causal_len=P, keep=P, logits_to_keep=1,
                               ids_valid=self.prompt_valid)
        first = self._sample(logits[:, -1])
        block, committed = self._new_block(first.tokens)
        prefix = self._update_rows(block, [0] * len(self.rows))
        yield self._step("prefill", 0, None, block, committed, None, None, first.token_probs[0].item())
        if self.cfg.mode == "ar":
            yield from self._ar_steps(block, prefix)
            return
        b, last = 0, self.cfg.num_small_blocks - 1
        while not self._cancel_requested():
            for sb in range(last + 1):
                yield from self._denoise_small_block(b, sb, block, prefix)
                # No commit forward after the last block: it would only predict a token nobody reads.
                if self._cancel_requested() or self._finished(end_of_block=sb == last):
                    return
            b += 1
            if self.cfg.fused_commit:
                block, prefix, step = self._fused_forward(b, block)
                yield step
                continue
            # Commit forward: block b-1 enters the cache causally; it predicts position 0 of block b.
            logits = self._forward(block, self._positions((b - 1) * L, L), causal_len=L, keep=L, logits_to_keep=1)
            first = self._sample(logits[:, -1])
            block, committed = self._new_block(first.tokens)
            prefix = self._update_rows(block, [0] * len(self.rows))
            yield self._step("commit", b, None, block, committed, None, None, first.token_probs[0].item())

    def _fused_forward(self, b: int, finished: torch.Tensor) -> tuple[torch.Tensor, list[int], Step]:
        """Commit block b-1 and run the first denoising forward of block b in one pass (ours, optional).

        Input: block b-1 (causal, kept in the cache) followed by block b all MASK (full attention,
        sees block b-1, not kept). Position 0 of block b is predicted by block b-1's last output as
        in the commit forward, and is committed with whatever else this forward's rule accepts.
        """
        L = self.cfg.block_length
        block = torch.full_like(finished, self.dec.mask_id)
        ids = torch.cat([finished, block], 1)
        positions = self._positions((b - 1) * L, 2 * L)
        # Outputs L-1 … 2L-2 predict positions 0 … L-1 of block b: the same shift by one.
        predicting = torch.arange(L - 1, 2 * L - 1, device=self.dec.device)
        logits = self._forward(ids, positions, causal_len=L, keep=L, logits_to_keep=predicting)
        cand = self._sample(logits)
        was_masked = torch.ones_like(block, dtype=torch.bool)
        target = was_masked & self._small_block_mask(0, from_zero=True)
        committed = self._choose(cand, target, first_forced=True)
        block.copy_(torch.where(committed, cand.tokens, block))
        prefix = self._update_rows(block, [0] * len(self.rows))
        return block, prefix, self._step("fused", b, 0, block, committed, cand, was_masked)

    def _small_block_mask(self, sb: int, from_zero: bool = False) -> torch.Tensor:
        L = self.cfg.block_length
        size = L // self.cfg.num_small_blocks
        in_small = torch.zeros(L, dtype=torch.bool, device=self.dec.device)
        # Position 0 is never a denoising target: it comes from the AR prediction.
        in_small[sb * size if from_zero else max(sb * size, 1):(sb + 1) * size] = True
        return in_small

    def _new_block(self, first_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.cfg.block_length
        block = torch.full((len(self.rows), L), self.dec.mask_id, dtype=torch.long, device=self.dec.device)
        block[:, 0] = first_tokens
        committed = torch.zeros_like(block, dtype=torch.bool)
        committed[:, 0] = True
        return block, committed

    def _denoise_small_block(self, b: int, sb: int, block: torch.Tensor, prefix: list[int]) -> Iterator[Step]:
        """Denoising forwards until small block `sb` of block `b` holds no MASK in any row, as in the reference:
        a row that has produced its stop token is still denoised (what follows the stop token is dropped)."""
        L = self.cfg.block_length
        in_small = self._small_block_mask(sb)
        positions = self._positions(b * L, L)
        while True:
            was_masked = block == self.dec.mask_id
            target = was_masked & in_small
            if not target.any() or self._cancel_requested():
                return
            # The output at position j-1 predicts block position j. Only positions still MASK in some row
            # need it, so the LM head runs on those alone (on a CPU it is a sixth of a block forward);
            # the others get flat logits and are never chosen. Position 0 is never MASK here.
            need = was_masked.any(0).nonzero().flatten()
            out = self._forward(block, positions, causal_len=0, keep=0, logits_to_keep=need - 1)
            logits = out.new_zeros(*block.shape, out.shape[-1])
            logits[:, need] = out
            cand = self._sample(logits)
            committed = self._choose(cand, target)
            block.copy_(torch.where(committed, cand.tokens, block))
            prefix[:] = self._update_rows(block, prefix)
            yield self._step("denoise", b, sb, block, committed, cand, was_masked)

    def _choose(self, cand: Candidates, target: torch.Tensor, first_forced: bool = False) -> torch.Tensor:
        """Which target positions this forward commits: at least the most confident one per row
        (or position 0 when `first_forced`: the fused forward's AR prediction)."""
        cfg = self.cfg
        has_target = target.any(1, keepdim=True)
        committed = torch.zeros_like(target)
        if cfg.algorithm == "elastic":  # ours, not the reference's
            # Leftmost masked position, then the contiguous run after it that clears the threshold.
            first = target.float().argmax(1, keepdim=True)
            committed.scatter_(1, first, has_target)
            idx = torch.arange(target.shape[1], device=target.device)
            clears = (target & (cand.token_probs > cfg.threshold)) | (idx <= first)
            run = clears.long().cumprod(1).bool() & (idx > first)
            return committed | (run & has_target)
        if first_forced:
            committed[:, :1] = has_target
        else:
            score = confidence(cfg.algorithm, cand).masked_fill(~target, float("-inf"))
            committed.scatter_(1, score.argmax(1, keepdim=True), has_target)
        if cfg.algorithm == "confidence_threshold":
            committed |= target & (cand.token_probs > cfg.threshold)
        return committed

    def _ar_steps(self, block: torch.Tensor, prefix: list[int]) -> Iterator[Step]:
        """One token per forward through the same cache; blocks only group the steps for display."""
        L = self.cfg.block_length
        n = 1
        while not (self._cancel_requested() or all(r.done for r in self.rows)):
            last = block[:, (n - 1) % L:(n - 1) % L + 1]
            logits = self._forward(last, self._positions(n - 1, 1), causal_len=1, keep=1, logits_to_keep=1)
            nxt = self._sample(logits[:, -1])
            if n % L == 0:
                block, committed = self._new_block(nxt.tokens)
                prefix[:] = [0] * len(self.rows)
            else:
                block[:, n % L] = nxt.tokens
                committed = torch.zeros_like(block, dtype=torch.bool)
                committed[:, n % L] = True
            prefix[:] = self._update_rows(block, prefix)
            yield self._step("ar", n // L, None, block, committed, None, None, nxt.token_probs[0].item())
            n += 1

    def result(self) -> Result:
        seconds = time.perf_counter() - self.start
        results = []
        for prompt, row in zip(self.prompts, self.rows, strict=True):
            reason = "stop_token" if row.stopped else "cancelled" if self.cancelled and not row.done else "length"
            results.append(Result(tokens=row.tokens, text=row.stream.finish(), nfe=self.nfe, seconds=seconds,
                                  stop_reason=reason, prompt_ids=prompt, config=asdict(self.cfg)))
        head = results[0]
        head.batch = results if len(results) > 1 else []
        return head


def run(decoder: Decoder, prompt_ids: list[int], config: DecodeConfig | None = None,
        stop_event: threading.Event | None = None) -> tuple[list[Step], Result]:
    """Decode to the end (or until `stop_event` is set); return every step and the result."""
    steps: list[Step] = []
    for item in decoder.generate(prompt_ids, config, stop_event):
        if isinstance(item, Result):
            return steps, item
        steps.append(item)
    raise RuntimeError("decoding ended without a result")  # pragma: no cover

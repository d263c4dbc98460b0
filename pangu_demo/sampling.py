"""Sampling, kept apart from the decoding loop: logits in, candidate tokens and confidences out.

Order as in the reference: temperature, then top-p, then top-k, then softmax. Confidences are read
from the filtered, renormalised distribution (at temperature 0 too). Suppressed tokens (the engine
passes MASK) are never candidates: a "committed" MASK would leave its position masked, and a block
whose most confident candidate is MASK would never finish. A trained model gives MASK next to nothing
(it is never a target: at most 2.6e-5 over 20 held-out runs of the embedded model, stages 9 and 10), so the
renormalised confidences are the reference's to that precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass(frozen=True)
class Candidates:
    tokens: torch.Tensor  # (..., ) the sampled (or arg-max) token per position
    probs: torch.Tensor  # (..., V) the filtered, renormalised distribution

    @cached_property  # read several times per forward (ranking, threshold, step record)
    def token_probs(self) -> torch.Tensor:
        return self.probs.gather(-1, self.tokens.unsqueeze(-1)).squeeze(-1)


def warpers(temperature: float, top_p: float, top_k: int) -> LogitsProcessorList:
    chain = LogitsProcessorList()
    # float(): transformers refuses a whole-number int (a trace's JSON or an API call may hold 2, not 2.0).
    if temperature > 0 and temperature != 1.0:
        chain.append(TemperatureLogitsWarper(float(temperature)))
    if top_p < 1.0:
        chain.append(TopPLogitsWarper(float(top_p)))
    if top_k > 0:
        chain.append(TopKLogitsWarper(top_k))
    return chain


def sample(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
           generator: torch.Generator | None = None, suppress: tuple[int, ...] = ()) -> Candidates:
    """Candidates for logits of shape (..., V): drawn at temperature > 0, arg-max at 0; never a `suppress`
    token."""
    shape = logits.shape
    # bf16/fp16 logits are sampled in float32; float64 stays float64 (exact tests). A copy either way, so that
    # the suppressed tokens are written in place: transformers' SuppressTokensLogitsProcessor rebuilds a
    # vocabulary-sized mask on every call, which cost 0.2 ms a forward here (3% of a forward of the small model).
    flat = logits.reshape(-1, shape[-1])
    flat = flat.to(torch.float64 if flat.dtype == torch.float64 else torch.float32, copy=True)
    if suppress:
        flat[:, list(suppress)] = float("-inf")
    flat = warpers(temperature, top_p, top_k)(None, flat)
    probs = flat.softmax(-1)
    if temperature > 0:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    else:
        tokens = probs.argmax(-1)  # first maximum on ties: deterministic
    return Candidates(tokens.reshape(shape[:-1]), probs.reshape(shape))


def greedy(logits: torch.Tensor, suppress: tuple[int, ...] = ()) -> Candidates:
    """The arg-max candidates and their confidences, as the engine reads them at temperature 0 (for analyses that
    must agree with the decoder)."""
    return sample(logits, temperature=0.0, top_p=1.0, top_k=0, suppress=suppress)


def confidence(algorithm: str, cand: Candidates) -> torch.Tensor:
    """What each algorithm ranks positions by (higher = more certain)."""
    if algorithm == "entropy":
        return torch.special.xlogy(cand.probs, cand.probs).sum(-1)  # negative entropy
    if algorithm == "topk_margin":
        top2 = cand.probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    return cand.token_probs  # confidence_threshold, low_confidence, elastic

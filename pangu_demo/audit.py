"""Where block diffusion's commits go wrong: an audit of every token a denoising forward committed.

Each held-out question is decoded by block diffusion (confidence_threshold, 1 small block,
temperature 0). Every token committed by a denoising forward is sorted by three questions:
- did its confidence clear the threshold, or was it committed only because every forward must
  commit at least one token ("below the threshold")?
- was its whole left context in place, or was a position to its left in the block still masked
  when the forward predicted it ("left open")?
- would the same model, reading the finished reply left to right (one causal forward, teacher
  forced), have written it? A token "AR rejects" is not the model's AR arg-max there and gets
  less than `REJECT_BELOW` of its AR probability.
Digits and other tokens are counted apart: digits carry the arithmetic.

A second table reads the data's own replies, teacher forced, two ways: next-token (AR) and
masked-token with everything to the left in place and the rest of the block masked. It says how
good the masked-token predictions are when the left context is complete.

    python -m pangu_demo.audit [--model PATH] [--n 60] [--tasks one_op two_op] [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import chat, data, engine
from .evaluate import question, score_reply, system, text_table
from .render import below_threshold
from .sampling import greedy
from .tokenizer import PanguTokenizer
from .train import encode_chat

REJECT_BELOW = 0.2


@dataclass(frozen=True)
class Commit:
    digit: bool
    below: bool  # committed with confidence at or below the threshold
    left_open: bool  # a position to its left in the block was still masked when the forward predicted it
    rejected: bool  # the model read autoregressively would not have written it


def ar_view(model: torch.nn.Module, prompt: list[int], reply: list[int],
            mask_id: int) -> tuple[list[float], list[int]]:
    """For each reply token: the model's AR probability of it, and the model's AR arg-max there, read as the
    engine reads them (MASK is never a candidate)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + reply], device=model.device)).logits[0, len(prompt) - 1:-1]
    cand = greedy(logits, suppress=(mask_id,))
    picked = cand.probs.gather(1, torch.tensor(reply, device=logits.device)[:, None])[:, 0]
    return picked.tolist(), cand.tokens.tolist()


def audit_reply(model: torch.nn.Module, tok: PanguTokenizer, prompt: list[int], steps: list[engine.Step],
                result: engine.Result, threshold: float) -> list[Commit]:
    """Every denoising commit of one reply (up to its stop token), classified."""
    p_ar, top_ar = ar_view(model, prompt, result.tokens, tok.ids.mask)
    out = []
    for s in steps:
        if s.kind != "denoise":
            continue
        width, below = len(s.block_tokens), set(below_threshold(s, threshold))
        leftmost = min(s.candidates)  # the first position that was still masked before this forward
        for p, t in zip(s.committed, s.committed_tokens, strict=True):
            i = s.block * width + p
            if i >= len(result.tokens):  # padding after the stop token
                continue
            out.append(Commit(digit=t in tok.digit_ids, below=p in below, left_open=p > leftmost,
                              rejected=top_ar[i] != t and p_ar[i] < REJECT_BELOW))
    return out


def masked_view(decoder: engine.Decoder, prompt: list[int], reply: list[int], block_length: int = 32) -> list[int]:
    """For each reply token that is not the first of its block: the masked-token arg-max there when every earlier
    reply token is in place and the rest of its block is masked (one batch of rows per block, no cache)."""
    model, mask_id, top = decoder.model, decoder.mask_id, []
    for start in range(0, len(reply), block_length):
        block = reply[start:start + block_length]
        block += [mask_id] * (block_length - len(block))
        rows = [block[:j] + [mask_id] * (block_length - j) for j in range(1, min(block_length, len(reply) - start))]
        if not rows:
            continue
        context = prompt + reply[:start]
        n = len(context) + block_length
        # The context causal, the block seeing itself in full: the engine's mask with every position a query.
        mask = decoder._mask(torch.ones(len(rows), n, dtype=torch.bool, device=decoder.device), n, len(context))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([context + r for r in rows], device=decoder.device),
                           attention_mask=mask, position_ids=torch.arange(n, device=decoder.device)[None],
                           logits_to_keep=block_length).logits
        # Row j predicts block position j from the output at j - 1.
        own = logits[torch.arange(len(rows)), torch.arange(len(rows))]
        top += greedy(own, suppress=(mask_id,)).tokens.tolist()
    return top


def audit(model: torch.nn.Module, tok: PanguTokenizer, tasks: list[str], n: int, threshold: float = 0.9,
          max_new_tokens: int = 256, progress: bool = True) -> dict[str, dict]:
    """Per task: replies, correct replies; commits and AR rejects keyed by (digit, below, left_open); and on the
    data's replies, teacher forced, how many tokens (keyed by digit) the AR and the masked-token arg-max get right."""
    decoder = engine.Decoder(model, tok)
    cfg = engine.DecodeConfig(threshold=threshold, max_new_tokens=max_new_tokens)
    report = {}
    for task in tasks:
        examples = data.eval_set(n, task=task)
        commits: Counter = Counter()
        rejected: Counter = Counter()
        forced: Counter = Counter()  # teacher-forced tokens, and how many each reading gets right
        correct = 0
        for ex in tqdm(examples, desc=task, disable=not progress, leave=False):
            ids = chat.prompt_ids(tok, [], question(ex), think=True, system=system(ex))
            steps, result = engine.run(decoder, ids, cfg)
            correct += score_reply(ex, result.text, result.stop_reason, think=True).correct
            for c in audit_reply(model, tok, ids, steps, result, threshold):
                commits[c.digit, c.below, c.left_open] += 1
                rejected[c.digit, c.below, c.left_open] += c.rejected
            prompt, reply = encode_chat(tok, ex["messages"])
            _, top_ar = ar_view(model, prompt, reply, tok.ids.mask)
            top_masked = iter(masked_view(decoder, prompt, reply, cfg.block_length))
            for i, t in enumerate(reply):
                if i % cfg.block_length:  # position 0 of a block is always an AR prediction
                    digit = t in tok.digit_ids
                    forced[digit, "tokens"] += 1
                    forced[digit, "ar"] += top_ar[i] == t
                    forced[digit, "masked"] += next(top_masked) == t
        report[task] = {"replies": len(examples), "correct": correct, "commits": commits, "rejected": rejected,
                        "teacher_forced": forced}
    return report


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


def render(report: dict[str, dict], threshold: float) -> str:
    header = ["task", "replies", "correct", "tokens", "commits", "left context", "count", "share", "AR rejects",
              "reject rate"]
    rows = []
    for task, r in report.items():
        for digit in (True, False):
            total = sum(v for k, v in r["commits"].items() if k[0] == digit)
            for below in (False, True):
                for left_open in (False, True):
                    n, bad = r["commits"][digit, below, left_open], r["rejected"][digit, below, left_open]
                    rows.append([task, str(r["replies"]), str(r["correct"]), "digits" if digit else "other",
                                 "below threshold" if below else "above threshold",
                                 "open" if left_open else "complete", str(n), _percent(n, total), str(bad),
                                 _percent(bad, n)])
    lines = [f"Denoising commits at threshold {threshold:g}. Left context open: a position to the token's left in "
             f"its block was still masked when it was predicted. AR rejects: the same model, reading the finished "
             f"reply left to right, gives the token < {REJECT_BELOW:g} and prefers another.", *text_table(header, rows),
             "", "The data's replies, teacher forced: next-token (AR) arg-max against masked-token arg-max with the "
             "whole left context in place (block position 0 left out: it is always an AR prediction)."]
    header = ["task", "tokens", "count", "AR right", "masked right"]
    rows = [[task, "digits" if digit else "other", str(f[digit, "tokens"]),
             _percent(f[digit, "ar"], f[digit, "tokens"]), _percent(f[digit, "masked"], f[digit, "tokens"])]
            for task, r in report.items() for f in [r["teacher_forced"]] for digit in (True, False)]
    return "\n".join(lines + text_table(header, rows))


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_model_arguments

    p = subparsers.add_parser("audit", help="which block-diffusion commits the model read autoregressively rejects",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60, help="held-out questions per task")
    p.add_argument("--tasks", nargs="+", choices=data.EVAL_TASKS, default=["one_op", "two_op"])
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--no-progress", action="store_true")
    add_model_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from .cli import CliError, load

    if not 0 < args.threshold < 1:
        raise CliError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.n < 1 or args.threads < 0:
        raise CliError("--n must be at least 1 and --threads at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load(args)
    report = audit(lm.model, lm.tokenizer, args.tasks, args.n, args.threshold, args.max_new_tokens,
                   progress=not args.no_progress)
    print(render(report, args.threshold))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main

    return cli_main(["audit", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

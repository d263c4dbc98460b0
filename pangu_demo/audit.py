"""Where block diffusion's commits go wrong: an audit of every token a denoising forward committed.

Each held-out question is decoded by block diffusion (confidence_threshold, 1 small block,
temperature 0). Every token committed by a denoising forward is sorted by two questions:
- did its confidence clear the threshold, or was it committed only because every forward must
  commit at least one token ("below the threshold")?
- would the same model, reading the finished reply left to right (one causal forward, teacher
  forced), have written it? A token "AR rejects" is not the model's AR arg-max there and gets
  less than `REJECT_BELOW` of its AR probability.
Digits and other tokens are counted apart: digits carry the arithmetic.

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
from .evaluate import question, score_reply, system
from .render import below_threshold
from .tokenizer import PanguTokenizer

REJECT_BELOW = 0.2


@dataclass(frozen=True)
class Commit:
    digit: bool
    below: bool  # committed with confidence at or below the threshold
    rejected: bool  # the model read autoregressively would not have written it


def ar_view(model: torch.nn.Module, prompt: list[int], reply: list[int]) -> tuple[list[float], list[int]]:
    """For each reply token: the model's AR probability of it, and the model's AR arg-max there."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + reply], device=model.device)).logits[0, len(prompt) - 1:-1]
    probs = logits.float().softmax(-1)
    picked = probs.gather(1, torch.tensor(reply, device=probs.device)[:, None])[:, 0]
    return picked.tolist(), probs.argmax(-1).tolist()


def audit_reply(model: torch.nn.Module, tok: PanguTokenizer, prompt: list[int], steps: list[engine.Step],
                result: engine.Result, threshold: float) -> list[Commit]:
    """Every denoising commit of one reply (up to its stop token), classified."""
    p_ar, top_ar = ar_view(model, prompt, result.tokens)
    out = []
    for s in steps:
        if s.kind != "denoise":
            continue
        width, below = len(s.block_tokens), set(below_threshold(s, threshold))
        for p, t in zip(s.committed, s.committed_tokens, strict=True):
            i = s.block * width + p
            if i >= len(result.tokens):  # padding after the stop token
                continue
            out.append(Commit(digit=t in tok.digit_ids, below=p in below,
                              rejected=top_ar[i] != t and p_ar[i] < REJECT_BELOW))
    return out


def audit(model: torch.nn.Module, tok: PanguTokenizer, tasks: list[str], n: int, threshold: float = 0.9,
          max_new_tokens: int = 256, progress: bool = True) -> dict[str, dict]:
    """Per task: replies, correct replies, and two counts keyed by (digit, below): commits, and AR rejects."""
    decoder = engine.Decoder(model, tok)
    cfg = engine.DecodeConfig(threshold=threshold, max_new_tokens=max_new_tokens)
    report = {}
    for task in tasks:
        examples = data.eval_set(n, task=task)
        commits: Counter = Counter()
        rejected: Counter = Counter()
        correct = 0
        for ex in tqdm(examples, desc=task, disable=not progress, leave=False):
            ids = chat.prompt_ids(tok, [], question(ex), think=True, system=system(ex))
            steps, result = engine.run(decoder, ids, cfg)
            correct += score_reply(ex, result.text, result.stop_reason).correct
            for c in audit_reply(model, tok, ids, steps, result, threshold):
                commits[c.digit, c.below] += 1
                rejected[c.digit, c.below] += c.rejected
        report[task] = {"replies": len(examples), "correct": correct, "commits": commits, "rejected": rejected}
    return report


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


def render(report: dict[str, dict], threshold: float) -> str:
    header = ["task", "replies", "correct", "tokens", "commits", "count", "share", "AR rejects", "reject rate"]
    rows = []
    for task, r in report.items():
        for digit in (True, False):
            total = r["commits"][digit, False] + r["commits"][digit, True]
            for below in (False, True):
                n, bad = r["commits"][digit, below], r["rejected"][digit, below]
                rows.append([task, str(r["replies"]), str(r["correct"]), "digits" if digit else "other",
                             "below threshold" if below else "above threshold", str(n),
                             _percent(n, total), str(bad), _percent(bad, n)])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [f"Denoising commits at threshold {threshold:g}. AR rejects: the same model, reading the finished reply "
             f"left to right, gives the token < {REJECT_BELOW:g} and prefers another."]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


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

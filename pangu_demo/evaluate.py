"""Evaluate the embedded model on the held-out set: the figures of its model card.

Every held-out question (think mode, single turn, the five checkable task types) is asked twice: as
it is, and with ` /no_think`. Each prompt is decoded at batch 1 and temperature 0 (the app's path)
by every chosen setting: by default block diffusion (confidence_threshold, 1 small block) at thresholds
0.9 (the headline), 0.7 and 0.95, elastic (ours) at 0.9, and plain AR decoding through the same cache.

    python -m pangu_demo.evaluate [--model PATH] [--n 300] [--out FILE.json] [--markdown FILE.md] [--quick]
    python -m pangu_demo evaluate ...

A second, disjoint set (no bars): `--first 300 --n 600 --tasks one_op two_op --think-only` asks the
120 one-operation and 120 two-operation questions that follow the standard 300."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import chat, data, engine
from .tokenizer import PanguTokenizer

SETTINGS: dict[str, dict] = {  # name -> DecodeConfig fields
    "diffusion@0.9": {"mode": "diffusion", "algorithm": "confidence_threshold", "threshold": 0.9},
    "diffusion@0.7": {"mode": "diffusion", "algorithm": "confidence_threshold", "threshold": 0.7},
    "diffusion@0.95": {"mode": "diffusion", "algorithm": "confidence_threshold", "threshold": 0.95},
    "fused@0.9": {"mode": "diffusion", "algorithm": "confidence_threshold", "threshold": 0.9, "fused_commit": True},
    "elastic@0.9": {"mode": "diffusion", "algorithm": "elastic", "threshold": 0.9},
    "ar": {"mode": "ar"},
}
HEADLINE = "diffusion@0.9"
LABELS = {"diffusion@0.9": "block diffusion, threshold 0.9", "diffusion@0.7": "block diffusion, threshold 0.7",
          "diffusion@0.95": "block diffusion, threshold 0.95", "fused@0.9": "fused commit (ours), threshold 0.9",
          "elastic@0.9": "elastic horizon (ours), threshold 0.9", "ar": "AR"}
# fused@0.9 (ours) on request. elastic@0.9 (ours) runs by default: it shows what the commit order alone does.
DEFAULT_SETTINGS = ["diffusion@0.9", "diffusion@0.7", "diffusion@0.95", "elastic@0.9", "ar"]
OPEN_PROMPTS = ["Continue this passage: Shall I compare thee to a summer's day?", "Recite a speech about love.",
                "Tell me a story."]
SPEED_NOTE = ("Note: tokens/s are wall-clock figures on this machine; they mean little while another job "
              "(e.g. training) shares the CPU cores.")
QUICK = {"n": 5, "max_new_tokens": 64, "open_prompts": 1}


# -- scoring ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    correct: bool  # the answer part states the expected answer
    well_formed: bool  # [unused16]trace[unused17]answer, stopped on the stop token, a non-empty answer (and
    # trace, in think mode)
    empty_trace: bool  # [unused16][unused17]answer: what a no-think prompt should give
    whole_answer: bool  # well formed, and the answer ends its sentence as every answer in the data does


def score_reply(example: dict, text: str, stop_reason: str, *, think: bool) -> Score:
    """Score one decoded reply (`Result.text`, without the stop token) against its example; `think`: the
    prompt asked for a trace (no ` /no_think`)."""
    parts = data.split_reply(text)  # None unless the reply opens one trace and closes it once
    # Only the text after the trace counts as the answer: a trace that never closes answers nothing,
    # even if it mentions the number.
    answer = chat.split_reply(text).answer
    after = parts[1].strip() if parts else ""
    # A think-mode reply that skips its trace ("[unused16][unused17]The answer is Olivia.") opens and closes
    # one, but holds no reasoning: not well formed.
    well_formed = bool(after) and stop_reason == "stop_token" and (not think or bool(parts[0].strip()))
    # A stop token committed in parallel can end the answer early ("There are 128 animals on", or only the
    # full stop missing): well formed as the bar defines it, but not a whole answer.
    return Score(correct=data.check_answer(example, answer), well_formed=well_formed,
                 empty_trace=parts is not None and not parts[0].strip(),
                 whole_answer=well_formed and after.endswith((".", "!", "?")))


@dataclass(frozen=True)
class Record:
    """One decoded prompt."""

    task: str
    think: bool
    score: Score
    tokens: int  # generated tokens, the stop token included
    nfe: int
    seconds: float


def summarize(records: list[Record]) -> dict:
    """Rates, tokens per forward (all tokens / all forwards, not a mean of ratios), speed, mean NFE."""
    n = len(records)
    if n == 0:
        return {"n": 0}
    tokens, nfe, seconds = (sum(getattr(r, k) for r in records) for k in ("tokens", "nfe", "seconds"))
    return {
        "n": n,
        "accuracy": sum(r.score.correct for r in records) / n,
        "well_formed": sum(r.score.well_formed for r in records) / n,
        "whole_answer": sum(r.score.whole_answer for r in records) / n,
        "empty_trace": sum(r.score.empty_trace for r in records) / n,
        "tpf": tokens / nfe if nfe else 0.0,
        "mean_nfe": nfe / n,
        "mean_tokens": tokens / n,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "tokens": tokens,
        "nfe": nfe,
        "seconds": seconds,
    }


def summarize_setting(records: list[Record], wall_seconds: float) -> dict:
    """Per task and overall, for think and no-think prompts, and over the whole setting."""
    out: dict = {}
    for key, think in (("think", True), ("no_think", False)):
        rows = [r for r in records if r.think == think]
        out[key] = {task: summarize([r for r in rows if r.task == task]) for task in data.EVAL_TASKS}
        out[key]["all"] = summarize(rows)
    out["overall"] = summarize(records)
    # The whole run's wall clock (scoring and Python overhead included) for the headline speed.
    out["overall"]["wall_seconds"] = wall_seconds
    out["overall"]["tokens_per_s_wall"] = out["overall"]["tokens"] / wall_seconds if wall_seconds > 0 else 0.0
    return out


# -- the quality bars (the model card's) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    name: str
    short: str  # for the one-line summary of a setting
    target: float
    unit: str  # "%" for rates, else printed as a number with this unit
    measure: Callable[[dict], float]  # a setting's summary -> the measured value


BARS = [
    Bar("one-operation word problems: final-answer accuracy", "one-op", 0.95, "%",
        lambda s: s["think"]["one_op"]["accuracy"]),
    Bar("two-operation word problems: final-answer accuracy", "two-op", 0.60, "%",
        lambda s: s["think"]["two_op"]["accuracy"]),
    Bar("replies with a well-formed trace", "well-formed", 0.98, "%", lambda s: s["think"]["all"]["well_formed"]),
    Bar("no-think prompts give an empty trace", "empty trace", 0.98, "%",
        lambda s: s["no_think"]["all"]["empty_trace"]),
    Bar("tokens per forward over the whole evaluation", "TPF", 3.0, "", lambda s: s["overall"]["tpf"]),
    Bar("decoding speed (generated tokens/s)", "speed", 200.0, "tok/s", lambda s: s["overall"]["tokens_per_s_wall"]),
]


def check_bars(summary: dict) -> list[dict]:
    """Each bar against one setting's summary (the headline setting, for the model card's bars)."""
    out = []
    for bar in BARS:
        try:
            value: float | None = float(bar.measure(summary))
        except KeyError:  # a task with no examples (tiny n)
            value = None
        out.append({"bar": bar.name, "short": bar.short, "target": bar.target, "unit": bar.unit, "measured": value,
                    "pass": value is not None and value >= bar.target})
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "%":
        return f"{100 * value:.1f}%"
    return f"{value:.2f}" if unit == "" else f"{value:.0f} {unit}"


# -- running ------------------------------------------------------------------------------------------
def decode_config(setting: str, max_new_tokens: int, block_length: int) -> engine.DecodeConfig:
    return engine.DecodeConfig(**SETTINGS[setting], num_small_blocks=1, temperature=0.0,
                               max_new_tokens=max_new_tokens, block_length=block_length)


def question(example: dict) -> str:
    return example["messages"][-2]["content"]  # the user turn before the reply


def system(example: dict) -> str | None:
    first = example["messages"][0]
    return first["content"] if first["role"] == "system" else None


def _decode(decoder: engine.Decoder, ids: list[int], config: engine.DecodeConfig) -> tuple[engine.Result, float]:
    start = time.perf_counter()
    _, result = engine.run(decoder, ids, config)
    return result, time.perf_counter() - start


def check_subset(n: int, first: int, tasks: list[str] | None) -> None:
    """ValueError unless n, first and tasks name some held-out questions."""
    unknown = sorted(set(tasks or ()) - set(data.EVAL_TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; the held-out tasks are {', '.join(data.EVAL_TASKS)}")
    if n < 1 or first < 0:
        raise ValueError(f"--n must be at least 1 and --first at least 0 (got n={n}, first={first})")


def evaluate(model: torch.nn.Module, tok: PanguTokenizer, *, n: int = 300, max_new_tokens: int = 256,
             block_length: int = 32, settings: list[str] | None = None, open_prompts: list[str] | None = None,
             progress: bool = True, model_name: str = "", first: int = 0, tasks: list[str] | None = None,
             think_only: bool = False) -> dict:
    """Run every setting over the held-out set and return the report (JSON-ready).

    `first`, `tasks` and `think_only` pick a subset: the held-out questions `first` to `first + n - 1` of
    those task types, think mode only. The bars are checked on the whole standard set only (first 0, every
    task, both modes), so a subset's report has none."""
    settings = settings or DEFAULT_SETTINGS
    open_prompts = OPEN_PROMPTS if open_prompts is None else open_prompts
    check_subset(n, first, tasks)
    standard = first == 0 and not tasks and not think_only
    decoder = engine.Decoder(model, tok)
    examples = [ex for ex in data.eval_set(n, start=first) if not tasks or ex["task"] in tasks]
    if not examples:
        raise ValueError(f"no held-out question of {', '.join(tasks or ())} among questions {first}-{first + n - 1}")
    prompts = [(ex, think, chat.prompt_ids(tok, [], question(ex), think=think, system=system(ex)))
               for think in ((True,) if think_only else (True, False)) for ex in examples]
    # One short decode first so that one-time costs (allocations, lazy init) do not count.
    _decode(decoder, prompts[0][2], decode_config(settings[0], min(max_new_tokens, block_length), block_length))
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    report: dict = {"model": model_name, "dtype": dtype, "n": n, "first": first,
                    "tasks": tasks or list(data.EVAL_TASKS), "think_only": think_only, "standard": standard,
                    "max_new_tokens": max_new_tokens, "block_length": block_length, "batch_size": 1, "temperature": 0.0,
                    "threads": torch.get_num_threads(),
                    "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "headline": HEADLINE,
                    "speed_note": SPEED_NOTE, "settings": {}, "samples": []}
    sample_texts: dict[tuple[str, bool], tuple[dict, engine.Result]] = {}
    for name in settings:
        config = decode_config(name, max_new_tokens, block_length)
        records = []
        start = time.perf_counter()
        for ex, think, ids in tqdm(prompts, desc=LABELS[name], disable=not progress, unit="prompt", leave=False):
            result, seconds = _decode(decoder, ids, config)
            records.append(Record(ex["task"], think, score_reply(ex, result.text, result.stop_reason, think=think),
                                  len(result.tokens), result.nfe, seconds))
            if name == HEADLINE and (ex["task"], think) not in sample_texts:
                sample_texts[(ex["task"], think)] = (ex, result)
        summary = summarize_setting(records, time.perf_counter() - start)
        # Every setting against the same bars, so that the headline's figures have a comparison.
        report["settings"][name] = {"label": LABELS[name], "config": asdict(config), **summary,
                                    "bars": check_bars(summary) if standard else []}
    if HEADLINE in report["settings"] and standard:
        report["bars"] = report["settings"][HEADLINE]["bars"]
        head_config = decode_config(HEADLINE, max_new_tokens, block_length)
        for (task, think), (ex, result) in sample_texts.items():
            report["samples"].append(_sample(task, think, question(ex), result, ex))
        for prompt in open_prompts:
            for think in (True, False):
                result, _ = _decode(decoder, chat.prompt_ids(tok, [], prompt, think=think), head_config)
                report["samples"].append(_sample("open", think, prompt, result))
    return report


def _sample(task: str, think: bool, question: str, result: engine.Result, example: dict | None = None) -> dict:
    reply = chat.split_reply(result.text)
    out = {"task": task, "mode": "think" if think else "no_think", "prompt": question, "reply": result.text,
           "thinking": reply.thinking, "answer": reply.answer, "stop_reason": result.stop_reason,
           "tokens": len(result.tokens), "nfe": result.nfe, "tpf": round(result.tpf, 3)}
    if example is not None:
        out["expected"] = example["answer"]
        out["correct"] = score_reply(example, result.text, result.stop_reason, think=think).correct
    return out


# -- output -------------------------------------------------------------------------------------------
COLUMNS = ("setting", "prompts", "task", "n", "accuracy", "well-formed", "whole answer", "empty trace", "TPF",
           "mean NFE", "tok/s")


def table_rows(report: dict) -> list[list[str]]:
    rows = []
    for s in report["settings"].values():
        entries = [("think", task, s["think"][task]) for task in [*data.EVAL_TASKS, "all"]]
        if s["no_think"]["all"].get("n"):  # think mode only: "both" would repeat the think rows
            entries += [("no-think", "all", s["no_think"]["all"]), ("both", "all", s["overall"])]
        for prompts, task, m in entries:
            if not m.get("n"):
                continue
            speed = m["tokens_per_s_wall"] if "tokens_per_s_wall" in m else m["tokens_per_s"]
            rows.append([s["label"], prompts, task, str(m["n"]), fmt(m["accuracy"], "%"),
                         fmt(m["well_formed"], "%"), fmt(m["whole_answer"], "%"),
                         fmt(m["empty_trace"] if prompts != "think" else None, "%"),
                         f"{m['tpf']:.2f}", f"{m['mean_nfe']:.1f}", f"{speed:.0f}"])
    return rows


def other_settings(report: dict) -> list[dict]:
    """The settings beside the headline, each with its own figures against the same bars."""
    return [s for name, s in report["settings"].items() if name != HEADLINE]


def describe_set(report: dict) -> str:
    """Which held-out prompts the report covers, in words."""
    first, n = report.get("first", 0), report["n"]
    tasks = report.get("tasks") or list(data.EVAL_TASKS)
    modes = "think mode only" if report.get("think_only") else "think mode, each also asked with ` /no_think`"
    return (f"questions {first}-{first + n - 1} of the held-out set ({', '.join(tasks)}; operand tuples never seen "
            f"in training), single turn, {modes}")


def bar_lines(report: dict) -> list[str]:
    if not report.get("standard", True):
        return [f"Bars: not checked; they are measured on the standard set (first 0, every task, both modes), "
                f"and this run covers {describe_set(report)}."]
    lines = [f"Bars ({LABELS[HEADLINE]}, 1 small block, temperature 0):"]
    for b in report.get("bars", []):
        lines.append(f"  {'PASS' if b['pass'] else 'FAIL'}  {b['bar']}: {fmt(b['measured'], b['unit'])} "
                     f"(target ≥ {fmt(b['target'], b['unit'])})")
    others = other_settings(report)
    if others:
        lines.append("The same measures for the other settings (the bars are set for the one above):")
    for s in others:
        lines.append(f"  {s['label']}: " + ", ".join(f"{b['short']} {fmt(b['measured'], b['unit'])}"
                                                      for b in s["bars"]))
    return lines


def text_table(columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, a rule under the header: for a terminal."""
    rows = [list(columns), *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def render_text(report: dict) -> str:
    return "\n".join([*text_table(COLUMNS, table_rows(report)), "", *bar_lines(report), "", SPEED_NOTE])


def render_markdown(report: dict) -> str:
    """The evaluation section of the model card."""
    out = ["## Evaluation", "",
           f"Held-out set: {describe_set(report)}. Batch 1, temperature 0, block "
           f"length {report['block_length']}, at most {report['max_new_tokens']} new tokens, "
           f"{report['threads']} CPU thread(s) ({report['machine']}). TPF = generated tokens (stop token "
           "included) / forward passes. Model: " + (report["model"] or "?") + f" ({report['dtype']}).", "",
           f"> {SPEED_NOTE}", ""]
    if report.get("bars"):
        others = other_settings(report)
        out += [f"### Bars ({LABELS[HEADLINE]}, 1 small block)", "",
                "The bars are set for the headline setting; the other settings' columns are the same measures, "
                "for comparison.", "",
                "| bar | target | measured | | " + " | ".join(s["label"] for s in others) + " |",
                "|---|---|---|---|" + "---|" * len(others)]
        for i, b in enumerate(report["bars"]):
            cells = [fmt(s["bars"][i]["measured"], b["unit"]) for s in others]
            out.append(f"| {b['bar']} | ≥ {fmt(b['target'], b['unit'])} | {fmt(b['measured'], b['unit'])} | "
                       f"{'PASS' if b['pass'] else 'FAIL'} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["### Per setting and task", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(r) + " |" for r in table_rows(report)]
    if report.get("samples"):
        out += ["", f"### Sample replies ({LABELS[HEADLINE]})", ""]
        for s in report["samples"]:
            verdict = "" if "correct" not in s else f", {'correct' if s['correct'] else 'wrong'}"
            out += [f"**{s['task']}, {s['mode'].replace('_', '-')}** ({s['tokens']} tokens, {s['nfe']} forwards"
                    f"{verdict}): {s['prompt']}", "", "~~~text", s["reply"].replace("~~~", "~ ~ ~"), "~~~", ""]
    return "\n".join(out).rstrip() + "\n"


# -- command line -------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_model_arguments

    p.add_argument("--n", type=int, default=300, help="held-out questions (each also asked with /no_think)")
    p.add_argument("--first", type=int, default=0, metavar="I",
                   help="start at held-out question I (a second, disjoint set: e.g. --first 300); no bars then")
    p.add_argument("--tasks", nargs="+", choices=list(data.EVAL_TASKS), default=None,
                   help="only these task types among the n questions; no bars then")
    p.add_argument("--think-only", action="store_true", help="skip the /no_think copies; no bars then")
    p.add_argument("--max-new-tokens", type=int, default=256, help="enough for the longest reply")
    p.add_argument("--block-length", type=int, default=engine.DecodeConfig().block_length)
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=DEFAULT_SETTINGS)
    p.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="write the report as JSON")
    p.add_argument("--markdown", type=Path, default=None, metavar="FILE.md", help="write the model-card section")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: n={QUICK['n']}, {QUICK['max_new_tokens']} new tokens, one open prompt")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--no-progress", action="store_true")
    add_model_arguments(p)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="held-out accuracy, trace form, TPF and speed of a model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from .cli import load

    if args.threads:
        torch.set_num_threads(args.threads)
    n, max_new, n_open = args.n, args.max_new_tokens, len(OPEN_PROMPTS)
    if args.quick:
        n, max_new, n_open = QUICK["n"], QUICK["max_new_tokens"], QUICK["open_prompts"]
    check_subset(n, args.first, args.tasks)  # before the model loads
    lm = load(args)
    print(SPEED_NOTE, file=sys.stderr)
    report = evaluate(lm.model, lm.tokenizer, n=n, max_new_tokens=max_new, block_length=args.block_length,
                      settings=args.settings, open_prompts=OPEN_PROMPTS[:n_open], progress=not args.no_progress,
                      model_name=lm.name, first=args.first, tasks=args.tasks, think_only=args.think_only)
    print(render_text(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"Report written to {args.out}", file=sys.stderr)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render_markdown(report), encoding="utf-8")
        print(f"Markdown written to {args.markdown}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main

    return cli_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

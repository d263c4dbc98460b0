"""Command line: `python -m pangu_demo generate "PROMPT" [options]`, `python -m pangu_demo replay FILE.json`.

Each subcommand is a function `add_<name>(subparsers)` that registers its parser and sets `func`
(parsed args -> exit code). Subcommands that live in their own module (bench, evaluate, audit)
define `add_subcommand(subparsers)` there and are listed in SUBCOMMAND_MODULES. Training has its own entry point,
`python -m pangu_demo.train`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from pathlib import Path

from . import animation, chat, engine, render, trace
from .loading import DTYPES, EMBEDDED_MODEL, LoadedModel, ModelLoadError, load_model
from .streaming import Recording

SUBCOMMAND_MODULES = ("bench", "evaluate", "audit")  # optional: registered when the module exists
USAGE_ERROR = 2


class CliError(Exception):
    """A problem to report as one line on stderr (exit code 2), without a traceback."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --trust-remote-code: shared by every command that loads a model."""
    parser.add_argument("--model", default=None,
                        help="checkpoint folder or Hugging Face id (default: the embedded model in assets/model)")
    parser.add_argument("--device", default=None, help="cpu, cuda, npu, mps … (default: the best available)")
    parser.add_argument("--dtype", default=None, choices=[*DTYPES, "auto"],
                        help="weights dtype (default: bfloat16 on accelerators and on CPUs with AVX512-BF16, "
                             "float32 on other CPUs)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="use the checkpoint's own modeling code (written for transformers 4.53)")


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """The DecodeConfig fields, with its defaults."""
    d = engine.DecodeConfig()
    parser.add_argument("--mode", choices=engine.MODES, default=d.mode, help="block diffusion or plain AR")
    parser.add_argument("--alg", choices=engine.ALGORITHMS, default=d.algorithm,
                        help="unmasking rule (elastic is this demo's extension, not the reference's)")
    parser.add_argument("--threshold", type=float, default=d.threshold,
                        help="confidence above which tokens are committed together (confidence_threshold, elastic)")
    parser.add_argument("--small-blocks", type=int, default=d.num_small_blocks,
                        help=f"small blocks per block of {d.block_length}: 1, 2, 4, 8, 16 or 32")
    parser.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling; 1 = off")
    parser.add_argument("--top-k", type=int, default=d.top_k, help="0 = off")
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--fused-commit", action="store_true",
                        help="this demo's option, not the reference's: each block's commit forward also makes the "
                             "next block's first denoising forward (one forward less per block)")


def decode_config(args: argparse.Namespace) -> engine.DecodeConfig:
    config = engine.DecodeConfig(mode=args.mode, algorithm=args.alg, threshold=args.threshold,
                                 num_small_blocks=args.small_blocks, temperature=args.temperature,
                                 top_p=args.top_p, top_k=args.top_k, max_new_tokens=args.max_new_tokens,
                                 seed=args.seed, fused_commit=args.fused_commit)
    config.validate()  # fail before the (possibly long) model load
    return config


def load(args: argparse.Namespace) -> LoadedModel:
    name = args.model or f"the embedded default model ({EMBEDDED_MODEL})"
    print(f"Loading {name}…", file=sys.stderr, flush=True)
    lm = load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                    progress=True)
    print(f"Loaded {lm.describe()} in {lm.load_seconds:.1f} s", file=sys.stderr, flush=True)
    return lm


# -- generate -------------------------------------------------------------------------------------
def add_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="answer one chat prompt and show how it was decoded",
                              description="Answer one chat prompt; print the thinking trace, the answer, "
                                          "and NFE / tokens per forward / tokens per second.")
    p.add_argument("prompt", help="the user message")
    thinking = p.add_mutually_exclusive_group()
    thinking.add_argument("--no-think", action="store_true", help="ask for no thinking trace (appends /no_think)")
    thinking.add_argument("--auto-think", action="store_true",
                          help="let the model decide whether to think (appends /auto_think; the real R model)")
    p.add_argument("--system", default=None, help="a system message")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE.json",
                   help="write every forward pass and the result as JSON")
    p.add_argument("--gif", type=Path, default=None, metavar="FILE.gif",
                   help="write the decoding as an animated GIF, one frame per forward (every k-th forward "
                        "of a run longer than 600; for slides)")
    add_decoding_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=generate)


def generate(args: argparse.Namespace) -> int:
    if not args.prompt.strip():  # as the page and the API refuse it: the model would answer nothing asked
        raise CliError("the prompt is empty: give the message to answer, e.g. generate \"What is 3 + 4?\"")
    config = decode_config(args)
    _check_output_folders(("trace", args.trace), ("GIF", args.gif))  # before the model loads and decodes
    lm = load(args)
    tok = lm.tokenizer
    think = "auto" if args.auto_think else not args.no_think
    ids = chat.prompt_ids(tok, [], args.prompt, think=think, system=args.system)
    decoder = engine.Decoder(lm.model, tok)
    rec = Recording(config=config, stop_ids=decoder.stop_ids(config))
    live = sys.stderr.isatty()
    for item in decoder.generate(ids, config):
        rec.add(item)
        if live and isinstance(item, engine.Step):
            print(f"\r  {item.n_generated} tokens, {item.nfe} forwards", end="", file=sys.stderr, flush=True)
    if live:
        print(file=sys.stderr)
    _report(rec)
    if args.trace:
        _write(args.trace, "trace", trace.dumps(rec, tok.token_text, decoder.mask_id, model=lm.name, prompt=args.prompt,
                                                think=chat.think_name(think), system=args.system).encode())
    _write_gif(args.gif, rec, tok.token_text, decoder.mask_id)
    return 0


def _check_output_folders(*outputs: tuple[str, Path | None]) -> None:
    for what, path in outputs:
        if path is not None and not path.parent.is_dir():
            raise CliError(f"cannot write the {what} to {path}: folder {path.parent} does not exist")


def _report(rec: Recording) -> None:
    """The reply, split into its thinking trace and answer, and the run's figures."""
    result = rec.result
    assert result is not None  # generate always ends with a Result
    reply = chat.split_reply(result.text)
    print("=== Thinking ===")
    print(reply.thinking if reply.has_trace and reply.thinking else "(no thinking trace)")
    print("=== Answer ===")
    if reply.answer:
        print(reply.answer)
    else:
        print(f"({chat.NO_ANSWER_IN_TRACE})" if reply.thinking_open else "(empty)")
    print(f"NFE {result.nfe} | TPF {result.tpf:.2f} | {result.tokens_per_second:.1f} tokens/s | "
          f"{len(result.tokens)} tokens | stop: {result.stop_reason}")


def _write_gif(path: Path | None, rec: Recording, token_text: render.TokenText, mask_id: int) -> None:
    if path is not None:
        _write(path, "GIF", animation.recording_gif(rec, token_text, mask_id))


# -- replay -----------------------------------------------------------------------------------------
def add_replay(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("replay", help="show a saved trace (and draw it as a GIF) without any model",
                              description="Read a trace written by `generate --trace` or the page's Download "
                                          "trace button, print its reply and figures, and optionally draw it as "
                                          "a GIF. No model is loaded: a trace of the 7B model replays anywhere.")
    p.add_argument("trace", type=Path, metavar="FILE.json", help="the trace to read")
    p.add_argument("--gif", type=Path, default=None, metavar="FILE.gif",
                   help="write the decoding as an animated GIF, one frame per forward (every k-th forward "
                        "of a run longer than 600)")
    p.set_defaults(func=replay)


def replay(args: argparse.Namespace) -> int:
    _check_output_folders(("GIF", args.gif))  # args.trace is the file read, not one written
    try:
        t = trace.load(args.trace)
    except trace.TraceError as e:  # what is wrong with the file, and which file
        raise CliError(f"{args.trace}: {e}") from None
    print(f"Trace of {t.model or trace.UNNAMED}" + (f": {t.prompt}" if t.prompt else ""))
    _report(t.recording)
    _write_gif(args.gif, t.recording, t.token_text, t.mask_id)
    return 0


def _write(path: Path, what: str, content: bytes) -> None:
    try:
        path.write_bytes(content)
    except OSError as e:
        raise CliError(f"could not write the {what} to {path}: {e}") from e
    print(f"{what[0].upper()}{what[1:]} written to {path}", file=sys.stderr)


# -- entry point ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pangu_demo",
                                     description="openPangu-R-7B-Diffusion block-diffusion demo.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate(subparsers)
    add_replay(subparsers)
    for name in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(f"{__package__}.{name}") is None:
            continue
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ImportError as e:  # an optional dependency is missing: keep the other commands usable
            print(f"warning: `{name}` unavailable ({e})", file=sys.stderr)
            continue
        if hasattr(module, "add_subcommand"):
            module.add_subcommand(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        return args.func(args)
    except (CliError, ModelLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"\ninterrupted after {time.perf_counter() - start:.1f} s", file=sys.stderr)
        return 130

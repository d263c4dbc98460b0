"""What the page's controls hold, and how their values (or a link's) become a run's DecodeConfig.

No Gradio here: the page, the API and the link reader check settings and messages with these functions, and
their ValueErrors say what is wrong in words.
"""

from __future__ import annotations

import unicodedata
import urllib.parse
from dataclasses import replace
from typing import NamedTuple

from .chat import THINK_NAMES, think_mode
from .engine import DecodeConfig, small_block_counts

BLOCK = DecodeConfig().block_length  # the page decodes blocks of the reference's length
SMALL_BLOCKS = small_block_counts(BLOCK)
# The ends of the page's sliders, and the seed's (a browser number is exact up to 2^53 - 1); Max new tokens goes
# from BLOCK to its model's top. A slider refuses a value beyond its ends, so what a link or a trace puts in a
# control is checked against them; the Seed box has no ends of its own, and a request is checked instead.
RANGES = {"threshold": (0.0, 1.0), "temperature": (0.0, 2.0), "top_p": (0.05, 1.0), "top_k": (0, 200),
          "seed": (0, 2**53 - 1)}
# The settings by name, in make_config's order (which is also the page's controls' and a link's), with the
# controls' labels (messages name them) and the type the engine takes.
LINK_SETTINGS = ("mode", "algorithm", "threshold", "small_blocks", "temperature", "top_p", "top_k",
                 "max_new_tokens", "seed")
LABELS = dict(zip(LINK_SETTINGS, ("Mode", "Algorithm", "Threshold", "Small blocks per block", "Temperature",
                                  "top_p", "top_k", "Max new tokens", "Seed"), strict=True))
KINDS = dict(zip(LINK_SETTINGS, (str, str, float, int, float, float, int, int, int), strict=True))
FIELDS = {name: "num_small_blocks" if name == "small_blocks" else name for name in LINK_SETTINGS}  # DecodeConfig's
MAX_PROMPT_CHARS = 20_000
# The page's ceiling on Max new tokens (the API's is the context): a longer reply's trace file and whole-reply
# figure get heavy for a browser. Its context (32k) lets the real model think for longer than 1,024 tokens.
MAX_NEW_TOKENS_PAGE = 8192
PRESETS = {  # the openPangu-R-7B-Diffusion model card's three, then one of ours
    "Throughput": {"algorithm": "confidence_threshold", "threshold": 0.9, "num_small_blocks": 1},
    "Benchmark": {"algorithm": "entropy", "num_small_blocks": 8},
    "Coding": {"algorithm": "entropy", "num_small_blocks": 32, "top_p": 0.8, "temperature": 1.0},
    # Ours, not the model card's: the commit order alone, at the Throughput preset's threshold.
    "Elastic (ours)": {"algorithm": "elastic", "threshold": 0.9, "num_small_blocks": 1},
}


def max_new_limit(context_length: int | None) -> int:
    """The top of the Max new tokens slider for a model: the whole blocks its context holds after a block of prompt
    (a reply as long as the whole context leaves no room for the question), at most MAX_NEW_TOKENS_PAGE (a context
    of 1,024 while no model is loaded)."""
    limit = min((context_length or 1024) - BLOCK, MAX_NEW_TOKENS_PAGE)
    return max(BLOCK, limit // BLOCK * BLOCK)


def max_new_default(embedded: bool, top: int) -> int:
    """Where Max new tokens starts for a model: 256 for the teaching model, whose replies are short, and 1,024 for
    others, whose slow-thinking traces need room; never above the slider's top."""
    return min(256 if embedded else 1024, top)


def make_config(mode: str, algorithm: str, threshold: float, small_blocks: int | str, temperature: float,
                top_p: float, top_k: int | float, max_new_tokens: int | float, seed: int | float) -> DecodeConfig:
    """Controls to a DecodeConfig; ValueError for impossible settings (naming the control of a value that is no
    number, else in the engine's words)."""
    values = (mode, algorithm, threshold, small_blocks, temperature, top_p, top_k, max_new_tokens, seed)
    return _config(_numbers(dict(zip(LINK_SETTINGS, values, strict=True))))


def _numbers(settings: dict[str, object]) -> dict[str, object]:
    """Settings (by LINK_SETTINGS name) as the engine takes them; ValueError names the control of a bad one."""
    return {name: str(v) if KINDS[name] is str else _number(LABELS[name], v, KINDS[name])
            for name, v in settings.items()}


def _config(v: dict[str, object]) -> DecodeConfig:
    cfg = DecodeConfig(**{FIELDS[name]: value for name, value in v.items()})
    cfg.validate()
    return cfg


def _number(name: str, value: object, kind: type) -> int | float:
    """`value` as a float, or as an int when `kind` is int: a slider sends 256.0, which is whole; 33.7 is not,
    and is refused rather than cut."""
    if isinstance(value, bool):  # a bool is an int to Python, but true is no threshold or seed
        raise ValueError(f"{name} must be a number (got {value!r}).")
    try:
        if kind is float or isinstance(value, int):
            return kind(value)
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)  # exact, also beyond a float's 2^53
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        got = "nothing: an empty box, or text" if value is None else repr(value)  # a number box sends None for both
        raise ValueError(f"{name} must be a number (got {got}).") from None
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number (got {value!r}).")
    return int(number)


def _within_limit(what: str, text: str) -> str:
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"{what} has {len(text):,} characters; the limit here is {MAX_PROMPT_CHARS:,}.")
    return text


def _text(what: str, value: object) -> str:
    """`value` if it is text the tokenizer can take, else ValueError naming `what`."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text (got {type(value).__name__}).")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, which only an API call can send: the tokenizer raised
        raise ValueError(f"{what} holds a character that is not text (a lone surrogate, at position "
                         f"{e.start + 1}).") from None
    return value


def _blank(text: str) -> bool:
    """Nothing to read: spaces, and the invisible format characters (zero-width space and joiners, BOM)."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def check_system(system: str | None) -> str | None:
    """The system message to put first (None for none), or ValueError if it is too long or not text."""
    text = "" if system is None else _text("The system message", system)
    return None if _blank(text) else _within_limit("The system message", text)


def check_prompt(prompt: str | None) -> str:
    """The message to send, or ValueError with what is wrong with it."""
    if prompt is None or _blank(_text("The message", prompt)):
        raise ValueError("Type a message first.")
    return _within_limit("The message", prompt)


def check_history(history: object) -> list[tuple[str, str]]:
    """The API's earlier turns, [[user, answer], ...] of strings, or ValueError saying what shape is expected."""
    if history is None:
        return []
    if isinstance(history, list) and all(isinstance(turn, list | tuple) and len(turn) == 2
                                         and all(isinstance(part, str) for part in turn) for turn in history):
        return [(_text("A message of history", user), _text("An answer of history", answer))
                for user, answer in history]
    raise ValueError('history must be a list of [user message, answer] pairs of text, e.g. [["Hi", "Hello!"]].')


def config_values(cfg: DecodeConfig) -> tuple:
    """A config's settings in make_config's (and LINK_SETTINGS') order."""
    return tuple(getattr(cfg, FIELDS[name]) for name in LINK_SETTINGS)


# What a link's settings are checked with where it gives no value (the engine's defaults, where the controls
# start; 32 new tokens fits every model). Only the settings it gives are applied.
LINK_BASE = config_values(replace(DecodeConfig(), max_new_tokens=32))


# A link opens the page with a question and its settings filled in (not run: Generate stays the reader's).
def link_query(text: str, think: str, system: str | None, settings: tuple, large: bool = False) -> str:
    """The query string of a link to `text` asked with these controls' values (`settings` in make_config's
    order; `large`: the page's Large text); ValueError if they could not be run as they are (the page's Generate
    would refuse them too)."""
    if error := controls_error(settings):
        raise ValueError(error)
    cfg = make_config(*settings)
    values = {"prompt": check_prompt(text), "think": think if think in THINK_NAMES else "on"}
    if check_system(system):
        values["system"] = system
    values |= {name: f"{v:g}" if isinstance(v, float) else v  # 1 rather than 1.0
               for name, v in zip(LINK_SETTINGS, config_values(cfg), strict=True)}
    if large:
        values["large"] = 1
    return "?" + urllib.parse.urlencode(values)


LINK_NAMES = {"prompt": "question", "system": "system message", "think": "thinking setting"}  # in messages


def read_link(query: dict[str, str], max_new_top: int) -> tuple[dict[str, object], list[str], list[str]]:
    """The controls' values a link gives (by name: prompt, think, system and LINK_SETTINGS), what it left out and
    why, and what it changed to fit the controls (same forwards), in words. Settings come all or none: they are
    checked together, as a run would use them."""
    values: dict[str, object] = {}
    problems, changes = [], []
    checks = (("prompt", check_prompt), ("system", check_system),
              ("think", lambda v: v if v in THINK_NAMES else think_mode(v)))
    for name, check in checks:
        if query.get(name, "").strip():  # an empty one is no value, as in a form
            try:
                values[name] = check(query[name])
            except ValueError as e:
                problems.append(f"Its {LINK_NAMES[name]} was left out: {e}")
    if query.get("large", "").lower() in ("1", "true", "on", "yes"):  # a display choice: anything else is no
        values["large"] = True
    given = {name: query[name] for name in LINK_SETTINGS if name in query}
    if given:
        base = dict(zip(LINK_SETTINGS, LINK_BASE, strict=True))
        # Each setting alone first, so that every bad one is named; then all of them together.
        alone = [settings_error(base | {name: value}, max_new_top) for name, value in given.items()]
        wrong = [e for e in alone if e] or [e for e in [settings_error(base | given, max_new_top)] if e]
        if wrong:
            problems.append(f"Its settings were left out, all of them, since a run takes them together: "
                            f"{' '.join(wrong)}")
        else:
            checked = dict(zip(LINK_SETTINGS, config_values(make_config(*(base | given).values())), strict=True))
            for o in outside_controls({name: checked[name] for name in given}, max_new_top):  # only same_forwards
                checked[o.name] = o.nearest
                changes.append(f"Its {LABELS[o.name]} {shown(o.value)} is taken as {shown(o.nearest)}: the page "
                                f"counts whole blocks of {BLOCK}, which decoding fills anyway.")
            values |= {name: checked[name] for name in given}
    return values, problems, changes


MODE_NAMES = {"diffusion": "Block diffusion", "ar": "Autoregressive (AR)"}  # as the Mode control shows them


def preset_of(settings: dict[str, object]) -> str:
    """The preset that `settings` (by LINK_SETTINGS name, the others at the page's starting values) amount to, as
    the preset buttons would set them, else "Custom"."""
    full = dict(zip(LINK_SETTINGS, LINK_BASE, strict=True)) | settings
    for name, preset in PRESETS.items():
        wanted = {"mode": "diffusion", "temperature": 0.0, "top_p": 1.0} | {
            "small_blocks" if k == "num_small_blocks" else k: v for k, v in preset.items()}
        if all(full[k] == v for k, v in wanted.items()):
            return name
    return "Custom"


def link_settings_said(values: dict[str, object]) -> str:
    """What a link's settings were, in a sentence, e.g. 'The link set Algorithm elastic and Threshold 0.7 (the
    Elastic (ours) preset).'"""
    given = {name: values[name] for name in LINK_SETTINGS if name in values}
    if not given:
        return ""
    words = [f"{LABELS[name]} {MODE_NAMES.get(value, value) if name == 'mode' else shown(value)}"
             for name, value in given.items()]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    preset = preset_of(given)
    return f"The link set {listed}" + (f" (the {preset} preset)." if preset != "Custom" else ".")


def whole_blocks(tokens: int) -> int:
    """Max new tokens rounded up to whole blocks: the same forwards, since decoding ends only at a block's end."""
    return max(BLOCK, -(-tokens // BLOCK) * BLOCK)


class Outside(NamedTuple):
    """A setting the page's control cannot hold."""
    name: str  # as in LINK_SETTINGS
    value: object
    allowed: str  # "from 0 to 2", "one of 1, 2, 4, …"
    nearest: object | None  # the nearest value the control holds (None: none is near)
    same_forwards: bool = False  # the nearest value decodes the same forwards (whole blocks of max new tokens)


def shown(value: object) -> str:
    """A setting's value in a message: 0.9, 2; whole numbers grouped (9,007,199,254,740,991)."""
    return f"{value:,}" if isinstance(value, int) else f"{value:g}" if isinstance(value, float) else str(value)


def outside_controls(settings: dict[str, object], max_new_top: int) -> list[Outside]:
    """The settings (by LINK_SETTINGS name) that the page's controls cannot hold, though the engine could run
    them: a slider refuses a value beyond its ends, Max new tokens goes by whole blocks, and the small-blocks list
    has only divisors of BLOCK."""
    out = []
    for name, value in settings.items():
        lo, hi = (BLOCK, max_new_top) if name == "max_new_tokens" else RANGES.get(name, (None, None))
        if name == "max_new_tokens" and 0 < value <= hi and value % BLOCK:  # decoding fills whole blocks anyway
            out.append(Outside(name, value, f"whole blocks of {BLOCK} up to {shown(hi)}", whole_blocks(value),
                               same_forwards=True))
        elif lo is not None and not lo <= value <= hi:
            out.append(Outside(name, value, f"from {shown(lo)} to {shown(hi)}", min(max(value, lo), hi)))
        elif name == "small_blocks" and value not in SMALL_BLOCKS:
            out.append(Outside(name, value, f"one of {', '.join(map(str, SMALL_BLOCKS))}", None))
    return out


def controls_error(settings: tuple) -> str | None:
    """What is wrong with the page's own controls' values (make_config's order) for the page, in words; None if
    nothing is. Max new tokens is left out: a run fits it to the context after the prompt, and says so."""
    return settings_error(dict(zip(LINK_SETTINGS, settings, strict=True)) | {"max_new_tokens": BLOCK}, BLOCK)


def settings_error(settings: dict[str, object], max_new_top: int) -> str | None:
    """What is wrong with settings (all of LINK_SETTINGS, as a link or the controls give them) for this page, in
    words that name its controls; None if they could run here."""
    try:
        values = _numbers(settings)
    except ValueError as e:
        return str(e)
    outside = [o for o in outside_controls(values, max_new_top) if not o.same_forwards]
    if outside:
        return " ".join(f"{LABELS[o.name]} must be {o.allowed} here (got {shown(o.value)})." for o in outside)
    try:
        _config(values)
    except ValueError as e:  # what the page's ranges do not say: an unknown mode or algorithm
        return str(e)
    return None


def describe_preset(p: dict) -> str:
    """A preset's settings in a few words, e.g. 'entropy, 32 small blocks, top_p 0.8, T 1'."""
    words = [p["algorithm"] + (f" {p['threshold']:g}" if "threshold" in p else "")]
    n = p["num_small_blocks"]
    words.append(f"{n} small block{'s' if n > 1 else ''}")
    if "top_p" in p:
        words.append(f"top_p {p['top_p']:g}")
    if "temperature" in p:
        words.append(f"T {p['temperature']:g}")
    return ", ".join(words)

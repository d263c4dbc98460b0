"""Chat prompts and the thinking-trace / answer split of openPangu-R replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .tokenizer import AUTO_THINK_SUFFIX, NO_THINK_SUFFIX, ROLE_TOKENS, PanguTokenizer

THINK_START, THINK_END = ROLE_TOKENS["think_start"], ROLE_TOKENS["think_end"]
# True: think first; False: answer at once (/no_think); "auto": the model decides (/auto_think).
Think = bool | Literal["auto"]
THINK_NAMES = ("on", "off", "auto")  # how links, trace files and the API name the three
NO_ANSWER_IN_TRACE = "no answer: the reply ended inside its thinking trace"  # what an unclosed trace left


@dataclass(frozen=True)
class Reply:
    thinking: str  # the trace (possibly still growing)
    answer: str
    thinking_open: bool  # the trace has started and not yet closed
    has_trace: bool  # the reply opened a trace at all


def split_reply(text: str) -> Reply:
    """Split decoded reply text at [unused16] / [unused17]; works on a partial (streaming) reply. A reply that
    closes a trace it never opened thought up to the close, as if its template had opened the trace."""
    start = text.find(THINK_START)
    if start < 0:
        end = text.find(THINK_END)
        if end >= 0:
            return Reply(text[:end].strip(), _clean(text[end + len(THINK_END):]), False, True)
        return Reply("", _clean(text), False, False)
    rest = text[start + len(THINK_START):]
    end = rest.find(THINK_END)
    if end < 0:
        return Reply(rest.strip(), "", True, True)
    return Reply(rest[:end].strip(), _clean(rest[end + len(THINK_END):]), False, True)


def _clean(answer: str) -> str:
    for marker in (THINK_START, THINK_END):
        answer = answer.replace(marker, "")
    return answer.strip()


def build_messages(history: list[tuple[str, str]], user: str, think: Think = True,
                   system: str | None = None) -> list[dict]:
    """Chat messages for the template.

    Earlier assistant turns go back with an empty trace ([unused16][unused17]answer): the model
    only needs the answers to follow the conversation, and dropping old traces keeps the
    context short.
    """
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    for old_user, old_answer in history:
        messages.append({"role": "user", "content": old_user})
        messages.append({"role": "assistant", "content": f"{THINK_START}{THINK_END}{old_answer}"})
    messages.append({"role": "user", "content": user + think_suffix(think)})
    return messages


def think_name(think: Think) -> str:
    """How a trace file and a link name the mode: "on", "off" or "auto"."""
    return "auto" if think == "auto" else "on" if think else "off"


def think_mode(value: object) -> Think:
    """The Thinking control's value (or the API's `think`: a bool, or "on" / "off" / "auto") as chat's Think."""
    modes = {**dict(zip(THINK_NAMES, (True, False, "auto"), strict=True)), True: True, False: False}
    if isinstance(value, (str, bool)) and value in modes:
        return modes[value]
    raise ValueError(f"Thinking must be one of on, off or auto (got {value!r}).")


def think_suffix(think: Think) -> str:
    """What the user's text ends with: nothing to think first, a switch for the other two modes."""
    if think == "auto":
        return AUTO_THINK_SUFFIX
    return "" if think else NO_THINK_SUFFIX


def prompt_ids(tok: PanguTokenizer, history: list[tuple[str, str]], user: str, think: Think = True,
               system: str | None = None) -> list[int]:
    """Render the chat template and encode it the way the authors do (BOS first)."""
    return tok.encode(tok.apply_chat_template(build_messages(history, user, think, system)))

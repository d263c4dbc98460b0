"""The openPangu tokenizer without remote code: SentencePiece plus the checkpoint's special tokens.

Encoding follows the official slow tokenizer: the text is split on the special tokens' exact
strings, each remaining segment is encoded by SentencePiece on its own (so each gets the dummy
prefix), and BOS goes first. Special tokens never pass through SentencePiece.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Role of each special token, found by its text (ids differ between checkpoints).
ROLE_TOKENS = {
    "mask": "[unused0]",
    "turn_start": "[unused9]",
    "turn_end": "[unused10]",
    "think_start": "[unused16]",
    "think_end": "[unused17]",
}
NO_THINK_SUFFIX = " /no_think"
AUTO_THINK_SUFFIX = " /auto_think"  # the R model decides whether to think
# SentencePiece's decode turns every byte of an invalid UTF-8 sequence into U+FFFD; the stream does the same.
_PER_BYTE_ERRORS = "pangu_per_byte_replace"
codecs.register_error(_PER_BYTE_ERRORS, lambda e: ("\ufffd" * (e.end - e.start), e.end))


class TokenizerError(ValueError):
    """The tokenizer files are missing, broken or lack a token the demo needs."""


def render_chat_template(template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Render a Jinja chat template the way transformers does (sandboxed, trimmed blocks)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


@dataclass(frozen=True)
class SpecialIds:
    mask: int
    turn_start: int
    turn_end: int
    think_start: int
    think_end: int
    bos: int
    eos: int
    pad: int


class PanguTokenizer:
    """SentencePiece model + the special tokens and chat template of tokenizer_config.json."""

    def __init__(self, sp: spm.SentencePieceProcessor, config: dict) -> None:
        self.sp = sp
        self.config = config
        self.chat_template: str | None = config.get("chat_template")
        self.add_bos = bool(config.get("add_bos_token", True))
        added = config.get("added_tokens_decoder", {})
        self.special_to_id: dict[str, int] = {v["content"]: int(k) for k, v in added.items()}
        self.id_to_special: dict[int, str] = {i: t for t, i in self.special_to_id.items()}
        # Longest first so that one special string that prefixes another cannot win.
        names = sorted(self.special_to_id, key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(re.escape(n) for n in names) + ")") if names else None
        self.vocab_size = max(sp.get_piece_size(), max(self.id_to_special, default=-1) + 1)
        self.ids = SpecialIds(
            **{role: self._require(text) for role, text in ROLE_TOKENS.items()},
            bos=self._token_id(config.get("bos_token", "<s>"), sp.bos_id()),
            eos=self._token_id(config.get("eos_token", "</s>"), sp.eos_id()),
            pad=self._token_id(config.get("pad_token", "<unk>"), sp.unk_id()),
        )
        self._piece_bytes = self._build_piece_bytes()
        # How SentencePiece drops a segment's leading spaces depends on the model's normaliser: with
        # remove_extra_whitespaces it strips on while the text is still empty (["▁", "▁an"] -> "an"), with
        # the identity normaliser only the first piece's (-> " an"). Ask the model once.
        space = sp.piece_to_id("\u2581")
        self._strips_while_empty = not sp.is_unknown(space) and sp.decode([space, space]) == ""

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PanguTokenizer:
        folder = Path(folder)
        model_file, config_file = folder / "tokenizer.model", folder / "tokenizer_config.json"
        for f in (model_file, config_file):
            if not f.is_file():
                raise TokenizerError(f"{folder} has no {f.name}: a Pangu checkpoint needs tokenizer.model "
                                     "and tokenizer_config.json.")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TokenizerError(f"{config_file} is not valid JSON: {e}") from e
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(str(model_file))
        except (OSError, RuntimeError) as e:
            raise TokenizerError(f"{model_file} is not a SentencePiece model: {e}") from e
        return cls(sp, config)

    # -- special tokens -------------------------------------------------------------------------
    def _token_id(self, text: str | dict | None, fallback: int) -> int:
        if isinstance(text, dict):  # older configs store AddedToken dicts
            text = text.get("content")
        if text in self.special_to_id:
            return self.special_to_id[text]
        if text:
            piece_id = self.sp.piece_to_id(text)
            if piece_id != self.sp.unk_id() or text == self.sp.id_to_piece(self.sp.unk_id()):
                return piece_id
        return fallback

    def _require(self, text: str) -> int:
        if text in self.special_to_id:
            return self.special_to_id[text]
        role = next(r for r, t in ROLE_TOKENS.items() if t == text)
        raise TokenizerError(f"The tokenizer has no {text} token (the {role.replace('_', ' ')} token of "
                             "openPangu diffusion models); this is not a Pangu diffusion checkpoint.")

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Chat generation stops at the end of the assistant turn, and at </s>."""
        return (self.ids.turn_end, self.ids.eos)

    # -- encode / decode ------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = [self.ids.bos] if (self.add_bos if add_bos is None else add_bos) else []
        parts = self._split_re.split(text) if self._split_re else [text]
        for part in parts:
            if not part:
                continue
            if part in self.special_to_id:
                ids.append(self.special_to_id[part])
            else:
                ids.extend(self.sp.encode(part))
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        out, run = [], []
        for i in ids:
            if i in self.id_to_special:
                out.append(self.sp.decode(run))
                run = []
                if not skip_special_tokens:
                    out.append(self.id_to_special[i])
            else:
                run.append(i)
        out.append(self.sp.decode(run))
        return "".join(out)

    def token_text(self, token_id: int) -> str:
        """A single token as display text (pieces keep their leading space). A byte piece that is not text on its
        own (part of a character the vocabulary splits into bytes) shows as its piece name, e.g. "<0xE6>"."""
        if token_id in self.id_to_special:
            return self.id_to_special[token_id]
        if token_id >= len(self._piece_bytes):
            return ""
        piece = self._piece_bytes[token_id]
        if len(piece) == 1 and piece[0] >= 0x80:
            return f"<0x{piece[0]:02X}>"
        return piece.decode("utf-8", errors="replace")

    @functools.cached_property
    def digit_ids(self) -> frozenset[int]:
        """The pieces that are a digit (numbers are split into single digits), with or without a leading space."""
        return frozenset(i for i in range(len(self._piece_bytes)) if self.token_text(i).strip().isdigit())

    def _build_piece_bytes(self) -> list[bytes]:
        table = []
        for i in range(self.sp.get_piece_size()):
            piece = self.sp.id_to_piece(i)
            if self.sp.is_byte(i):
                table.append(bytes([int(piece[3:5], 16)]))
            elif self.sp.is_control(i) or self.sp.is_unknown(i):
                table.append(b"")
            else:
                table.append(piece.replace("\u2581", " ").encode("utf-8"))
        return table

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    # -- chat -----------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise TokenizerError("tokenizer_config.json has no chat_template.")
        return render_chat_template(self.chat_template, messages, add_generation_prompt)


class StreamDecoder:
    """Turns a growing token prefix into text without re-decoding it.

    Matches per-segment SentencePiece decoding: the dummy-prefix space at the start of a segment
    (after BOS or a special token) is dropped; an incomplete UTF-8 tail is held back.
    """

    def __init__(self, tok: PanguTokenizer) -> None:
        self.tok = tok
        self.text = ""
        self.n_tokens = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors=_PER_BYTE_ERRORS)
        self._segment_start = True

    def feed(self, token_ids: list[int]) -> str:
        """Append tokens; return the full text so far."""
        pieces = []
        for i in token_ids:
            special = self.tok.id_to_special.get(i)
            if special is not None:
                pieces.append(self._utf8.decode(b"", final=True) + special)
                self._utf8.reset()
                self._segment_start = True
                continue
            raw = self.tok._piece_bytes[i] if i < len(self.tok._piece_bytes) else b""
            if self._segment_start and raw:
                # Only a piece's "▁" is the dummy prefix; a byte-fallback <0x20> is a real space.
                raw = raw[1:] if raw.startswith(b" ") and not self.tok.sp.is_byte(i) else raw
                self._segment_start = self.tok._strips_while_empty and not raw
            pieces.append(self._utf8.decode(raw))
        self.n_tokens += len(token_ids)
        self.text += "".join(pieces)
        return self.text

    def finish(self) -> str:
        """The final text: an incomplete UTF-8 tail becomes U+FFFD, as `decode` shows it."""
        self.text += self._utf8.decode(b"", final=True)
        return self.text

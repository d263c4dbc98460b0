"""Tokenizer: official slow-tokenizer encoding pinned against plain sentencepiece, streaming decode, chat."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import sentencepiece as spm

from pangu_demo import chat
from pangu_demo.loading import EMBEDDED_MODEL, LoadedModel
from pangu_demo.tokenizer import PanguTokenizer

# No space right after a special token: like the official tokenizer, decode drops a segment's leading space.
MIXED = "思考 😀 naïve café ✓[unused16]想想 🎉 用户[unused17]The answer is 84. 数字 1234 ✨[unused10]"


@pytest.fixture(scope="module")
def tok(tiny_model: LoadedModel) -> PanguTokenizer:
    return tiny_model.tokenizer


@pytest.fixture(scope="module")
def plain_sp(tiny_checkpoint: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(tiny_checkpoint / "tokenizer.model"))


@pytest.fixture(scope="module")
def specials(tiny_checkpoint: Path) -> dict[str, int]:
    config = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text(encoding="utf-8"))
    return {v["content"]: int(k) for k, v in config["added_tokens_decoder"].items()}


def official_encode(sp: spm.SentencePieceProcessor, specials: dict[str, int], text: str) -> list[int]:
    """The slow tokenizer's behaviour: BOS, then special strings as their ids and every other
    segment encoded by SentencePiece on its own."""
    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    ids = [sp.bos_id()]
    for part in re.split(pattern, text):
        if part in specials:
            ids.append(specials[part])
        elif part:
            ids += sp.encode(part)
    return ids


def test_encode_matches_official_segmentation(tok: PanguTokenizer, plain_sp: spm.SentencePieceProcessor,
                                              specials: dict[str, int]) -> None:
    text = "[unused9]用户：How many"
    ids = tok.encode(text)
    assert ids == official_encode(plain_sp, specials, text)
    assert ids[:2] == [tok.ids.bos, specials["[unused9]"]]
    # The segment after the special token gets its own dummy prefix "▁", and "How" none.
    assert "".join(plain_sp.id_to_piece(i) for i in ids[2:]) == "▁用户：How▁many"
    # Encoding the whole string in one go is different (the "▁" lands before [unused9]): not what the model saw.
    assert ids != [plain_sp.bos_id()] + plain_sp.encode(text)


def test_encode_multi_turn_chat(tok: PanguTokenizer, plain_sp: spm.SentencePieceProcessor,
                                specials: dict[str, int]) -> None:
    messages = chat.build_messages([("How many eggs?", "84 eggs.")], "Shall I compare thee?", system="Be brief.")
    text = tok.apply_chat_template(messages)
    ids = tok.encode(text)
    assert ids == official_encode(plain_sp, specials, text)
    assert ids.count(specials["[unused9]"]) == 5 and ids.count(specials["[unused10]"]) == 4
    assert tok.encode(text, add_bos=False) == ids[1:]


def test_decode_round_trip(tok: PanguTokenizer) -> None:
    for text in [MIXED, "How many eggs does Claire eat in four weeks?", "[unused9]用户：你好[unused10]"]:
        assert tok.decode(tok.encode(text, add_bos=False)) == text
    assert tok.decode(tok.encode(MIXED, add_bos=False), skip_special_tokens=True) == re.sub(r"\[unused\d+\]", "", MIXED)
    assert tok.decode(tok.encode("[unused17] answer", add_bos=False)) == "[unused17]answer"  # official behaviour


def test_special_ids_found_by_text(tok: PanguTokenizer, specials: dict[str, int]) -> None:
    ids = tok.ids
    assert (ids.mask, ids.turn_start, ids.turn_end, ids.think_start, ids.think_end) == tuple(
        specials[t] for t in ("[unused0]", "[unused9]", "[unused10]", "[unused16]", "[unused17]"))
    assert ids.mask != 45830  # the tiny tokenizer's ids differ from the official ones: nothing hard-coded
    assert (ids.bos, ids.eos, ids.pad) == (1, 2, 0)
    assert tok.stop_ids == (specials["[unused10]"], 2)
    assert tok.token_text(ids.think_start) == "[unused16]"


def test_stream_decoder_one_token_at_a_time(tok: PanguTokenizer) -> None:
    ids = tok.encode(MIXED, add_bos=False)
    assert any(tok.sp.is_byte(i) for i in ids)  # the emoji go through byte fallback
    stream = tok.stream_decoder()
    texts = [stream.feed([i]) for i in ids]
    assert texts[-1] == tok.decode(ids) == MIXED
    for earlier, later in zip(texts, texts[1:], strict=False):
        assert "\ufffd" not in earlier  # an incomplete character is held back, never shown broken
        assert later.startswith(earlier)


def test_stream_decoder_equals_decode_on_random_tokens(tok: PanguTokenizer) -> None:
    # Random ids include invalid byte sequences and specials: once finished, the stream must
    # show exactly what decode shows (that is what a reply's final text is compared with).
    rng = random.Random(0)
    for _ in range(2000):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(1, 12))]
        stream = tok.stream_decoder()
        for i in ids:
            stream.feed([i])
        assert stream.finish() == tok.decode(ids), ids


@pytest.fixture(scope="module")
def embedded_tok() -> PanguTokenizer:
    return PanguTokenizer.from_pretrained(EMBEDDED_MODEL)


@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_stream_decoder_drops_leading_spaces_as_sentencepiece_does(tok: PanguTokenizer, embedded_tok: PanguTokenizer,
                                                                   which: str) -> None:
    # A lone "▁" piece opening a segment: with the identity normaliser (the embedded model's) SentencePiece
    # then keeps the next piece's space; with the default one (the tiny test tokenizer's) it drops it too.
    tok = tok if which == "tiny" else embedded_tok
    space = tok.sp.piece_to_id("\u2581")
    word = next(i for i in range(tok.vocab_size) if tok.sp.id_to_piece(i).startswith("\u2581") and
                len(tok.sp.id_to_piece(i)) > 2 and not tok.sp.is_byte(i))
    for ids in ([space, word], [space, space, word], [tok.ids.think_start, space, word], [space], [word, space]):
        stream = tok.stream_decoder()
        for i in ids:
            stream.feed([i])
        assert stream.finish() == tok.decode(ids), [tok.sp.id_to_piece(i) for i in ids]
    assert tok.decode([space, word]).startswith(" ") == (which == "embedded")  # the two cases differ


def test_a_character_split_into_bytes_shows_its_byte_pieces(embedded_tok: PanguTokenizer) -> None:
    ids = embedded_tok.encode("思 é")  # neither is in the small vocabulary: byte fallback
    shown = [embedded_tok.token_text(i) for i in ids]
    assert "<0xE6>" in shown and "<0xC3>" in shown and "<0xA9>" in shown and "\ufffd" not in "".join(shown)
    assert embedded_tok.decode(ids).endswith("思 é")  # whole sequences still decode to the characters


def test_chat_template(tok: PanguTokenizer) -> None:
    text = tok.apply_chat_template([{"role": "user", "content": "How many eggs?"}])
    assert text == "[unused9]系统：[unused10][unused9]用户：How many eggs?[unused10][unused9]助手："
    with_system = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Hi"}])
    assert with_system == "[unused9]系统：Be brief.[unused10][unused9]用户：Hi[unused10][unused9]助手："
    ids = chat.prompt_ids(tok, [], "How many eggs?")
    assert ids[0] == tok.ids.bos and ids[1] == tok.ids.turn_start
    assert ids == tok.encode(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("[unused16] Count the eggs. [unused17] The answer is 84.",
     chat.Reply("Count the eggs.", "The answer is 84.", False, True)),
    ("[unused16]Still counting", chat.Reply("Still counting", "", True, True)),
    ("[unused16]", chat.Reply("", "", True, True)),
    ("[unused16][unused17]84", chat.Reply("", "84", False, True)),
    ("Just an answer. ", chat.Reply("", "Just an answer.", False, False)),
])
def test_split_reply(text: str, expected: chat.Reply) -> None:
    assert chat.split_reply(text) == expected


def test_build_messages() -> None:
    history = [("How many eggs?", "84.")]
    messages = chat.build_messages(history, "Why?", think=False, system="Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How many eggs?"},
        {"role": "assistant", "content": "[unused16][unused17]84."},  # old traces are dropped
        {"role": "user", "content": "Why? /no_think"},
    ]
    assert chat.build_messages([], "Why?")[-1] == {"role": "user", "content": "Why?"}
    assert chat.build_messages([], "Why?")[0]["role"] == "user"  # no system message unless given

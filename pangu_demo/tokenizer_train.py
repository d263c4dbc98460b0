"""Train the small model's SentencePiece tokenizer on rendered training chats plus Shakespeare.

The output folder holds `tokenizer.model` and a `tokenizer_config.json` that copies the official one
(chat template, special tokens) with the special tokens mapped to this model's ids.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import tempfile
from pathlib import Path

import sentencepiece as spm
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .corpus import load_works
from .data import make_example
from .tokenizer import render_chat_template

OFFICIAL_CONFIG = Path(__file__).resolve().parent / "official_format" / "tokenizer_config.json"
SP_CORE = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in the official tokenizer


def official_config() -> dict:
    return json.loads(OFFICIAL_CONFIG.read_text(encoding="utf-8"))


def special_texts(config: dict) -> list[str]:
    """The added tokens other than <unk>, <s>, </s>, in id order."""
    added = sorted(config["added_tokens_decoder"].items(), key=lambda kv: int(kv[0]))
    return [v["content"] for _, v in added if v["content"] not in SP_CORE]


def write_training_text(path: Path, n_examples: int, seed: int, template: str) -> None:
    # Compile the template once (render_chat_template compiles per call); same settings, checked below.
    compiled = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
    first = make_example("train", 0, seed)["messages"]
    assert compiled.render(messages=first, add_generation_prompt=False) == render_chat_template(template, first, False)
    # One line per segment between special tokens: PanguTokenizer encodes each segment on its own
    # (with SentencePiece's dummy prefix), so the pieces should be learned the same way.
    split = re.compile("|".join(re.escape(t) for t in sorted(special_texts(official_config()), key=len, reverse=True)))
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n_examples):
            chat = compiled.render(messages=make_example("train", i, seed)["messages"], add_generation_prompt=False)
            fh.writelines(line + "\n" for seg in split.split(chat) for line in seg.split("\n") if line)
        for work in load_works():
            fh.write(work.title + "\n")
            fh.writelines(ln + "\n" for passage in work.passages for ln in passage)


def train_tokenizer(out_dir: str | Path, vocab_size: int = 4096, n_examples: int = 30000, seed: int = 0) -> Path:
    """Train tokenizer.model into out_dir and write the matching tokenizer_config.json; returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = official_config()
    specials = special_texts(config)
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "train.txt"
        write_training_text(text, n_examples, seed, config["chat_template"])
        spm.SentencePieceTrainer.train(
            input=str(text), model_prefix=str(Path(tmp) / "tokenizer"), model_type="bpe",
            vocab_size=vocab_size, character_coverage=1.0, byte_fallback=True, split_digits=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=[*specials, "\n"],
            input_sentence_size=0, shuffle_input_sentence=False, num_threads=2,
            max_sentence_length=16384, minloglevel=2)
        (out_dir / "tokenizer.model").write_bytes((Path(tmp) / "tokenizer.model").read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))
    new = copy.deepcopy(config)
    new.pop("auto_map", None)
    new["tokenizer_class"] = "PanguTokenizer"
    new["added_tokens_decoder"] = {
        str(sp.piece_to_id(v["content"])): v
        for _, v in sorted(config["added_tokens_decoder"].items(), key=lambda kv: int(kv[0]))}
    assert len(new["added_tokens_decoder"]) == len(config["added_tokens_decoder"]), "special ids collide"
    (out_dir / "tokenizer_config.json").write_text(json.dumps(new, ensure_ascii=False, indent=2) + "\n",
                                                   encoding="utf-8")
    return out_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the demo model's SentencePiece tokenizer.")
    parser.add_argument("out_dir")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--n-examples", type=int, default=30000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(train_tokenizer(args.out_dir, args.vocab_size, args.n_examples, args.seed))

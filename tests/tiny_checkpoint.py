"""Write a tiny random checkpoint in exactly the official openPangu format.

Config keys of the official config.json (small sizes), the tensor names of weight_names.txt
(biases and rotary inv_freq included) split over two safetensors shards with an index, a
SentencePiece tokenizer.model with the [unusedN] tokens as special tokens, and the official
tokenizer_config.json (settings and chat template) with this tokenizer's ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file

OFFICIAL = Path(__file__).resolve().parent.parent / "pangu_demo" / "official_format"

SENTENCES = [
    "How many eggs does Claire eat in four weeks?", "She eats three eggs every morning.",
    "The answer is 84.", "Shall I compare thee to a summer's day?", "Thou art more lovely and more temperate.",
    "Rough winds do shake the darling buds of May.", "To be, or not to be, that is the question.",
    "Tom has 12 apples and gives 5 to Anna.", "数字 1234567890 和 汉字 混合 文本。", "用户 助手 系统 ： 你好",
    "Café, naïve, résumé — “quotes” and 'apostrophes' & <tags>.",
]


def official_special_tokens() -> dict[str, dict]:
    return json.loads((OFFICIAL / "tokenizer_config.json").read_text(encoding="utf-8"))["added_tokens_decoder"]


def train_tiny_tokenizer(folder: Path, vocab_size: int = 480) -> spm.SentencePieceProcessor:
    specials = [v["content"] for v in official_special_tokens().values()
                if v["content"] not in ("<unk>", "<s>", "</s>")]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 20), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=specials, minloglevel=2)
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink()
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))


def write_tokenizer_config(folder: Path, sp: spm.SentencePieceProcessor, drop: tuple[str, ...] = ()) -> None:
    config = json.loads((OFFICIAL / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {
        str(sp.piece_to_id(v["content"])): v for v in official_special_tokens().values() if v["content"] not in drop}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2),
                                                  encoding="utf-8")


def write_tiny_checkpoint(folder: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                          intermediate: int = 128, context: int = 512, seed: int = 0,
                          dtype: torch.dtype = torch.bfloat16, peak: float = 1.0) -> Path:
    """A random model; `peak` scales lm_head so that distributions are sharp rather than near-uniform."""
    folder.mkdir(parents=True, exist_ok=True)
    sp = train_tiny_tokenizer(folder)
    write_tokenizer_config(folder, sp)
    vocab = sp.get_piece_size()
    config = json.loads((OFFICIAL / "config.json").read_text())
    config.update(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                  max_position_embeddings=context, rope_theta=10000.0)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    gen = torch.Generator().manual_seed(seed)
    head_dim = hidden // heads

    def rand(*shape: int, std: float = 0.08) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * std).to(dtype)

    names = [n.strip() for n in (OFFICIAL / "weight_names.txt").read_text().splitlines() if n.strip()]
    shapes = {
        "lm_head.weight": (vocab, hidden), "model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": None,
        "input_layernorm.weight": None, "post_attention_layernorm.weight": None,
        "mlp.down_proj.weight": (hidden, intermediate), "mlp.gate_proj.weight": (intermediate, hidden),
        "mlp.up_proj.weight": (intermediate, hidden),
        "self_attn.q_proj.weight": (heads * head_dim, hidden), "self_attn.q_proj.bias": (heads * head_dim,),
        "self_attn.k_proj.weight": (kv_heads * head_dim, hidden), "self_attn.k_proj.bias": (kv_heads * head_dim,),
        "self_attn.v_proj.weight": (kv_heads * head_dim, hidden), "self_attn.v_proj.bias": (kv_heads * head_dim,),
        "self_attn.o_proj.weight": (hidden, heads * head_dim), "self_attn.o_proj.bias": (hidden,),
    }
    tensors: dict[str, torch.Tensor] = {}
    for pattern in names:
        for n in range(layers) if "{N}" in pattern else [None]:
            name = pattern.replace("{N}", str(n))
            key = name.split(f"layers.{n}.")[-1] if n is not None else name
            if key.endswith("rotary_emb.inv_freq"):
                tensors[name] = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
            elif shapes[key] is None:
                tensors[name] = (1.0 + torch.randn(hidden, generator=gen) * 0.1).to(dtype)
            elif key == "lm_head.weight":
                tensors[name] = rand(*shapes[key], std=0.08 * peak)
            else:
                tensors[name] = rand(*shapes[key], std=0.5 if key.endswith("embed_tokens.weight") else 0.08)
    # Two shards plus an index, as the official checkpoint has.
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for shard, shard_keys in shards.items():
        save_file({k: tensors[k].contiguous() for k in shard_keys}, str(folder / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in shard_keys})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "generation_config.json").write_text((OFFICIAL / "generation_config.json").read_text())
    return folder

"""The committed embedded model: official checkpoint format, size, and that it decodes held-out problems."""

from __future__ import annotations

import json
import re

import pytest
from safetensors import safe_open

from pangu_demo import data
from pangu_demo.chat import prompt_ids, split_reply
from pangu_demo.engine import DecodeConfig, Decoder, run
from pangu_demo.loading import EMBEDDED_MODEL, OFFICIAL_FORMAT, load_model


@pytest.fixture(scope="module")
def embedded():
    return load_model(None, dtype="float32", progress=False)


def test_official_checkpoint_format() -> None:
    config = json.loads((EMBEDDED_MODEL / "config.json").read_text())
    official = json.loads((OFFICIAL_FORMAT / "config.json").read_text())
    assert set(official) - {"auto_map"} <= set(config)
    assert config["model_type"] == "PanguEmbedded" and config["bias"] is True
    names = [n for n in (OFFICIAL_FORMAT / "weight_names.txt").read_text().split() if n]
    expected = {n.replace("{N}", str(i)) for n in names for i in range(config["num_hidden_layers"])}
    with safe_open(str(EMBEDDED_MODEL / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == expected
    tok_config = json.loads((EMBEDDED_MODEL / "tokenizer_config.json").read_text())
    official_tok = json.loads((OFFICIAL_FORMAT / "tokenizer_config.json").read_text())
    assert tok_config["chat_template"] == official_tok["chat_template"]
    assert {v["content"] for v in tok_config["added_tokens_decoder"].values()} == {
        v["content"] for v in official_tok["added_tokens_decoder"].values()}


def test_size_on_disk() -> None:
    total = sum(f.stat().st_size for f in EMBEDDED_MODEL.iterdir() if f.is_file())
    assert total <= 30 * 1024 * 1024


def test_replies_in_the_trained_format_several_tokens_per_forward(embedded) -> None:
    """Held-out word problems: a closed thinking trace, an answer, the stop token, and block diffusion
    committing more than one token per forward on average."""
    decoder = Decoder(embedded.model, embedded.tokenizer)
    tokens, nfe, well_formed = 0, 0, 0
    for ex in data.eval_set(4, task="one_op"):
        ids = prompt_ids(embedded.tokenizer, [], ex["messages"][-2]["content"])
        _, result = run(decoder, ids, DecodeConfig(max_new_tokens=256))
        reply = split_reply(result.text)
        well_formed += reply.has_trace and not reply.thinking_open and bool(reply.answer) and \
            result.stop_reason == "stop_token"
        tokens, nfe = tokens + len(result.tokens), nfe + result.nfe
    assert well_formed >= 3
    assert tokens / nfe > 1.2


def test_autoregressive_mode_solves_held_out_problems(embedded) -> None:
    """The committed model has learned the column method: AR decoding answers most held-out one-operation
    problems (operand pairs never seen in training) correctly."""
    decoder = Decoder(embedded.model, embedded.tokenizer)
    correct = 0
    examples = data.eval_set(6, task="one_op")
    for ex in examples:
        ids = prompt_ids(embedded.tokenizer, [], ex["messages"][-2]["content"])
        _, result = run(decoder, ids, DecodeConfig(mode="ar", max_new_tokens=192))
        correct += data.check_answer(ex, split_reply(result.text).answer)
    assert correct >= 4, f"{correct} of {len(examples)} correct"


def test_no_think_gives_an_empty_trace(embedded) -> None:
    decoder = Decoder(embedded.model, embedded.tokenizer)
    ex = data.eval_set(1, task="comparing")[0]
    ids = prompt_ids(embedded.tokenizer, [], ex["messages"][-2]["content"], think=False)
    _, result = run(decoder, ids, DecodeConfig(max_new_tokens=128))
    reply = split_reply(result.text)
    assert reply.has_trace and reply.thinking == "" and reply.answer


@pytest.fixture(scope="module")
def embedded_bf16():
    return load_model(None, dtype="bfloat16", progress=False)


# Both dtypes the app may load on a CPU (bf16 where the CPU has bf16 instructions, see pick_dtype).
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("example", "answer"),
                         [(0, 72 + 45), (1, 57 - 48), (2, 26 * 7), (3, 96 // 8), (4, (43 - 8) // 7)])
def test_the_apps_word_problem_examples_are_answered_by_block_diffusion(request, dtype, example, answer) -> None:
    from pangu_demo.ui import EXAMPLES

    embedded = request.getfixturevalue("embedded" if dtype == "float32" else "embedded_bf16")
    _, result = run(Decoder(embedded.model, embedded.tokenizer),
                    prompt_ids(embedded.tokenizer, [], EXAMPLES[example][1]), DecodeConfig(max_new_tokens=256))
    reply = split_reply(result.text)
    assert result.stop_reason == "stop_token" and reply.thinking
    assert re.findall(r"\d+", reply.answer)[-1:] == [str(answer)], result.text
    assert reply.answer.rstrip().endswith((".", "!", "?")), result.text  # a whole sentence, not cut by a stop token
    assert result.tpf > 1.5  # visibly parallel

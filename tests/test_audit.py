"""The commit audit (pangu_demo.audit): the AR reading lines up with the reply, every denoising commit of the
reply is classified once, and the command runs."""

from __future__ import annotations

import pytest

from pangu_demo import audit, chat, cli, data, engine, evaluate
from pangu_demo.loading import load_model


@pytest.fixture(scope="module")
def embedded():
    return load_model(None, dtype="float32", progress=False)


def prompt(lm, task: str) -> list[int]:
    ex = data.eval_set(1, task=task)[0]
    return chat.prompt_ids(lm.tokenizer, [], evaluate.question(ex), think=True, system=evaluate.system(ex))


def test_ar_view_predicts_what_greedy_ar_decoding_wrote(embedded):
    # A reply decoded greedily by AR is, token by token, the AR arg-max: an off-by-one in the view breaks this.
    ids = prompt(embedded, "one_op")
    _, result = engine.run(engine.Decoder(embedded.model, embedded.tokenizer), ids,
                           engine.DecodeConfig(mode="ar", max_new_tokens=96))
    probs, top = audit.ar_view(embedded.model, ids, result.tokens)
    assert top == result.tokens
    assert len(probs) == len(result.tokens) and min(probs) > 0.05


def test_every_denoising_commit_of_the_reply_is_classified_once(embedded):
    ids = prompt(embedded, "two_op")
    cfg = engine.DecodeConfig(threshold=0.9, max_new_tokens=128)
    steps, result = engine.run(engine.Decoder(embedded.model, embedded.tokenizer), ids, cfg)
    commits = audit.audit_reply(embedded.model, embedded.tokenizer, ids, steps, result, 0.9)
    # Position 0 of each block comes from the forward before it; every other reply token from one denoising commit.
    blocks = -(-len(result.tokens) // cfg.block_length)
    assert len(commits) == len(result.tokens) - blocks
    digits = sum(embedded.tokenizer.token_text(t).strip().isdigit() for i, t in enumerate(result.tokens)
                 if i % cfg.block_length)
    assert sum(c.digit for c in commits) == digits
    in_reply = [(s.block * cfg.block_length + p, c) for s in steps if s.kind == "denoise"
                for p, c in zip(s.committed, s.committed_confidence, strict=True)]
    below = sum(c <= 0.9 for i, c in in_reply if i < len(result.tokens))
    assert sum(c.below for c in commits) == below > 0


def test_audit_command_prints_the_table(tiny_checkpoint, capsys):
    code = cli.main(["audit", "--model", str(tiny_checkpoint), "--dtype", "float64", "--n", "2", "--tasks", "one_op",
                     "--max-new-tokens", "32", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "digits  below threshold" in out and "other   above threshold" in out


def test_audit_command_refuses_a_threshold_outside_0_1(tiny_checkpoint, capsys):
    assert cli.main(["audit", "--model", str(tiny_checkpoint), "--threshold", "1.5"]) != 0
    assert "--threshold must be between 0 and 1" in capsys.readouterr().err

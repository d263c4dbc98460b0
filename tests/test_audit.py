"""The commit audit (pangu_demo.audit): the AR reading lines up with the reply, every denoising commit of the
reply is classified once, and the command runs."""

from __future__ import annotations

import pytest
import torch

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
    probs, top = audit.ar_view(embedded.model, ids, result.tokens, embedded.tokenizer.ids.mask)
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


def test_only_the_leftmost_masked_position_of_a_forward_has_its_left_context_complete(embedded):
    ids = prompt(embedded, "one_op")
    steps, result = engine.run(engine.Decoder(embedded.model, embedded.tokenizer), ids,
                               engine.DecodeConfig(threshold=0.9, max_new_tokens=96))
    commits = audit.audit_reply(embedded.model, embedded.tokenizer, ids, steps, result, 0.9)
    forwards = sum(s.kind == "denoise" for s in steps)
    complete = sum(not c.left_open for c in commits)
    assert 0 < complete <= forwards
    assert complete < len(commits)  # the embedded model commits ahead of its left context too


def test_masked_view_matches_the_engines_denoising_forward(tiny_model):
    # masked_view runs prefix and block in one uncached forward; the engine's cached denoising forward must agree
    # with it on the prediction after a clean prefix (a wrong mask, position or shift breaks this).
    tok = tiny_model.tokenizer
    decoder = engine.Decoder(tiny_model.model, tok)
    prompt, reply = [tok.ids.bos, 40, 41, 42, 43], [50 + i % 30 for i in range(45)]
    view = audit.masked_view(decoder, prompt, reply, block_length=32)
    assert len(view) == len(reply) - 2  # positions 0 and 32 are block starts
    expected = []
    for start in (0, 32):
        context = prompt + reply[:start]
        for j in range(1, min(32, len(reply) - start)):
            run = engine._Run(decoder, [context], engine.DecodeConfig(), None)
            n = len(context)
            run._forward(run.prompt, torch.arange(n)[None], causal_len=n, keep=n, ids_valid=run.prompt_valid)
            block = torch.tensor([(reply[start:start + j] + [tok.ids.mask] * 32)[:32]])
            logits = run._forward(block, torch.arange(n, n + 32)[None], causal_len=0, keep=0)
            expected.append(int(run._sample(logits).tokens[0, j - 1]))  # the engine's own candidate
    assert view == expected


def test_the_views_never_pick_mask(tiny_model):
    # The engine never commits MASK, so neither reading may count it as the model's choice: with MASK made the top
    # logit everywhere, both views still give the best other token.
    tok = tiny_model.tokenizer
    decoder = engine.Decoder(tiny_model.model, tok)
    prompt, reply = [tok.ids.bos, 40, 41, 42, 43], [50 + i % 30 for i in range(40)]
    with torch.no_grad():
        plain = tiny_model.model(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1:-1]

    def mask_first(module, args, logits):
        return logits.index_fill(-1, torch.tensor([tok.ids.mask]), 1e4)

    hook = tiny_model.model.lm_head.register_forward_hook(mask_first)
    try:
        probs, top = audit.ar_view(tiny_model.model, prompt, reply, tok.ids.mask)
        masked = audit.masked_view(decoder, prompt, reply, block_length=32)
    finally:
        hook.remove()
    assert top == plain.index_fill(-1, torch.tensor([tok.ids.mask]), float("-inf")).argmax(-1).tolist()
    assert tok.ids.mask not in masked and len(masked) == len(reply) - 2
    assert min(probs) > 0  # the reply's tokens keep their probability once MASK's is taken out


def test_audit_command_prints_the_table(tiny_checkpoint, capsys):
    code = cli.main(["audit", "--model", str(tiny_checkpoint), "--dtype", "float64", "--n", "2", "--tasks", "one_op",
                     "--max-new-tokens", "32", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "digits  below threshold" in out and "other   above threshold" in out
    assert "complete" in out and "open" in out and "masked right" in out


def test_audit_command_refuses_a_threshold_outside_0_1(tiny_checkpoint, capsys):
    assert cli.main(["audit", "--model", str(tiny_checkpoint), "--threshold", "1.5"]) != 0
    assert "--threshold must be between 0 and 1" in capsys.readouterr().err

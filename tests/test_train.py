"""Training layout, loss, resumable training and export of the embedded model (pangu_demo.train)."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from pangu_demo import chat, engine, train
from pangu_demo.loading import OFFICIAL_FORMAT, LoadedModel, load_model, weight_files
from pangu_demo.tokenizer import PanguTokenizer
from pangu_demo.train import IGNORE, TrainConfig, build_layout, collate

MASK, PAD, END = 7, 0, 9  # made-up ids for the hand-built layout

# Prompt of 3 tokens, reply of 5 (ending with END), block_length 4: clean part = 3 + 2 blocks = 11 tokens,
# then noisy blocks 0 (rows 11-14) and 1 (rows 15-18). Columns: 11 clean, then 8 noisy.
EXPECTED_ALLOWED = """
10000000000 00000000
11000000000 00000000
11100000000 00000000
11110000000 00000000
11111000000 00000000
11111100000 00000000
11111110000 00000000
11111111000 00000000
11111111100 00000000
11111111110 00000000
11111111111 00000000
11100000000 11110000
11100000000 11110000
11100000000 11110000
11100000000 11110000
11111110000 00001111
11111110000 00001111
11111110000 00001111
11111110000 00001111
"""
EXPECTED_POSITIONS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 4, 5, 6, 7, 8, 9, 10]
EXPECTED_CLEAN_IDS = [101, 102, 103, 201, 202, 203, 204, END, END, END, END]  # last block padded with END
# Next-token labels of the clean part stop at the end of the reply, not at its padding.
EXPECTED_CLEAN_LABELS = [102, 103, 201, 202, 203, 204, END, IGNORE, IGNORE, IGNORE, IGNORE]
REPLY_BLOCKS = [[201, 202, 203, 204], [END, END, END, END]]


def small_config(**changes: object) -> TrainConfig:
    base = TrainConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, context_length=256, block_length=16, max_reply_blocks=4,
                       batch_size=2, steps=2, warmup=1, lr=3e-3, checkpoint_every=1)
    return replace(base, **changes)


def test_layout_matches_hand_built_example() -> None:
    lay = build_layout([101, 102, 103], [201, 202, 203, 204, END], MASK, PAD, 4, torch.Generator().manual_seed(3))
    expected = torch.tensor([[int(c) for c in row.replace(" ", "")] for row in EXPECTED_ALLOWED.strip().splitlines()])
    assert torch.equal(lay.allowed, expected.bool())
    assert lay.position_ids.tolist() == EXPECTED_POSITIONS
    assert lay.input_ids[:11].tolist() == EXPECTED_CLEAN_IDS
    assert lay.labels[:11].tolist() == EXPECTED_CLEAN_LABELS
    noisy = lay.input_ids[11:].view(2, 4)
    for k, block in enumerate(REPLY_BLOCKS):
        masked = noisy[k] == MASK
        assert noisy[k][~masked].tolist() == [t for t, m in zip(block, masked.tolist(), strict=True) if not m]
        # The output at block position j-1 predicts masked token j; position 3 predicts nothing.
        want = [block[j + 1] if masked[j + 1] else IGNORE for j in range(3)] + [IGNORE]
        assert lay.labels[11 + 4 * k: 15 + 4 * k].tolist() == want
    assert torch.equal(lay.is_noisy_label, (torch.arange(19) >= 11) & (lay.labels != IGNORE))


@pytest.mark.parametrize("reply_len", [1, 4, 5, 9, 16])
def test_noise_rules(reply_len: int) -> None:
    L = 4
    reply = list(range(200, 200 + reply_len - 1)) + [END]
    n_blocks = max(1, -(-reply_len // L))
    gen = torch.Generator().manual_seed(reply_len)
    first_masked = 0
    for _ in range(200):
        for prob in (0.0, 1.0):
            lay = build_layout([101, 102], reply, MASK, PAD, L, gen, first_token_mask_prob=prob)
            noisy = lay.input_ids[2 + n_blocks * L:].view(n_blocks, L) == MASK
            assert noisy[:, 1:].any(1).all()  # every noisy block teaches something
            if prob == 0.0:
                assert not noisy[:, 0].any()  # position 0 comes from the AR step at inference
            else:
                first_masked += int(noisy[:, 0].sum())
            padded = reply + [END] * (n_blocks * L - reply_len)
            assert lay.input_ids[2: 2 + n_blocks * L].tolist() == padded
    assert first_masked == 200 * n_blocks  # the knob does mask the first token


def test_complementary_copy_masks_what_the_first_left_visible() -> None:
    L, reply = 4, list(range(200, 211)) + [END]  # 3 blocks
    gen = torch.Generator().manual_seed(5)
    for _ in range(100):
        lay = build_layout([101, 102], reply, MASK, PAD, L, gen, copies=2)
        C, R = 2 + 12, 12
        assert len(lay.input_ids) == C + 2 * R
        assert lay.position_ids[C:C + R].tolist() == lay.position_ids[C + R:].tolist() == list(range(2, 14))
        first, second = (lay.input_ids[C + c * R: C + (c + 1) * R].view(3, L) == MASK for c in (0, 1))
        assert not first[:, 0].any() and not second[:, 0].any()
        # Every reply token after position 0 is masked in at least one copy; in both only where a
        # block of the second copy would otherwise teach nothing (copy 0 masked all of it).
        assert (first | second)[:, 1:].all()
        both = (first & second)[:, 1:]
        assert (both.sum(1) <= (first[:, 1:].all(1)).long()).all()
        # The copies cannot see each other: each noisy block sees the clean context and itself only.
        assert not lay.allowed[C + R:, C:C + R].any() and not lay.allowed[C:C + R, C + R:].any()


def test_digit_masking_hides_every_digit_of_the_chosen_blocks() -> None:
    L, digits = 8, torch.tensor([300, 301])
    reply = [200, 300, 201, 301, 300, 202, 203, 204, 205, 300, 206, 301, 207, 208, 209, END]  # 2 blocks
    is_digit = torch.isin(torch.tensor(reply), digits).view(2, L)
    gen = torch.Generator().manual_seed(3)
    chosen = plain = 0
    for _ in range(200):
        lay = build_layout([101, 102], reply, MASK, PAD, L, gen, copies=2, digit_ids=digits, digit_mask_prob=0.5)
        C = 2 + 2 * L
        first = lay.input_ids[C:C + 2 * L].view(2, L) == MASK
        all_digits = (first | ~is_digit)[:, 1:].all(1)
        chosen += int(all_digits.sum())
        plain += int((~all_digits).sum())
        assert not first[:, 0].any()
    # About half the blocks mask every digit (a uniform draw also does now and then); the rest do not.
    assert 180 < chosen < 300 and plain > 60
    # With the option off the draw is the recipe's, draw for draw, as before the option existed.
    a = build_layout([101, 102], reply, MASK, PAD, L, torch.Generator().manual_seed(9), copies=2)
    b = build_layout([101, 102], reply, MASK, PAD, L, torch.Generator().manual_seed(9), copies=2,
                     digit_ids=digits, digit_mask_prob=0.0)
    assert torch.equal(a.input_ids, b.input_ids)


def test_second_copy_gives_the_logits_it_would_give_alone(tiny_model: LoadedModel) -> None:
    tok, model = tiny_model.tokenizer, tiny_model.model
    prompt, reply = [5, 6, 7, 8], list(range(40, 60)) + [tok.ids.turn_end]
    L = 8
    two = build_layout(prompt, reply, tok.ids.mask, tok.ids.pad, L, torch.Generator().manual_seed(1), copies=2)
    C, R = len(prompt) + 24, 24
    keep = torch.cat([torch.arange(C), torch.arange(C + R, C + 2 * R)])  # drop the first copy
    alone = train.Layout(two.input_ids[keep], two.position_ids[keep], two.allowed[keep][:, keep],
                         two.labels[keep], two.is_noisy_label[keep], two.ordered_left[keep])

    def logits(lay: train.Layout) -> torch.Tensor:
        mask = collate([lay], tok.ids.pad, torch.float64)["attention_mask"]
        with torch.no_grad():
            return model(input_ids=lay.input_ids[None], position_ids=lay.position_ids[None],
                         attention_mask=mask, use_cache=False).logits[0]

    a, b = logits(two), logits(alone)
    torch.testing.assert_close(a[C + R:], b[C:], atol=1e-5, rtol=0)


def test_training_layout_reproduces_the_engines_forwards(tiny_model: LoadedModel) -> None:
    """Each noisy block in the training layout sees exactly what a cached denoising forward of the engine
    sees, and the clean part is a causal forward: same probabilities for every candidate the engine scored."""
    tok, model = tiny_model.tokenizer, tiny_model.model
    prompt = chat.prompt_ids(tok, [], "How many eggs does Claire eat in four weeks?")
    L, n = 8, 3
    # One token per denoising forward (low_confidence): many intermediate states of each block.
    config = engine.DecodeConfig(algorithm="low_confidence", block_length=L, max_new_tokens=n * L, stop_ids=())
    steps, result = engine.run(engine.Decoder(model, tok), prompt, config)
    assert len(result.tokens) == n * L
    P, C = len(prompt), len(prompt) + n * L
    base = build_layout(prompt, result.tokens, tok.ids.mask, tok.ids.pad, L, torch.Generator().manual_seed(0))
    denoise = [s for s in steps if s.kind == "denoise"]
    assert len(denoise) == n * (L - 1)
    layouts = []
    for s in denoise:  # put the block as this forward saw it into noisy block s.block
        ids = base.input_ids.clone()
        seen = [tok.ids.mask if j in s.candidates else t for j, t in enumerate(s.block_tokens)]
        ids[C + s.block * L: C + (s.block + 1) * L] = torch.tensor(seen)
        layouts.append(replace(base, input_ids=ids))
    batch = collate(layouts, tok.ids.pad, torch.float64)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"], use_cache=False).logits
        plain = model(input_ids=base.input_ids[None, :C], use_cache=False).logits[0]
    torch.testing.assert_close(logits[0, :C], plain, atol=1e-9, rtol=0)
    probs = logits.index_fill(-1, torch.tensor([tok.ids.mask]), float("-inf")).softmax(-1)  # never a candidate
    for i, s in enumerate(denoise):
        for j, (token, p) in s.candidates.items():
            q = probs[i, C + s.block * L + j - 1]  # the output at j-1 predicts position j
            assert int(q.argmax()) == token
            assert abs(q[token].item() - p) < 1e-9, (s.block, s.nfe, j)
    # Position 0 of each block: the prefill / commit forward's AR prediction = the clean part's.
    firsts = [s for s in steps if s.kind in ("prefill", "commit")]
    assert [s.block for s in firsts] == list(range(n))
    for s in firsts:
        q = probs[0, P + s.block * L - 1]
        assert int(q.argmax()) == s.block_tokens[0]
        assert abs(q[s.block_tokens[0]].item() - s.committed_confidence[0]) < 1e-9


@pytest.mark.parametrize("bf16", [False, True])
def test_optimiser_steps_lower_the_loss(tiny_model: LoadedModel, bf16: bool) -> None:
    tok = tiny_model.tokenizer
    cfg = small_config()
    torch.manual_seed(0)
    model = train.new_model(cfg, tok)
    batch = train.make_batch(tok, cfg, 0)
    assert batch["labels"].shape == batch["input_ids"].shape and batch["noisy"].any()
    loss, parts = train.loss_fn(model, batch)
    assert loss.item() == pytest.approx(parts["diffusion"] + parts["ar"], rel=1e-5)
    before = loss.item()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        assert train.loss_fn(model, batch)[0].item() == pytest.approx(before, rel=0.02)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(4):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # --bf16-autocast
            loss, _ = train.loss_fn(model, batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        after = train.loss_fn(model, batch)[0].item()
    assert after < before - 0.1, (before, after)
    weighted, parts = train.loss_fn(model, batch, diffusion_weight=3.0)
    assert weighted.item() == pytest.approx(3 * parts["diffusion"] + parts["ar"], rel=1e-5)


class FixedLogits:
    """Stands in for the model in `loss_fn`: returns the same logits whatever the input."""

    dtype = torch.float32

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def __call__(self, **_: object) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits)


def test_digit_targets_weigh_more_when_asked(tiny_model: LoadedModel) -> None:
    tok = tiny_model.tokenizer
    plain = train.make_batch(tok, small_config(), 0)
    batch = train.make_batch(tok, small_config(digit_loss_weight=4.0), 0)
    assert "weight" not in plain  # the default changes nothing, not even the batch
    digits = torch.isin(batch["labels"], torch.tensor(sorted(tok.digit_ids)))
    has = batch["labels"] != IGNORE
    assert (digits & batch["noisy"]).any() and (digits & has & ~batch["noisy"]).any()
    assert torch.equal(batch["weight"], torch.where(digits, 4.0, 1.0))
    # Logits with a wide spread, so that the targets' losses differ a lot and the weighting shows.
    logits = 5 * torch.randn(*batch["labels"].shape, tok.vocab_size, generator=torch.Generator().manual_seed(0))
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE,
                                           reduction="none").view_as(batch["labels"])
    _, parts = train.loss_fn(FixedLogits(logits), batch)
    for part, where in (("diffusion", has & batch["noisy"]), ("ar", has & ~batch["noisy"])):
        w = torch.where(digits, 4.0, 1.0)[where]
        assert parts[part] == pytest.approx(float((ce[where] * w).sum() / w.sum()), rel=1e-4)
        assert parts[part] != pytest.approx(float(ce[where].mean()), rel=1e-3)  # the weight made a difference


@pytest.mark.parametrize("on", [False, True])
def test_training_steps_run_under_autocast_when_asked(tiny_checkpoint: Path, tmp_path: Path, monkeypatch,
                                                      on: bool) -> None:
    seen: list[bool] = []
    loss_fn = train.loss_fn

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return loss_fn(*args, **kwargs)

    monkeypatch.setattr(train, "loss_fn", spy)
    train.train(tmp_path / "run", replace(small_config(), steps=1, bf16_autocast=on), tiny_checkpoint,
                progress=False)
    assert seen == [on]


def test_batches_are_a_function_of_the_step(tiny_model: LoadedModel) -> None:
    tok, cfg = tiny_model.tokenizer, small_config()
    a, b, other = train.make_batch(tok, cfg, 5), train.make_batch(tok, cfg, 5), train.make_batch(tok, cfg, 6)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (a["input_ids"].shape == other["input_ids"].shape and torch.equal(a["input_ids"], other["input_ids"]))


def test_ordered_blocks_start_masked_and_draw_nothing_when_off() -> None:
    reply = list(range(200, 215)) + [END]  # 2 blocks of 8
    gen = torch.Generator().manual_seed(4)
    seen = set()
    for _ in range(50):
        lay = build_layout([101, 102], reply, MASK, PAD, 8, gen, copies=2, ordered_mask_prob=1.0)
        C = 2 + 16
        first = lay.input_ids[C:C + 16].view(2, 8) == MASK
        assert first[:, 1:].all()  # every position but 0 masked, for order_masks to unmask
        left = lay.ordered_left.view(-1)
        assert left[C:C + 16].view(2, 8)[:, 1:].eq(0).all() and left[:C].eq(0).all() and left[C + 16:].eq(0).all()
        starts = left[C:C + 16].view(2, 8)[:, 0]
        assert ((starts >= 1) & (starts <= 7)).all()
        seen.update(starts.tolist())
    assert len(seen) >= 5  # the masks to leave are drawn, not fixed
    # Off, the layout draws only its uniform masks, so runs from before the option replay exactly.
    off, alone = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    lay = build_layout([101, 102], reply, MASK, PAD, 8, off, copies=2)
    train.draw_masks(2, 8, alone, 0.0, 2)
    assert torch.equal(off.get_state(), alone.get_state()) and not lay.ordered_left.any()


@pytest.mark.parametrize(("passes", "mask_on_top"), [(1, False), (2, False), (1, True)])
def test_order_masks_unmasks_most_confident_first(tiny_model: LoadedModel, passes: int, mask_on_top: bool) -> None:
    """Most confident first, as the engine ranks: MASK, never a candidate there, is no confidence here either
    (`mask_on_top` makes it the top logit everywhere)."""
    tok, model = tiny_model.tokenizer, tiny_model.model
    if mask_on_top:
        hook = model.lm_head.register_forward_hook(
            lambda module, args, logits: logits.index_fill(-1, torch.tensor([tok.ids.mask]), 1e4))
        try:
            test_order_masks_unmasks_most_confident_first(tiny_model, passes, mask_on_top=False)
        finally:
            hook.remove()
        return
    cfg = small_config(ordered_mask_prob=0.7, noisy_copies=2, batch_size=3, pack_length=400)
    batch = train.make_batch(tok, cfg, 0)
    before = {k: v.clone() for k, v in batch.items()}
    rows, starts = batch["ordered_left"].nonzero(as_tuple=True)
    assert len(rows) >= 2
    left = batch["ordered_left"][rows, starts]
    cols = starts[:, None] + torch.arange(1, cfg.block_length)
    rows = rows[:, None].expand_as(cols)
    assert (batch["input_ids"][rows, cols] == tok.ids.mask).all()
    clean = batch["labels"][rows, cols - 1]
    assert (clean != IGNORE).all()
    with torch.no_grad():  # the confidences of the first pass, from the full logits
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"].to(model.dtype), use_cache=False).logits
    conf = logits[rows, cols - 1].index_fill(-1, torch.tensor([tok.ids.mask]), float("-inf")).softmax(-1).amax(-1)

    train.order_masks(model, batch, tok.ids.mask, cfg.block_length, passes)

    still = batch["input_ids"][rows, cols] == tok.ids.mask
    assert torch.equal(still.sum(1), left)
    filled = ~still
    assert torch.equal(batch["input_ids"][rows, cols][filled], clean[filled])  # the clean tokens go in
    assert (batch["labels"][rows, cols - 1][filled] == IGNORE).all()  # and are no longer targets
    assert torch.equal(batch["labels"][rows, cols - 1][still], clean[still])
    if passes == 1:  # one pass: exactly the most confident ones
        for c, s in zip(conf, still, strict=True):
            if s.any() and (~s).any():
                assert c[~s].min() >= c[s].max() - 1e-6
    outside = torch.ones_like(batch["input_ids"], dtype=torch.bool)
    outside[rows, cols] = False
    assert torch.equal(batch["input_ids"][outside], before["input_ids"][outside])
    outside_labels = torch.ones_like(outside)
    outside_labels[rows, cols - 1] = False
    assert torch.equal(batch["labels"][outside_labels], before["labels"][outside_labels])


def log_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_train_resumes_and_exports_in_the_official_format(tiny_checkpoint: Path, tmp_path: Path) -> None:
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / f, tok_dir / f)
    cfg = small_config()
    run = train.train(tmp_path / "run", cfg, tok_dir, progress=False)
    assert log_steps(run) == [1, 2]
    # An interrupted run may have logged a step after its last checkpoint (a half-written line too).
    with (run / "train_log.jsonl").open("a") as fh:
        fh.write(json.dumps({"step": 3, "loss": 1.0, "diffusion": 0.5, "ar": 0.5}) + '\n{"step": 4, "lo')
    train.train(run, replace(cfg, steps=3), progress=False)
    assert log_steps(run) == [1, 2, 3]
    assert (run / "loss_curve.png").stat().st_size > 1000
    resumed = torch.load(run / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == 3
    # 2 steps + resume + 1 step == 3 steps straight (the learning rates of steps 0-2 agree, see lr_at).
    straight = torch.load(train.train(tmp_path / "straight", replace(cfg, steps=3), tok_dir, progress=False)
                          / "checkpoint.pt", weights_only=False)
    for k, v in straight["model"].items():
        torch.testing.assert_close(resumed["model"][k], v)

    dest = train.export(run, tmp_path / "export", dtype=torch.float32)
    config = json.loads((dest / "config.json").read_text())
    assert config["model_type"] == "PanguEmbedded" and config["bias"] is True
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1
    names = [n.strip() for n in (OFFICIAL_FORMAT / "weight_names.txt").read_text().splitlines() if n.strip()]
    assert set(load_file(dest / "model.safetensors")) == {n.replace("{N}", "0") for n in names}
    assert (dest / "tokenizer.model").is_file() and (dest / "tokenizer_config.json").is_file()
    # The exported folder is a valid starting point for another stage (--init): the same weights back.
    start = train.initial_weights(dest)
    assert set(start) == set(resumed["model"])
    for k, v in resumed["model"].items():
        torch.testing.assert_close(start[k], v)

    loaded = load_model(dest, dtype="float32", device="cpu", progress=False)
    assert loaded.name == "pangu-demo-tiny"  # not the folder's name
    tok = PanguTokenizer.from_pretrained(run / "tokenizer")
    trained = train.new_model(cfg, tok)
    trained.load_state_dict(resumed["model"])
    ids = torch.tensor([chat.prompt_ids(tok, [], "How many eggs does Claire eat?")])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, trained.eval()(ids).logits, atol=1e-5, rtol=0)


def test_packing_changes_no_loss(tiny_model: LoadedModel) -> None:
    """Chats packed into shared rows see only themselves: the loss equals the unpacked one (float32 CE)."""
    tok, model = tiny_model.tokenizer, tiny_model.model
    cfg = small_config(batch_size=6)
    plain = train.make_batch(tok, cfg, 3)
    packed = train.make_batch(tok, replace(cfg, pack_length=2 * plain["input_ids"].shape[1]), 3)
    assert packed["input_ids"].shape[0] < plain["input_ids"].shape[0]  # rows were actually shared
    assert int((packed["labels"] != IGNORE).sum()) == int((plain["labels"] != IGNORE).sum())
    with torch.no_grad():
        a, parts_a = train.loss_fn(model, plain)
        b, parts_b = train.loss_fn(model, packed)
    assert parts_a["diffusion"] == pytest.approx(parts_b["diffusion"], rel=1e-6)
    assert parts_a["ar"] == pytest.approx(parts_b["ar"], rel=1e-6)


@pytest.mark.parametrize("extra", [1, 3])
def test_grow_depth_keeps_the_function(tiny_model: LoadedModel, extra: int) -> None:
    from transformers import LlamaForCausalLM

    model = tiny_model.model  # shared by the session: read only
    config = copy.deepcopy(model.config)
    config.num_hidden_layers += extra
    deeper = LlamaForCausalLM(config).to(model.dtype).eval()
    weights = train.grow_depth(model.state_dict(), config.num_hidden_layers)
    deeper.load_state_dict(weights)
    ids = torch.tensor([[5, 17, 42, 8, 99, 23, 64, 11]])
    with torch.no_grad():
        torch.testing.assert_close(deeper(ids).logits, model(ids).logits)
    # the new layers are real layers that training can move: copies, not empty ones
    up = [weights[f"model.layers.{i}.mlp.up_proj.weight"] for i in range(config.num_hidden_layers)]
    assert any(torch.equal(a, b) for a, b in zip(up, up[1:], strict=False))
    with pytest.raises(ValueError):
        train.grow_depth(model.state_dict(), len(model.model.layers) - 1)


def test_grow_width_keeps_the_function(tiny_model: LoadedModel) -> None:
    from transformers import LlamaForCausalLM

    model = tiny_model.model  # shared by the session: read only
    config = copy.deepcopy(model.config)
    config.intermediate_size *= 2
    wider = LlamaForCausalLM(config).to(model.dtype).eval()
    weights = train.grow_width(model.state_dict(), config.intermediate_size, seed=3)
    wider.load_state_dict(weights)
    ids = torch.tensor([[5, 17, 42, 8, 99, 23, 64, 11]])
    with torch.no_grad():
        torch.testing.assert_close(wider(ids).logits, model(ids).logits)
    # the new units are live (random gate and up rows), only their way out starts at zero
    old = model.config.intermediate_size
    gate = weights["model.layers.0.mlp.gate_proj.weight"]
    assert gate[old:].abs().sum() > 0
    assert not weights["model.layers.0.mlp.down_proj.weight"][:, old:].any()
    with pytest.raises(ValueError):
        train.grow_width(model.state_dict(), old - 1)


def test_zero_steps_write_the_grown_starting_weights(tiny_checkpoint: Path, tmp_path: Path) -> None:
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / f, tok_dir / f)
    first = train.export(train.train(tmp_path / "run", small_config(steps=1), tok_dir, progress=False),
                         tmp_path / "first", dtype=torch.float32)
    wide = train.train(tmp_path / "wide", small_config(steps=0, intermediate_size=96), tok_dir, progress=False,
                       init=first)
    state = torch.load(wide / "checkpoint.pt", weights_only=False)
    assert state["step"] == 0
    old = train.initial_weights(first)["model.layers.0.mlp.down_proj.weight"]
    down = state["model"]["model.layers.0.mlp.down_proj.weight"]
    assert down.shape == (32, 96)
    torch.testing.assert_close(down[:, :64], old)
    assert not down[:, 64:].any()


def test_average_writes_the_mean_of_two_models(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    first = {k: v for f in weight_files(tiny_checkpoint) for k, v in load_file(f).items()}  # two shards
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other, ignore=shutil.ignore_patterns("*.safetensors*"))
    torch.manual_seed(0)
    shifted = {k: v + torch.randn_like(v) for k, v in first.items()}
    save_file(shifted, str(other / "model.safetensors"))
    dest = tmp_path / "soup"
    train.main(["--average", str(tiny_checkpoint), str(other), "--export", str(dest), "--export-dtype", "float32"])
    mean = load_file(dest / "model.safetensors")
    assert set(mean) == set(first)
    for k, v in first.items():
        torch.testing.assert_close(mean[k], ((v.double() + shifted[k].double()) / 2).float())
    assert json.loads((dest / "config.json").read_text())["torch_dtype"] == "float32"
    load_model(dest, dtype="float32", progress=False)  # a model folder the app opens

    # Models of another shape are refused in a sentence, and nothing is written.
    save_file({k: v[..., :1].contiguous() for k, v in first.items()}, str(other / "model.safetensors"))
    with pytest.raises(SystemExit):
        train.main(["--average", str(tiny_checkpoint), str(other), "--export", str(tmp_path / "bad")])
    assert "only models of one shape average" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

"""Context-causal block-diffusion training of the embedded default model (the openPangu recipe).

Each training sequence is the clean chat (prompt + reply) followed by a noisy copy of the reply's
blocks. Clean tokens attend causally; noisy block k attends to the clean tokens before clean
block k and to all of itself, and reuses clean block k's position ids, which is exactly what a
denoising forward sees at inference. Loss = cross-entropy on the masked tokens of the noisy blocks
(the output at position j-1 predicts token j, as the decoder reads it) + next-token cross-entropy on
the clean part.

    python -m pangu_demo.train --out runs/embedded            # train (resumes if interrupted)
    python -m pangu_demo.train --out runs/embedded --export assets/model --export-dtype float32
    python -m pangu_demo.train --average assets/model runs/other/export --export runs/soup   # a weight average
    python -m pangu_demo.train --out runs/wide --tokenizer assets/model --init assets/model \
        --intermediate-size 1408 --steps 0                   # wider MLPs, same function, not trained: --export it
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import data
from .loading import OFFICIAL_FORMAT, ModelLoadError, llama_config, weight_files
from .sampling import greedy
from .tokenizer import PanguTokenizer

IGNORE = -100


@dataclass
class TrainConfig:
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 704
    context_length: int = 1024
    block_length: int = 32
    vocab_size: int = 4096
    steps: int = 3000
    batch_size: int = 24
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 150
    weight_decay: float = 0.05
    first_token_mask_prob: float = 0.15  # lets the fused commit+denoise forward be trained for
    noisy_copies: int = 1  # 2: a second, complementary noisy copy of each reply
    # Ours: this share of the first copy's noisy blocks masks every digit (and a lighter random share of the rest):
    # the state a block reaches at inference once its confident words are in and its numbers are not.
    digit_mask_prob: float = 0.0
    # Ours: this share of the first copy's noisy blocks starts fully masked and is unmasked in the model's own
    # order (most confident first, clean tokens filled in, over `order_passes` forwards without gradient) down to
    # a drawn number of masks: the states the reference rule reaches at inference, not uniform ones.
    ordered_mask_prob: float = 0.0
    order_passes: int = 2
    diffusion_weight: float = 1.0  # loss = diffusion_weight * masked-token CE + next-token CE
    # Ours: a digit target counts this many times in both losses (each stays a weighted mean). The word
    # problems are judged on their digits, which are a small share of the targets.
    digit_loss_weight: float = 1.0
    max_reply_blocks: int = 8
    mix: str = ""  # task weights changed from data.TRAIN_MIX, e.g. "counting=8,text=4"
    pack_length: int = 0  # > 0: pack several chats into rows of this many tokens (no padding waste)
    seed: int = 0
    checkpoint_every: int = 100
    # Forward and backward in bfloat16 (weights and optimiser stay float32): about 1.4x faster steps on a CPU with
    # bf16 instructions (AVX512-BF16). Not for other CPUs: there bf16 decoding ran 2.7x slower than float32.
    bf16_autocast: bool = False


# -- one example in the training layout ----------------------------------------------------------
@dataclass
class Layout:
    input_ids: torch.Tensor  # (T,) clean prompt + clean reply blocks + noisy reply blocks
    position_ids: torch.Tensor  # (T,)
    allowed: torch.Tensor  # (T, T) bool: query i may attend key j
    labels: torch.Tensor  # (T,) target predicted by the output at each position, IGNORE elsewhere
    is_noisy_label: torch.Tensor  # (T,) bool: the label is a masked-token target
    # (T,) long: at the first position of a block `order_masks` unmasks, the masks to leave; 0 elsewhere
    ordered_left: torch.Tensor


def draw_masks(n_blocks: int, L: int, generator: torch.Generator, first_token_mask_prob: float,
               copies: int, digits: torch.Tensor | None = None, digit_mask_prob: float = 0.0) -> list[torch.Tensor]:
    """Which tokens each noisy copy masks, (n_blocks, L) bool per copy. Copy 0 draws a mask ratio per
    block; copy 1 masks exactly what copy 0 left visible (complementary masking), so every reply
    token is a masked-token target once per pair of copies; further copies repeat the pattern.
    With `digits` ((n_blocks, L) bool) and `digit_mask_prob`, that share of copy-0 blocks masks every
    digit and each other token with half the drawn ratio."""
    out = []
    for c in range(copies):
        if c % 2 == 0:
            ratio = torch.rand(n_blocks, 1, generator=generator).clamp(min=1.0 / L)
            masked = torch.rand(n_blocks, L, generator=generator) < ratio
            if digits is not None and digit_mask_prob > 0:  # no extra draws otherwise: old runs replay exactly
                lighter = torch.rand(n_blocks, L, generator=generator) < ratio / 2
                chosen = torch.rand(n_blocks, 1, generator=generator) < digit_mask_prob
                masked = torch.where(chosen, digits | lighter, masked)
        else:
            masked = ~out[-1]
        # Position 0 of a block stays clean (it comes from the AR step), except with this probability.
        masked[:, 0] = torch.rand(n_blocks, generator=generator) < first_token_mask_prob
        rows = (~masked[:, 1:].any(1)).nonzero().flatten()  # every noisy block must teach something
        masked[rows, 1 + torch.randint(L - 1, (len(rows),), generator=generator)] = True
        out.append(masked)
    return out


def build_layout(prompt: list[int], reply: list[int], mask_id: int, pad_id: int, block_length: int,
                 generator: torch.Generator, first_token_mask_prob: float = 0.0, copies: int = 1,
                 digit_ids: torch.Tensor | None = None, digit_mask_prob: float = 0.0,
                 ordered_mask_prob: float = 0.0) -> Layout:
    """Lay out one chat for training: the clean chat, then `copies` noisy copies of the reply's blocks.
    `reply` ends with the end-of-turn token; `digit_ids` are the tokens `digit_mask_prob` masks together;
    `ordered_mask_prob` is the share of first-copy blocks left for `order_masks`."""
    L, P = block_length, len(prompt)
    n_blocks = max(1, math.ceil(len(reply) / L))
    # Pad the last block with the end-of-turn token, which is what follows a finished reply.
    reply_padded = reply + [reply[-1]] * (n_blocks * L - len(reply))
    clean = torch.tensor(prompt + reply_padded)
    C, R = len(clean), n_blocks * L
    clean_blocks = clean[P:].view(n_blocks, L)
    digits = torch.isin(clean_blocks, digit_ids) if digit_ids is not None else None
    masks = draw_masks(n_blocks, L, generator, first_token_mask_prob, copies, digits, digit_mask_prob)
    ordered_left = torch.zeros(C + copies * R, dtype=torch.long)
    if ordered_mask_prob > 0:  # no extra draws otherwise: old runs replay exactly
        chosen = torch.rand(n_blocks, generator=generator) < ordered_mask_prob
        left = torch.randint(1, L, (n_blocks,), generator=generator)
        masks[0][chosen, 1:] = True  # copy 1 keeps the complement of the drawn mask: still a uniform one
        ordered_left[C:C + R].view(n_blocks, L)[:, 0] = torch.where(chosen, left, 0)

    input_ids = torch.cat([clean] + [torch.where(m, mask_id, clean_blocks).flatten() for m in masks])
    T = len(input_ids)
    position_ids = torch.cat([torch.arange(C)] + [P + torch.arange(R)] * copies)

    allowed = torch.zeros(T, T, dtype=torch.bool)
    allowed[:C, :C] = torch.ones(C, C, dtype=torch.bool).tril()
    for c in range(copies):
        for k in range(n_blocks):
            q = slice(C + c * R + k * L, C + c * R + (k + 1) * L)
            allowed[q, : P + k * L] = True  # the clean context before clean block k
            allowed[q, q] = True  # full attention inside the noisy block

    labels = torch.full((T,), IGNORE)
    # Clean part: next-token prediction up to the end of the reply (not the padding after it).
    end = P + len(reply)
    labels[: end - 1] = clean[1:end]
    # Noisy blocks: the output at block position j-1 predicts masked token j.
    for c, masked in enumerate(masks):
        shifted = torch.full((n_blocks, L), IGNORE)
        shifted[:, :-1] = torch.where(masked, clean_blocks, IGNORE)[:, 1:]
        labels[C + c * R: C + (c + 1) * R] = shifted.flatten()
    is_noisy = torch.zeros(T, dtype=torch.bool)
    is_noisy[C:] = True
    return Layout(input_ids, position_ids, allowed, labels, is_noisy & (labels != IGNORE), ordered_left)


def pack(layouts: list[Layout], row_length: int) -> list[Layout]:
    """First-fit packing (longest first) into rows of at most `row_length` tokens. Chats sharing a row
    cannot see each other (block-diagonal attention) and keep their own position ids, so the loss is
    the same as unpacked; only the padding compute is saved."""
    rows: list[list[Layout]] = []
    sizes: list[int] = []
    for lay in sorted(layouts, key=lambda lay: -len(lay.input_ids)):
        n = len(lay.input_ids)
        for i, size in enumerate(sizes):
            if size + n <= row_length:
                rows[i].append(lay)
                sizes[i] += n
                break
        else:
            rows.append([lay])
            sizes.append(n)
    return [Layout(torch.cat([lay.input_ids for lay in row]), torch.cat([lay.position_ids for lay in row]),
                   torch.block_diag(*[lay.allowed for lay in row]), torch.cat([lay.labels for lay in row]),
                   torch.cat([lay.is_noisy_label for lay in row]), torch.cat([lay.ordered_left for lay in row]))
            for row in rows]


def collate(layouts: list[Layout], pad_id: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Right-pad to the longest; padding rows attend only to themselves and carry no loss."""
    B, T = len(layouts), max(len(lay.input_ids) for lay in layouts)
    ids = torch.full((B, T), pad_id)
    pos = torch.zeros(B, T, dtype=torch.long)
    allowed = torch.eye(T, dtype=torch.bool).repeat(B, 1, 1)
    labels = torch.full((B, T), IGNORE)
    noisy = torch.zeros(B, T, dtype=torch.bool)
    ordered_left = torch.zeros(B, T, dtype=torch.long)
    for b, lay in enumerate(layouts):
        n = len(lay.input_ids)
        ids[b, :n], pos[b, :n] = lay.input_ids, lay.position_ids
        labels[b, :n], noisy[b, :n] = lay.labels, lay.is_noisy_label
        allowed[b, :n, :n] = lay.allowed
        ordered_left[b, :n] = lay.ordered_left
    mask = torch.zeros(B, 1, T, T, dtype=dtype).masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask, "labels": labels, "noisy": noisy,
            "ordered_left": ordered_left}


@torch.no_grad()
def order_masks(model: torch.nn.Module, batch: dict[str, torch.Tensor], mask_id: int, block_length: int,
                passes: int = 2) -> None:
    """Unmask the blocks `batch["ordered_left"]` marks in the model's own order, in place (ours): each of
    `passes` forwards fills an equal share of a block's masks, most confident first, with their clean
    tokens (which stop being targets), until the drawn number of masks is left. The reference rule also
    commits most confident first, so the model trains on the states it meets when decoding: the easy
    tokens of a block in place, the hard ones (often digits) still masked."""
    rows, starts = batch["ordered_left"].nonzero(as_tuple=True)
    if len(rows) == 0:
        return
    left = batch["ordered_left"][rows, starts]
    cols = starts[:, None] + torch.arange(1, block_length)  # positions 1 … L-1 of each such block
    rows = rows[:, None].expand_as(cols)
    ids, labels = batch["input_ids"], batch["labels"]
    clean = labels[rows, cols - 1].clone()  # all masked at first, so the output before each holds its token
    mask = batch["attention_mask"].to(model.dtype)
    was_training = model.training
    model.eval()
    try:
        for k in range(passes):
            masked = ids[rows, cols] == mask_id
            # An equal share of what is still to fill, rounded up: ceil(a / b) = floor((a + b - 1) / b).
            quota = (masked.sum(1) - left + passes - k - 1).div(passes - k, rounding_mode="floor").clamp(min=0)
            if not quota.any():
                break
            hidden = model.model(input_ids=ids, position_ids=batch["position_ids"], attention_mask=mask,
                                 use_cache=False).last_hidden_state
            # The output at position j-1 predicts position j; the LM head runs on those outputs only.
            conf = greedy(model.lm_head(hidden[rows, cols - 1]), suppress=(mask_id,)).token_probs  # as decoded
            rank = conf.masked_fill(~masked, -1.0).argsort(1, descending=True).argsort(1)
            fill = masked & (rank < quota[:, None])
            ids[rows[fill], cols[fill]] = clean[fill]
            labels[rows[fill], cols[fill] - 1] = IGNORE
    finally:
        model.train(was_training)


def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor],
            diffusion_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked-token CE on the noisy blocks (times `diffusion_weight`) + next-token CE on the clean part
    (each a mean, weighted by the batch's "weight" where it has one)."""
    mask = batch["attention_mask"].to(model.dtype)  # attention adds it to scores of the model's dtype
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=mask, use_cache=False).logits
    ce = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE,
                         reduction="none").view_as(batch["labels"])
    has = batch["labels"] != IGNORE
    noisy, clean = has & batch["noisy"], has & ~batch["noisy"]
    weight = batch.get("weight", torch.ones_like(ce))
    diff = _weighted_mean(ce, weight, noisy)
    ar = _weighted_mean(ce, weight, clean)
    return diffusion_weight * diff + ar, {"diffusion": diff.item(), "ar": ar.item()}


def _weighted_mean(ce: torch.Tensor, weight: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    if not where.any():
        return ce.sum() * 0
    return (ce[where] * weight[where]).sum() / weight[where].sum()


# -- data -------------------------------------------------------------------------------------------
def encode_chat(tok: PanguTokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids) for a chat whose last message is the assistant reply to learn."""
    prompt = tok.encode(tok.apply_chat_template(messages[:-1], add_generation_prompt=True))
    full = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=False))
    if full[: len(prompt)] != prompt:
        raise ValueError("the prompt does not tokenize as a prefix of the chat")
    return prompt, full[len(prompt):]


def make_batch(tok: PanguTokenizer, cfg: TrainConfig, step: int) -> dict[str, torch.Tensor]:
    """Batch `step` of the run: the same examples and noise every time (resumable, seeded)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    layouts = []
    mix = data.parse_mix(cfg.mix)
    # Built once per batch, not per chat.
    digits = torch.tensor(sorted(tok.digit_ids))
    digit_ids = digits if cfg.digit_mask_prob > 0 else None
    for i in range(cfg.batch_size):
        ex = data.make_example("train", step * cfg.batch_size + i, seed=cfg.seed, mix=mix)
        prompt, reply = encode_chat(tok, ex["messages"])
        reply = reply[: cfg.max_reply_blocks * cfg.block_length]
        prompt = prompt[-(cfg.context_length - cfg.max_reply_blocks * cfg.block_length):]
        layouts.append(build_layout(prompt, reply, tok.ids.mask, tok.ids.pad, cfg.block_length, gen,
                                    cfg.first_token_mask_prob, cfg.noisy_copies, digit_ids, cfg.digit_mask_prob,
                                    cfg.ordered_mask_prob))
    if cfg.pack_length:
        layouts = pack(layouts, cfg.pack_length)
    batch = collate(layouts, tok.ids.pad)
    if cfg.digit_loss_weight != 1.0:
        batch["weight"] = torch.where(torch.isin(batch["labels"], digits), cfg.digit_loss_weight, 1.0)
    return batch


# -- model and checkpoints ---------------------------------------------------------------------------
def pangu_config(cfg: TrainConfig, tok: PanguTokenizer) -> dict:
    """config.json in the official key layout, with our sizes."""
    official = json.loads((OFFICIAL_FORMAT / "config.json").read_text())
    official.update(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, vocab_size=tok.vocab_size,
        max_position_embeddings=cfg.context_length, rope_theta=10000.0, torch_dtype="float32",
        bos_token_id=tok.ids.bos, eos_token_id=tok.ids.eos, pad_token_id=tok.ids.pad)
    official.pop("auto_map", None)
    return official


def new_model(cfg: TrainConfig, tok: PanguTokenizer) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(llama_config(pangu_config(cfg, tok)))
    return model.float().train()


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(out: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, step: int,
                    cfg: TrainConfig) -> None:
    tmp = out / "checkpoint.pt.tmp"
    torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "step": step, "config": asdict(cfg)}, tmp)
    tmp.replace(out / "checkpoint.pt")  # atomic: an interrupted save never corrupts the last checkpoint


def initial_weights(init: Path) -> dict[str, torch.Tensor]:
    """Weights to start from: a run's checkpoint.pt, or a model folder in the official format (read by the
    app's own loader)."""
    if init.is_dir():
        from .loading import load_model

        return load_model(init, dtype="float32", progress=False).model.state_dict()
    return torch.load(init, weights_only=False)["model"]


def grow_depth(weights: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Deepen a trained model to `n_layers` without changing its function (block expansion, as in LLaMA Pro):
    new layers are spread evenly among the old ones, each a copy of the layer before it with its attention
    output and MLP down projections zeroed, so it adds nothing to the residual stream until training moves it."""
    old = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("model.layers."))
    if n_layers == old:
        return weights
    if n_layers < old:
        raise ValueError(f"cannot grow {old} layers to {n_layers}")
    # new layer i takes old layer i * old // n_layers; where that repeats the one before, the layer is a copy
    sources = [min(old - 1, i * old // n_layers) for i in range(n_layers)]
    grown = {k: v for k, v in weights.items() if not k.startswith("model.layers.")}
    for new_index, src in enumerate(sources):
        is_copy = new_index > 0 and sources[new_index - 1] == src
        prefix = f"model.layers.{src}."
        for key, value in weights.items():
            if not key.startswith(prefix):
                continue
            name = key.removeprefix(prefix)
            value = value.clone()
            if is_copy and name.split(".")[1] in ("o_proj", "down_proj"):
                value.zero_()
            grown[f"model.layers.{new_index}.{name}"] = value
    return grown


def grow_width(weights: dict[str, torch.Tensor], intermediate_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Widen every MLP of a trained model to `intermediate_size` units without changing its function: the new
    units get random gate and up rows (at the scale of the old ones) and zero down columns, so they add nothing
    to the residual stream until training moves the down projection."""
    old = next(v.shape[0] for k, v in weights.items() if k.endswith("mlp.gate_proj.weight"))
    if intermediate_size == old:
        return weights
    if intermediate_size < old:
        raise ValueError(f"cannot narrow an MLP of {old} units to {intermediate_size}")
    extra = intermediate_size - old
    gen = torch.Generator().manual_seed(seed)
    grown = dict(weights)
    for key, value in weights.items():
        if key.endswith(("mlp.gate_proj.weight", "mlp.up_proj.weight")):
            rows = torch.randn(extra, value.shape[1], generator=gen) * value.float().std()
            grown[key] = torch.cat([value, rows.to(value.dtype)])
        elif key.endswith("mlp.down_proj.weight"):
            grown[key] = F.pad(value, (0, extra))  # zero columns: the new units' way out
    return grown


def train(out: Path, cfg: TrainConfig, tokenizer_dir: Path | None = None, progress: bool = True,
          init: Path | None = None) -> Path:
    """Train (or resume) into `out`; returns the folder. Writes train_log.jsonl and loss_curve.png.
    `init`: start from the weights of another run's checkpoint.pt or exported folder (same sizes and
    tokenizer, or fewer layers or MLP units: see `grow_depth` and `grow_width`) instead of random ones; the
    optimiser and the schedule start afresh."""
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(out, cfg, tokenizer_dir)
    model, optim, start = _model_and_optimiser(out, cfg, tok, init)
    record = {**asdict(cfg), **({"init": str(init)} if init is not None and start == 0 else {})}
    (out / "train_config.json").write_text(json.dumps(record, indent=2))
    n_params = sum(p.numel() for p in model.parameters())
    _truncate_log(out / "train_log.jsonl", start)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress,
               desc=f"training {n_params / 1e6:.1f}M")
    t_last, tokens = time.perf_counter(), 0
    with (out / "train_log.jsonl").open("a") as log:
        for step in bar:
            batch = make_batch(tok, cfg, step)
            order_masks(model, batch, tok.ids.mask, cfg.block_length, cfg.order_passes)  # no-op when the option is off
            for group in optim.param_groups:
                group["lr"] = lr_at(step, cfg)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
                loss, parts = loss_fn(model, batch, cfg.diffusion_weight)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            tokens += int((batch["input_ids"] != tok.ids.pad).sum())
            now = time.perf_counter()
            rec = {"step": step + 1, "loss": loss.item(), **parts, "lr": lr_at(step, cfg),
                   "tokens_per_s": tokens / (now - t_last), "time": time.time()}
            t_last, tokens = now, 0
            log.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.3f}", diff=f"{parts['diffusion']:.3f}", ar=f"{parts['ar']:.3f}",
                            tok_s=f"{rec['tokens_per_s']:.0f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                log.flush()
                save_checkpoint(out, model, optim, step + 1, cfg)
    if not (out / "checkpoint.pt").is_file():  # --steps 0: the starting weights (grown, say), for --export
        save_checkpoint(out, model, optim, start, cfg)
    plot_loss(out / "train_log.jsonl", out / "loss_curve.png")
    return out


def _tokenizer(out: Path, cfg: TrainConfig, tokenizer_dir: Path | None) -> PanguTokenizer:
    """The run's tokenizer, in out/tokenizer: copied from `tokenizer_dir`, or trained there on first start."""
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.model").is_file():
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tok_dir, dirs_exist_ok=True)
        else:
            from .tokenizer_train import train_tokenizer

            train_tokenizer(tok_dir, vocab_size=cfg.vocab_size, seed=cfg.seed)
    return PanguTokenizer.from_pretrained(tok_dir)


def _model_and_optimiser(out: Path, cfg: TrainConfig, tok: PanguTokenizer,
                         init: Path | None) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    """The model and AdamW (no weight decay on biases and norms) and the step to go on from: the run's own
    checkpoint if it has one (resume), else `init`'s weights or random ones at step 0."""
    model = new_model(cfg, tok)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    if (out / "checkpoint.pt").is_file():
        state = torch.load(out / "checkpoint.pt", weights_only=False)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        return model, optim, state["step"]
    if init is not None:
        weights = grow_depth(initial_weights(init), cfg.num_hidden_layers)
        model.load_state_dict(grow_width(weights, cfg.intermediate_size, cfg.seed))
    return model, optim, 0


def _truncate_log(log_file: Path, step: int) -> None:
    """Keep the records up to the checkpoint we resume from: an interrupted run may have logged later
    steps (rerun now) or half a line."""
    if not log_file.is_file():
        return
    kept = []
    for line in log_file.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    log_file.write_text("".join(kept))


def plot_loss(log_file: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    if not recs:
        return
    steps = [r["step"] for r in recs]

    def smooth(xs: list[float], k: int = 25) -> list[float]:
        return [sum(xs[max(0, i - k + 1): i + 1]) / len(xs[max(0, i - k + 1): i + 1]) for i in range(len(xs))]

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, smooth([r["diffusion"] for r in recs]), label="masked-token CE (noisy blocks)")
    ax.plot(steps, smooth([r["ar"] for r in recs]), label="next-token CE (clean part)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats, moving average)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Training loss of the embedded block-diffusion model")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


# -- export in the official checkpoint format --------------------------------------------------------
def export(run_dir: Path, dest: Path, dtype: torch.dtype = torch.bfloat16, name: str = "pangu-demo-tiny") -> Path:
    """Write the trained model as an official-format checkpoint (config.json, safetensors, tokenizer);
    `name` is the model's name in the app, the benchmark and the evaluation."""
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    cfg = TrainConfig(**state["config"])
    tok = PanguTokenizer.from_pretrained(run_dir / "tokenizer")
    config = pangu_config(cfg, tok)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    config["_name_or_path"] = name
    dest.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(dtype).contiguous() for k, v in state["model"].items()}
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for n in range(cfg.num_hidden_layers):  # present in the official files, ignored by the loader
        weights[f"model.layers.{n}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = json.loads((OFFICIAL_FORMAT / "generation_config.json").read_text())
    generation.update(bos_token_id=tok.ids.bos, pad_token_id=tok.ids.pad, eos_token_id=tok.ids.turn_end,
                      do_sample=False, temperature=0.0, top_p=1.0)
    (dest / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(run_dir / "tokenizer" / f, dest / f)
    return dest


def average(sources: list[Path], dest: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write the element-wise mean of exported models of one shape (a "model soup": runs continued from the same
    weights, averaged) as a model folder with the first one's config and tokenizer."""
    if len(sources) < 2:
        raise ValueError("--average needs at least two model folders")
    weights = [{k: v for f in weight_files(folder) for k, v in load_file(f).items()} for folder in sources]
    for folder, w in zip(sources[1:], weights[1:], strict=True):
        shapes = {k: v.shape for k, v in w.items()}
        if shapes != {k: v.shape for k, v in weights[0].items()}:
            raise ValueError(f"{folder} does not have the tensors of {sources[0]}: only models of one shape average")
    mean = {k: (sum(w[k].double() for w in weights) / len(weights)).to(dtype).contiguous() for k in weights[0]}
    dest.mkdir(parents=True, exist_ok=True)
    save_file(mean, str(dest / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((sources[0] / "config.json").read_text())
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in ("generation_config.json", "tokenizer.model", "tokenizer_config.json"):
        shutil.copy(sources[0] / f, dest / f)
    return dest


def check_export(dest: Path) -> None:
    """The exported folder loads through the ordinary loader and matches the trained weights."""
    from .loading import load_model

    loaded = load_model(dest, dtype="float32", progress=False)
    print(loaded.describe())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/embedded"), help="run folder (checkpoints, logs)")
    p.add_argument("--tokenizer", type=Path, help="use this trained tokenizer folder instead of training one")
    p.add_argument("--export", type=Path, help="export the run's checkpoint to this folder and exit")
    p.add_argument("--export-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--export-name", default="pangu-demo-tiny", help="the exported model's name")
    p.add_argument("--init", type=Path,
                   help="start from the weights of this checkpoint.pt or exported model folder (fresh optimiser)")
    p.add_argument("--average", type=Path, nargs="+", metavar="FOLDER",
                   help="with --export: write the mean of these exported models' weights instead")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    for name, value in asdict(TrainConfig()).items():
        if isinstance(value, bool):
            p.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=value)
        else:
            p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.average and not args.export:
        p.error("--average writes to the folder given by --export")
    if args.export:
        if args.average:
            try:
                average(args.average, args.export, getattr(torch, args.export_dtype))
            except (ValueError, OSError, ModelLoadError) as e:
                p.error(str(e))
        else:
            export(args.out, args.export, getattr(torch, args.export_dtype), args.export_name)
        check_export(args.export)
        return
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
    train(args.out, cfg, args.tokenizer, init=args.init)


if __name__ == "__main__":
    main()

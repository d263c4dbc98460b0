"""Loading the official checkpoint format, and the errors a user sees when something is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from safetensors.torch import load_file
from tiny_checkpoint import write_tokenizer_config

from pangu_demo import loading
from pangu_demo.loading import (
    LoadedModel,
    ModelLoadError,
    cpu_has_native_bf16,
    load_model,
    npu_available,
    pick_device,
    pick_dtype,
)


@pytest.fixture
def copy_of(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint to break."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


def file_tensors(folder: Path) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(load_file(folder / shard))
    return state


def test_loads_official_format(tiny_checkpoint: Path, tiny_model: LoadedModel) -> None:
    index = json.loads((tiny_checkpoint / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2  # two shards, as the official checkpoint
    state = file_tensors(tiny_checkpoint)
    assert any(k.endswith("rotary_emb.inv_freq") for k in state)  # present in the files, ignored by the loader
    model = tiny_model.model
    assert model.config.attention_bias is True  # config.json says "bias": true
    loaded = model.state_dict()
    assert not any("inv_freq" in k for k in loaded)
    weights = {k: v for k, v in state.items() if not k.endswith("inv_freq")}
    assert set(weights) == set(loaded)
    for name, tensor in weights.items():  # every tensor of both shards, biases included
        assert torch.equal(loaded[name], tensor.to(torch.float64)), name
    q_bias = model.model.layers[0].self_attn.q_proj.bias
    assert torch.equal(q_bias, state["model.layers.0.self_attn.q_proj.bias"].double())
    assert model.model.layers[1].self_attn.o_proj.bias is not None
    assert tiny_model.dtype == torch.float64 and tiny_model.device.type == "cpu"
    assert tiny_model.context_length == 512


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 {extra} avx512f
bogomips\t: 4800.00
"""


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert cpu_has_native_bf16(CPUINFO.format(extra="avx512_bf16"))
    assert not cpu_has_native_bf16(CPUINFO.format(extra="avx512_vnni"))
    assert not cpu_has_native_bf16(CPUINFO.format(extra="xavx512_bf16"))  # whole flags only
    assert not cpu_has_native_bf16("Processor\t: ARMv8\nFeatures\t: fp asimd\n")  # no x86 flags line


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bf16_where_the_cpu_computes_it_natively(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert pick_dtype(cpu) == pick_dtype(cpu, "auto") == (torch.bfloat16 if native else torch.float32)
    assert pick_dtype(torch.device("meta")) == torch.bfloat16  # accelerators: always bf16
    assert pick_dtype(cpu, "float32") == torch.float32 and pick_dtype(cpu, "bf16") == torch.bfloat16  # asked for


def test_explicit_dtype_is_honoured(tiny_checkpoint: Path) -> None:
    assert {t.dtype for k, t in file_tensors(tiny_checkpoint).items() if "inv_freq" not in k} == {torch.bfloat16}
    lm = load_model(tiny_checkpoint, dtype="float32", progress=False)
    assert lm.dtype == torch.float32
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="float32"):
        load_model(tiny_checkpoint, dtype="float8", progress=False)


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="has an accelerator")
def test_pick_device_is_cpu_here() -> None:
    assert pick_device() == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")


def load_error(source: str | Path) -> str:
    with pytest.raises(ModelLoadError) as err:
        load_model(source, progress=False)
    return str(err.value)


def test_missing_folder(tmp_path: Path) -> None:
    msg = load_error(tmp_path / "no-such-model")
    assert "does not exist" in msg and "no-such-model" in msg
    assert "huggingface.co" in msg  # and says where to get the real model


def test_folder_without_weights(copy_of: Path) -> None:
    for f in [copy_of / "model.safetensors.index.json", *copy_of.glob("*.safetensors")]:
        f.unlink()
    assert "no *.safetensors weights" in load_error(copy_of)


def test_missing_shard(copy_of: Path) -> None:
    (copy_of / "model-00002-of-00002.safetensors").unlink()
    assert "model-00002-of-00002.safetensors" in load_error(copy_of)


def test_config_of_another_architecture(copy_of: Path) -> None:
    config = json.loads((copy_of / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (copy_of / "config.json").write_text(json.dumps(config))
    msg = load_error(copy_of)
    assert "'llama'" in msg and "PanguEmbedded" in msg


def test_broken_config(copy_of: Path) -> None:
    (copy_of / "config.json").write_text('{"model_type": "PanguEmbedded",')
    assert "not valid JSON" in load_error(copy_of)


def test_config_that_is_not_an_object(copy_of: Path) -> None:
    (copy_of / "config.json").write_text("[1, 2]")
    assert "JSON object" in load_error(copy_of)


def test_config_without_a_size(copy_of: Path, tiny_checkpoint: Path) -> None:
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    del config["hidden_size"]
    (copy_of / "config.json").write_text(json.dumps(config))
    assert "lacks hidden_size" in load_error(copy_of)


@pytest.mark.parametrize("content", ["not json", "{}"])
def test_damaged_shard_index(copy_of: Path, content: str) -> None:
    (copy_of / "model.safetensors.index.json").write_text(content)
    msg = load_error(copy_of)
    assert "model.safetensors.index.json is damaged" in msg


@pytest.mark.parametrize("keep_bytes", [5, 2000])
def test_truncated_weights(copy_of: Path, keep_bytes: int) -> None:
    shard = copy_of / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:keep_bytes])  # an interrupted download
    msg = load_error(copy_of)
    assert "model-00001-of-00002.safetensors is damaged or incomplete" in msg


@pytest.mark.parametrize(("device", "says"), [("foo", "Unknown device"), ("npu", "torch-npu"),
                                              ("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU")])
def test_unavailable_device(device: str, says: str) -> None:
    if (device.startswith("cuda") and torch.cuda.is_available()) or (device == "npu" and npu_available()):
        pytest.skip(f"{device} is available here")
    with pytest.raises(ModelLoadError, match=says):
        pick_device(device)


def test_folder_without_config(copy_of: Path) -> None:
    (copy_of / "config.json").unlink()
    assert "no config.json" in load_error(copy_of)


def test_tokenizer_without_mask_token(copy_of: Path) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(copy_of / "tokenizer.model"))
    write_tokenizer_config(copy_of, sp, drop=("[unused0]",))
    msg = load_error(copy_of)
    assert "[unused0]" in msg and "mask" in msg


def test_uncached_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = load_error("nobody-here/not-a-cached-model")
    assert "nobody-here/not-a-cached-model" in msg and "HF_HUB_OFFLINE" in msg
    assert "hf download" in msg  # how to get the model

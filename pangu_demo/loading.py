"""One loader for the official openPangu diffusion checkpoints and the embedded default model.

The official network is a Llama decoder with a bias on q/k/v/o, so transformers' own Llama classes
hold its weights as they are; the checkpoint's remote code (written for transformers 4.53) is only
used when the caller opts in.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from .tokenizer import PanguTokenizer, TokenizerError

EMBEDDED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "model"
OFFICIAL_FORMAT = Path(__file__).resolve().parent / "official_format"  # the published config/tokenizer files
OFFICIAL_HUB_ID = "openpangu/openPangu-R-7B-Diffusion"
GET_OFFICIAL = (
    f"Get openPangu-R-7B-Diffusion from https://huggingface.co/{OFFICIAL_HUB_ID} or "
    "https://ai.gitcode.com/ascend-tribe/openPangu-R-7B-Diffusion (about 16 GB), e.g. "
    f"`hf download {OFFICIAL_HUB_ID} --local-dir ~/models/openPangu-R-7B-Diffusion`, "
    "then pass that folder as the model."
)
PANGU_MODEL_TYPES = {"PanguEmbedded", "pangu_embedded"}
REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_IGNORED_WEIGHTS = ("rotary_emb.inv_freq",)


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PanguTokenizer
    name: str
    path: Path
    device: torch.device
    dtype: torch.dtype
    config: dict = field(repr=False)
    load_seconds: float = 0.0

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def context_length(self) -> int:
        return int(self.config.get("max_position_embeddings", 2048))

    def facts(self) -> list[str]:
        """Size, device, dtype and context, in words."""
        return [f"{self.n_params / 1e6:.1f}M parameters", self.device.type, str(self.dtype).removeprefix("torch."),
                f"context {self.context_length:,} tokens"]

    def describe(self) -> str:
        return f"{self.name}: {', '.join(self.facts())}"


# -- device and dtype ---------------------------------------------------------------------------
def npu_available() -> bool:
    try:
        import torch_npu  # noqa: F401  (registers the "npu" device)
    except Exception:  # torch_npu raises more than ImportError off Ascend machines
        return False
    return bool(getattr(torch, "npu", None) and torch.npu.is_available())


def pick_device(requested: str | None = None) -> torch.device:
    """Ascend NPU, then CUDA, then Apple MPS, then CPU, unless the caller names one."""
    if requested and requested != "auto":
        kind = requested.split(":")[0]
        if kind == "npu" and not npu_available():  # importing torch_npu is what makes "npu" a device
            raise ModelLoadError("--device npu needs an Ascend NPU and torch-npu "
                                 "(pip install -r requirements-npu.txt).")
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise ModelLoadError(f"Unknown device {requested!r}; use auto, cpu, cuda, mps or npu "
                                 "(with an index if needed, e.g. cuda:1).") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("--device cuda: this torch build sees no CUDA GPU; use --device cpu or auto.")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise ModelLoadError("--device mps: Apple's MPS is not available here; use --device cpu or auto.")
        return device
    if npu_available():
        return torch.device("npu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float64": torch.float64}


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 instructions (x86 AVX512-BF16), from the flags in /proc/cpuinfo (or `cpuinfo`).
    False where that file does not exist (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return "avx512_bf16" in value.split()
    return False


def pick_dtype(device: torch.device, requested: str | torch.dtype | None = None) -> torch.dtype:
    """bf16 on accelerators and on CPUs with bf16 instructions, float32 on other CPUs.

    The embedded model, 1 thread: on a 2-core AVX2 CPU float32 decoded 2.7x faster than bf16 (every bf16 operand
    is converted). On a 2-core CPU with AVX512-BF16, bf16 made a 32-token forward cheaper relative to a one-token
    one (1.5x against 2.0x in float32): in the benchmark block diffusion ran 14-17% faster and AR 5-12% slower, and
    on the held-out set the two dtypes were within one question on each word-problem task (stages 9 and 10)."""
    if isinstance(requested, torch.dtype):
        return requested
    if requested and requested != "auto":
        if requested not in DTYPES:
            raise ValueError(f"Unknown dtype {requested!r}; choose one of {', '.join(DTYPES)} or auto.")
        return DTYPES[requested]
    if device.type == "cpu" and not cpu_has_native_bf16():
        return torch.float32
    return torch.bfloat16


# -- locating files -----------------------------------------------------------------------------
def resolve_source(source: str | Path | None) -> Path:
    """A local folder, a hub id (from the local hub cache, or downloaded when allowed) or the default."""
    if source is None or str(source) in ("", "embedded", "default"):
        return EMBEDDED_MODEL
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; pass the checkpoint folder that holds config.json.")
        return path
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise ModelLoadError(f"Model folder {text} does not exist. {GET_OFFICIAL}")
    return _from_hub(text)


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise ModelLoadError("huggingface_hub is needed to load a hub id.") from e
    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.py"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""  # as the hub reads it
    if offline.upper() in constants.ENV_VARS_TRUE_VALUES:
        raise ModelLoadError(f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
                             f"{GET_OFFICIAL}")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]  # hub errors run to many lines
        raise ModelLoadError(f"{repo_id} is not a local folder, and downloading it from the Hugging Face Hub "
                             f"failed (no network, or no such model?): {reason} {GET_OFFICIAL}") from e


def read_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{folder} has no config.json; it is not a model checkpoint folder.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{config_file} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_file} should hold a JSON object of settings, not a {type(config).__name__}.")
    if config.get("model_type") not in PANGU_MODEL_TYPES:
        raise ModelLoadError(
            f"{folder} holds a {config.get('model_type', 'unknown')!r} model; this demo runs openPangu "
            f"diffusion checkpoints (model_type PanguEmbedded). {GET_OFFICIAL}")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ModelLoadError(f"{config_file} lacks {', '.join(missing)}, which the network cannot be built without.")
    return config


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{index} is damaged: it should be JSON with a weight_map of tensor names to "
                                 f"files ({type(e).__name__}: {e}).") from e
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelLoadError(f"{folder} lacks weight shards {', '.join(missing)} named in {index.name}.")
        return [folder / s for s in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} has no *.safetensors weights. {GET_OFFICIAL}")
    return files


# -- the network --------------------------------------------------------------------------------
def llama_config(pangu: dict) -> LlamaConfig:
    """The Pangu config in transformers' Llama terms (the bias flag is `bias` there)."""
    heads = pangu["num_attention_heads"]
    config = LlamaConfig(
        vocab_size=pangu["vocab_size"],
        hidden_size=pangu["hidden_size"],
        intermediate_size=pangu["intermediate_size"],
        num_hidden_layers=pangu["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=pangu.get("num_key_value_heads", heads),
        head_dim=pangu.get("head_dim", pangu["hidden_size"] // heads),
        hidden_act=pangu.get("hidden_act", "silu"),
        max_position_embeddings=pangu.get("max_position_embeddings", 2048),
        rms_norm_eps=pangu.get("rms_norm_eps", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(pangu.get("rope_theta", 10000.0))},
        attention_bias=bool(pangu.get("bias", pangu.get("attention_bias", False))),
        mlp_bias=False,
        tie_word_embeddings=bool(pangu.get("tie_word_embeddings", False)),
        bos_token_id=pangu.get("bos_token_id", 1),
        eos_token_id=pangu.get("eos_token_id", 2),
        pad_token_id=pangu.get("pad_token_id", 0),
    )
    config._attn_implementation = "sdpa"
    return config


def build_model(config: LlamaConfig, state: dict[str, torch.Tensor], device: torch.device,
                dtype: torch.dtype) -> LlamaForCausalLM:
    """A Llama decoder holding `state` (official tensor names; rotary buffers are recomputed)."""
    state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_WEIGHTS)}
    if config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state.get("model.embed_tokens.weight"))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ModelLoadError(f"The weights do not fit the config: {e}") from e
    # The rotary inv_freq buffer is not in the state dict and was created on the meta device.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model.to(device=device, dtype=dtype).eval()


def load_model(source: str | Path | None = None, *, device: str | None = None,
               dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
               progress: bool = True) -> LoadedModel:
    """Load a Pangu diffusion checkpoint: a folder, a hub id, or None for the embedded default."""
    start = time.perf_counter()
    folder = resolve_source(source)
    if not folder.is_dir():
        raise ModelLoadError(f"Model folder {folder} does not exist. {GET_OFFICIAL}")
    config = read_config(folder)
    try:
        tokenizer = PanguTokenizer.from_pretrained(folder)
    except TokenizerError as e:
        raise ModelLoadError(str(e)) from e
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(torch_device, dtype)
    if trust_remote_code:
        model = _load_remote_code(folder, torch_device, torch_dtype)
    else:
        files = weight_files(folder)
        state: dict[str, torch.Tensor] = {}
        for f in tqdm(files, desc=f"Loading {folder.name}", unit="shard", disable=not progress or len(files) < 2):
            try:
                state.update(load_file(f, device="cpu"))
            except (SafetensorError, OSError) as e:
                raise ModelLoadError(f"{f} is damaged or incomplete (an interrupted download?): {e}") from e
        model = build_model(llama_config(config), state, torch_device, torch_dtype)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ModelLoadError(f"The tokenizer has {tokenizer.vocab_size} tokens but the model only "
                             f"{model.config.vocab_size}.")
    name = config.get("_name_or_path") or config.get("name") or folder.name
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(name), path=folder, device=torch_device,
                       dtype=torch_dtype, config=config, load_seconds=time.perf_counter() - start)


def _load_remote_code(folder: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Opt-in: the checkpoint's own modeling code (targets transformers 4.53; may fail on 5.x)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=dtype)
    except Exception as e:
        raise ModelLoadError(f"The checkpoint's own code failed to load ({type(e).__name__}: {e}). "
                             "Load without --trust-remote-code to use transformers' Llama classes.") from e
    return model.to(device).eval()

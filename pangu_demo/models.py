"""The models a host offers: the embedded teaching model, the host's own, and (if allowed) visitors' folders or
hub ids, loaded on first use and kept in a small cache."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from .controls import max_new_default, max_new_limit
from .engine import Decoder
from .loading import EMBEDDED_MODEL, LoadedModel, ModelLoadError, load_model
from .render import escape_markdown

EMBEDDED_LABEL = "Embedded teaching model (assets/model)"


def allow_custom_default() -> bool:
    return os.environ.get("PANGU_DEMO_ALLOW_CUSTOM", "0").lower() in ("1", "true", "yes")


class ModelRegistry:
    """The models the host configured (label -> source) and a small cache of loaded ones."""

    def __init__(self, host_model: str | None = None, allow_custom: bool = False, cache_size: int = 2,
                 preloaded: LoadedModel | None = None, dtype: str | None = None) -> None:
        self.sources: dict[str, str | None] = {EMBEDDED_LABEL: None}
        self.dtype = dtype  # None: the loader's choice for the device
        self.default = EMBEDDED_LABEL
        if host_model:
            label = f"{Path(host_model).name or host_model} ({host_model})"
            self.sources[label] = host_model
            self.default = label
        self.allow_custom = allow_custom
        self.cache_size = cache_size
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._decoders: dict[str, Decoder] = {}
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}
        if preloaded is not None:
            self._store(self.default, preloaded)

    def labels(self) -> list[str]:
        return list(self.sources)

    def resolve(self, label: str | None) -> str:
        """`label` if the host offers it, else the default model's."""
        return label if label in self.sources else self.default

    def is_embedded(self, label: str | None) -> bool:
        """Whether `label` names the embedded teaching model (also when the host gave its folder)."""
        source = self.sources.get(self.resolve(label))
        return source is None or Path(source).expanduser().resolve() == EMBEDDED_MODEL.resolve()

    def add_custom(self, source: str) -> str:
        """Load a visitor's folder or hub id and offer it under a label of its own; one that fails to load is not
        offered (every visitor sees the list, and would see every path anyone typed)."""
        if not self.allow_custom:
            raise ModelLoadError("This host does not allow loading other models (start the app with "
                                 "--allow-custom-models or PANGU_DEMO_ALLOW_CUSTOM=1).")
        label = f"custom: {source}"
        new = label not in self.sources
        self.sources[label] = source
        try:
            self.get(label)
        except ModelLoadError:
            if new:
                del self.sources[label]
                self.errors.pop(label, None)
            raise
        return label

    def _store(self, label: str, lm: LoadedModel) -> None:
        self._loaded[label] = lm
        self._decoders[label] = Decoder(lm.model, lm.tokenizer)
        # Bound memory: drop the least recently used, but never the host's model, which every visitor starts on.
        while len(self._loaded) > self.cache_size:
            old = next((k for k in self._loaded if k != self.default and k != label), None)
            if old is None:
                break
            del self._loaded[old]
            self._decoders.pop(old, None)

    def get(self, label: str | None) -> tuple[LoadedModel, Decoder]:
        label = self.resolve(label)
        with self._lock:
            if label not in self._loaded:
                try:
                    self._store(label, load_model(self.sources[label], dtype=self.dtype, progress=False))
                except ModelLoadError as e:
                    self.errors[label] = str(e)
                    raise
                except Exception as e:  # a broken folder must not take the app down
                    self.errors[label] = f"Could not load {label}: {type(e).__name__}: {e}"
                    raise ModelLoadError(self.errors[label]) from e
                self.errors.pop(label, None)
            self._loaded.move_to_end(label)
            return self._loaded[label], self._decoders[label]

    def name_of(self, label: str | None) -> str | None:
        """The loaded model's own name (config.json), else the label: what a trace file should record."""
        lm = self._loaded.get(self.resolve(label))
        return lm.name if lm is not None else label

    def max_new_tokens(self, label: str | None) -> tuple[int, int]:
        """The top and the starting value of the Max new tokens slider for `label`'s model."""
        lm = self._loaded.get(self.resolve(label))
        top = max_new_limit(lm.context_length if lm is not None else None)
        return top, max_new_default(self.is_embedded(label), top)

    def describe(self, label: str | None) -> str:
        label = self.resolve(label)
        lm = self._loaded.get(label)
        if lm is not None:
            return " · ".join([f"**Loaded:** {escape_markdown(lm.name)}", *lm.facts()])
        if label in self.errors:
            return f"**Not loaded:** {escape_markdown(self.errors[label])}"
        return f"**{escape_markdown(label)}** is loaded on first use."

"""The launched app through gradio_client: the named "generate" endpoint streams, then returns the trace."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from app_server import launched


@pytest.fixture(scope="module")
def app_url(tiny_checkpoint):
    with launched(str(tiny_checkpoint)) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_generate_endpoint_streams_and_returns_trace(client):
    job = client.submit(prompt="Tom has 3 <apples> & 4 more.", think=True, num_small_blocks=4, threshold=0.5,
                        max_new_tokens=96, seed=7, api_name="/generate")
    final = job.result(timeout=300)
    updates = job.outputs()
    assert len(updates) >= 2, "expected streamed updates before the final one"
    assert all(not u["done"] for u in updates[:-1]) and final["done"]
    nfes = [u["stats"]["nfe"] for u in updates]
    assert nfes == sorted(nfes) and nfes[-1] > 0
    trace = json.loads(final["trace"])
    assert trace["result"]["nfe"] == final["stats"]["nfe"] == len(trace["steps"])
    assert trace["result"]["config"]["seed"] == 7 and trace["result"]["config"]["num_small_blocks"] == 4
    assert isinstance(final["answer"], str) and isinstance(final["thinking"], str)


def test_each_request_carries_its_own_seed(client):
    def answer(seed: int) -> list[int]:
        out = client.predict(prompt="Hello", temperature=1.0, max_new_tokens=32, seed=seed, api_name="/generate")
        return json.loads(out["trace"])["result"]["tokens"]

    first = answer(1)
    assert answer(2) != first  # a random model at temperature 1: different seeds differ
    assert answer(1) == first


def test_history_goes_into_the_prompt(client):
    def prompt_len(history) -> int:
        out = client.predict(prompt="And then?", history=history, max_new_tokens=16, api_name="/generate")
        return len(json.loads(out["trace"])["result"]["prompt_ids"])

    assert prompt_len([["Tom has 3 apples.", "Yes."]]) > prompt_len([])


def test_think_takes_a_bool_or_auto(client):
    def prompt_of(think) -> list[int]:
        out = client.predict(prompt="Hi", think=think, max_new_tokens=16, api_name="/generate")
        return json.loads(out["trace"])["result"]["prompt_ids"]

    on, off, auto = prompt_of(True), prompt_of(False), prompt_of("auto")
    assert len(on) < len(off) and len(on) < len(auto) and off != auto  # " /no_think", " /auto_think" appended


def test_a_system_message_goes_into_the_prompt(client):
    def prompt_of(**system) -> list[int]:
        out = client.predict(prompt="Hi", max_new_tokens=16, api_name="/generate", **system)
        return json.loads(out["trace"])["result"]["prompt_ids"]

    assert len(prompt_of(system="Be brief.")) > len(prompt_of())


def test_bad_input_gives_a_clear_error(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Type a message"):
        client.predict(prompt="   ", api_name="/generate")
    with pytest.raises(AppError, match="Thinking must be one of"):
        client.predict(prompt="Hi", think="maybe", api_name="/generate")
    with pytest.raises(AppError, match="num_small_blocks must divide"):
        client.predict(prompt="Hi", num_small_blocks=3, api_name="/generate")
    with pytest.raises(AppError, match="context"):
        client.predict(prompt="word " * 600, max_new_tokens=32, api_name="/generate")
    with pytest.raises(AppError, match="model must be a model's label as text"):
        client.predict(prompt="Hi", model=["x"], api_name="/generate")
    with pytest.raises(AppError, match="temperature must be 0"):  # overflowed in the sampling: a raw torch error
        client.predict(prompt="Hi", temperature=1e-300, api_name="/generate")


def test_missing_or_broken_model_folder_gives_a_message_and_the_app_runs(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    for folder, expected in ((tmp_path / "missing", "does not exist"), (broken, "not valid JSON")):
        with launched(str(folder)) as url, pytest.raises(AppError, match=expected):
            Client(url, verbose=False).predict(prompt="Hi", api_name="/generate")


def test_the_registry_knows_which_model_is_the_embedded_one(tiny_checkpoint):
    from pangu_demo.loading import EMBEDDED_MODEL
    from pangu_demo.models import EMBEDDED_LABEL, ModelRegistry

    assert ModelRegistry().is_embedded(None)
    assert ModelRegistry(str(EMBEDDED_MODEL)).is_embedded(None)  # the host named the embedded folder
    other = ModelRegistry(str(tiny_checkpoint))
    assert not other.is_embedded(other.default)
    assert other.is_embedded(EMBEDDED_LABEL)


def test_the_registry_loads_in_the_dtype_the_host_asked_for(tiny_checkpoint):
    import torch

    from pangu_demo.loading import pick_dtype
    from pangu_demo.models import ModelRegistry

    assert ModelRegistry(str(tiny_checkpoint)).get(None)[0].dtype == pick_dtype(torch.device("cpu"))  # the default
    assert ModelRegistry(str(tiny_checkpoint), dtype="bfloat16").get(None)[0].dtype == torch.bfloat16


def test_trace_files_are_written_and_old_ones_removed(tmp_path, monkeypatch):
    import os
    import time

    from pangu_demo import downloads, ui
    from pangu_demo.engine import Result
    from pangu_demo.streaming import Recording

    monkeypatch.setattr(downloads, "DOWNLOAD_DIR", tmp_path)
    old = tmp_path / "trace-old.json"
    old.write_text("{}")
    old_folder = tmp_path / "abc123"
    (old_folder / "block-diffusion-trace-20260101-000000.json").parent.mkdir()
    (old_folder / "block-diffusion-trace-20260101-000000.json").write_text("{}")
    for stale in (old, old_folder):
        os.utime(stale, (time.time() - 2 * downloads.KEEP_SECONDS,) * 2)
    assert ui.write_trace(ui.Session(), "m") is None
    rec = Recording(result=Result(tokens=[5, 6], text="hi", nfe=2, seconds=0.1, stop_reason="stop_token",
                                  prompt_ids=[1], config={}))
    path = ui.write_trace(ui.Session(history=[("Hi?", "hi")], recording=rec), "tiny <model>")
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    assert data["model"] == "tiny <model>" and data["result"]["tokens"] == [5, 6] and data["prompt"] == "Hi?"
    assert not old.exists() and not old_folder.exists()
    assert [p.relative_to(tmp_path).parent for p in tmp_path.glob("*/*")] == [Path(path).relative_to(tmp_path).parent]
    assert re.fullmatch(r"block-diffusion-trace-\d{8}-\d{6}\.json", Path(path).name)  # a name a reader can keep

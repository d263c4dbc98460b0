"""`app.py`, the thin entry point: its thread default and its refusal of bad values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pangu_demo import ui

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("cores", "threads"), [(None, 1), (1, 1), (2, 1), (8, 7)])
def test_the_app_leaves_one_core_to_the_page(monkeypatch, cores, threads) -> None:
    monkeypatch.setattr(ui.os, "cpu_count", lambda: cores)
    assert ui.default_threads() == threads


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--threads", "0"], {}, "argument --threads: must be at least 1, got 0"),
    ([], {"PANGU_DEMO_THREADS": "0"}, "argument --threads: must be at least 1, got 0"),
    ([], {"PANGU_DEMO_THREADS": "many"}, "argument --threads: must be a whole number, got 'many'"),
    (["--dtype", "int8"], {}, "argument --dtype: must be one of"),
    ([], {"PANGU_DEMO_DTYPE": "int8"}, "argument --dtype: must be one of"),
])
def test_bad_settings_are_refused_before_anything_loads(args, env, message) -> None:
    run = subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert run.returncode == 2 and message in run.stderr, run.stderr


def test_the_readme_front_matter_makes_a_space_of_this_repository() -> None:
    """Hugging Face Spaces build the app from the README's front matter: it must name this entry point and a
    Gradio version and Python that the requirements accept."""
    yaml = pytest.importorskip("yaml")  # comes with gradio
    from packaging.requirements import Requirement
    from packaging.version import Version

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    pins = [Requirement(line.split("#")[0]) for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip()]
    gradio = next(r for r in pins if r.name == "gradio")
    assert Version(meta["sdk_version"]) in gradio.specifier
    assert Version(str(meta["python_version"])) >= Version("3.11")  # the README's Quick start asks for 3.11+
    assert "openpangu/openPangu-R-7B-Diffusion" in meta["models"]

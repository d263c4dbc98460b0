"""`python -m pangu_demo generate` on the tiny checkpoint, through cli.main()."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from pangu_demo import chat, cli, engine, loading
from pangu_demo import trace as trace_format
from pangu_demo.loading import LoadedModel


def generate(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["generate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_prints_trace_answer_and_figures(tiny_checkpoint: Path, tiny_model: LoadedModel,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trace = tmp_path / "trace.json"
    code, out, err = generate(capsys, "How many eggs?", "--model", str(tiny_checkpoint), "--dtype", "float64",
                              "--alg", "entropy", "--small-blocks", "4", "--max-new-tokens", "40",
                              "--system", "Be brief.", "--trace", str(trace), "--gif", str(tmp_path / "run.gif"))
    assert code == 0, err
    assert f"Loading {tiny_checkpoint}" in err
    # The same decoding done directly must give what the CLI printed.
    tok = tiny_model.tokenizer
    ids = chat.prompt_ids(tok, [], "How many eggs?", system="Be brief.")
    config = engine.DecodeConfig(algorithm="entropy", num_small_blocks=4, max_new_tokens=40)
    steps, result = engine.run(engine.Decoder(tiny_model.model, tok), ids, config)
    reply = chat.split_reply(result.text)
    lines = out.splitlines()
    assert lines[0] == "=== Thinking ===" and "=== Answer ===" in lines
    if reply.answer:
        assert reply.answer in out.split("=== Answer ===", 1)[1]
    last = lines[-1]
    assert last.startswith(f"NFE {result.nfe} | TPF {result.tpf:.2f} | ") and "tokens/s" in last
    data = json.loads(trace.read_text(encoding="utf-8"))
    assert data["version"] == trace_format.VERSION and data["prompt"] == "How many eggs?"
    assert (data["think"], data["system"]) == ("on", "Be brief.")  # how it was asked: the page asks it so again
    assert data["result"]["prompt_ids"] == ids
    assert len(data["steps"]) == data["result"]["nfe"] == result.nfe
    assert data["result"]["tokens"] == result.tokens
    assert Image.open(tmp_path / "run.gif").n_frames == result.nfe and "GIF written to" in err


def test_replay_prints_a_saved_run_without_loading_a_model(tiny_checkpoint: Path, tiny_model: LoadedModel,
                                                           tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    saved = tmp_path / "run.json"
    code, generated, err = generate(capsys, "How many eggs?", "--model", str(tiny_checkpoint), "--dtype", "float64",
                                    "--small-blocks", "4", "--max-new-tokens", "40", "--trace", str(saved))
    assert code == 0, err
    # No model may be loaded: a trace of the 7B model must replay where only the file is.
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("replay loaded a model"))
    code = cli.main(["replay", str(saved), "--gif", str(tmp_path / "again.gif")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[0] == f"Trace of {tiny_model.name}: How many eggs?"
    # Every line generate printed, figures included: the replay reports the recorded run.
    assert out.splitlines()[1:] == generated.splitlines()
    nfe = len(json.loads(saved.read_text(encoding="utf-8"))["steps"])
    assert Image.open(tmp_path / "again.gif").n_frames == nfe


@pytest.mark.parametrize("content, words", [(b"not json", "not valid JSON"), (b'{"version": 1}', "format 1"),
                                            (b'{"version": 2, "steps": []}', "damaged")])
def test_replay_of_a_bad_file_is_one_clean_line(content: bytes, words: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    code = cli.main(["replay", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(path) in err  # which file


def test_replay_refuses_an_oversized_file_before_reading_it(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 2048)
    monkeypatch.setattr(trace_format, "MAX_BYTES", 1024)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the file was read whole"))
    code = cli.main(["replay", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "a trace may be at most" in err and "big.json" in err


def test_replay_of_a_missing_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["replay", str(tmp_path / "gone.json")])
    err = capsys.readouterr().err
    assert code == 2 and "gone.json" in err and "could not be read" in err and len(err.strip().splitlines()) == 1


def test_generate_ar_no_think(tiny_checkpoint: Path, tiny_model: LoadedModel, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    trace = tmp_path / "ar.json"
    code, out, err = generate(capsys, "Hi", "--model", str(tiny_checkpoint), "--mode", "ar", "--no-think",
                              "--max-new-tokens", "12", "--dtype", "float64", "--trace", str(trace))
    assert code == 0, err
    figures = re.fullmatch(r"NFE (\d+) \| TPF 1\.00 \| .*", out.splitlines()[-1])  # AR: one token per forward
    assert figures and 1 <= int(figures.group(1)) <= 12
    saved = json.loads(trace.read_text(encoding="utf-8"))
    prompt = tiny_model.tokenizer.decode(saved["result"]["prompt_ids"])
    assert prompt.endswith("[unused9]用户：Hi /no_think[unused10][unused9]助手：") and saved["think"] == "off"


def test_generate_fused_commit(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trace = tmp_path / "fused.json"
    code, _, err = generate(capsys, "Hi", "--model", str(tiny_checkpoint), "--fused-commit", "--max-new-tokens", "64",
                            "--dtype", "float64", "--trace", str(trace))
    assert code == 0, err
    saved = json.loads(trace.read_text(encoding="utf-8"))
    assert saved["result"]["config"]["fused_commit"] is True
    kinds = [step["kind"] for step in saved["steps"]]
    assert kinds.count("fused") == 1 and "commit" not in kinds  # two blocks: one fused forward between them


def test_auto_think_asks_the_model_to_decide(tiny_checkpoint: Path, tiny_model: LoadedModel, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    trace = tmp_path / "auto.json"
    code, _, err = generate(capsys, "Hi", "--model", str(tiny_checkpoint), "--auto-think", "--max-new-tokens", "32",
                            "--dtype", "float64", "--trace", str(trace))
    assert code == 0, err
    prompt = tiny_model.tokenizer.decode(json.loads(trace.read_text(encoding="utf-8"))["result"]["prompt_ids"])
    assert prompt.endswith("[unused9]用户：Hi /auto_think[unused10][unused9]助手：")
    with pytest.raises(SystemExit):  # one or the other
        cli.main(["generate", "Hi", "--auto-think", "--no-think"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_bad_choice_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "Hi", "--alg", "origin"])
    assert exit_info.value.code == 2
    assert "confidence_threshold" in capsys.readouterr().err  # argparse lists the valid choices


def test_invalid_value_is_one_clean_line(tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = generate(capsys, "Hi", "--model", str(tiny_checkpoint), "--small-blocks", "3")
    assert code == 2 and out == ""
    assert err.strip().startswith("error: num_small_blocks") and "1, 2, 4, 8, 16, 32" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1  # rejected before loading


@pytest.mark.parametrize("prompt", ["", "  \n"])
def test_an_empty_prompt_is_refused_before_loading(prompt: str, capsys: pytest.CaptureFixture) -> None:
    code, out, err = generate(capsys, prompt)
    assert code == 2 and out == "" and err.startswith("error: the prompt is empty") and "Loading" not in err


def test_missing_default_model_is_one_clean_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(loading, "EMBEDDED_MODEL", tmp_path / "assets" / "model")
    code, out, err = generate(capsys, "Hi")
    assert code == 2 and out == ""
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "does not exist" in error_lines[0] and "hf download" in error_lines[0]


@pytest.mark.parametrize("option", ["--trace", "--gif"])
def test_unwritable_trace_is_a_clean_error(option: str, tiny_checkpoint: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    code, _, err = generate(capsys, "Hi", "--model", str(tiny_checkpoint), "--max-new-tokens", "4",
                            option, str(tmp_path / "no-such-dir" / "t.out"))
    # Said before the model loads: no time is spent decoding a run that cannot be saved.
    assert code == 2 and "folder" in err and "does not exist" in err and "Traceback" not in err
    assert "Loading" not in err


def test_replay_to_a_missing_folder_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["replay", str(tmp_path / "run.json"), "--gif", str(tmp_path / "no-such-dir" / "run.gif")])
    err = capsys.readouterr().err
    # Said before the trace is read: the GIF's folder, not the trace's, is the problem.
    assert code == 2 and "cannot write the GIF" in err and "no-such-dir" in err and "Traceback" not in err

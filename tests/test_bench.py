"""`python -m pangu_demo.bench --quick` on the tiny checkpoint: the report's structure and internal consistency
(not speed: the smoke run only checks that the figures are computed as documented)."""

from __future__ import annotations

import importlib.util
import io
import json
import statistics
import sys
from pathlib import Path

import pytest

from pangu_demo import bench, cli


@pytest.fixture(scope="module")
def quick_run(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("bench")
    capture = pytest.MonkeyPatch()  # capsys is per test; this fixture runs once per module
    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        code = bench.main(["--model", str(tiny_checkpoint), "--quick", "--no-progress", "--out", str(out),
                           "--markdown", str(out / "bench.md")])
    finally:
        capture.undo()
    assert code == 0
    return json.loads((out / "bench.json").read_text(encoding="utf-8")), buf.getvalue(), out


def test_writes_json_html_and_markdown(quick_run: tuple[dict, str, Path]) -> None:
    report, stdout, out = quick_run
    html = (out / "bench.html").read_text(encoding="utf-8")
    assert "<html>" in html and "Plotly.newPlot" in html and "speed-up" in html
    if importlib.util.find_spec("kaleido") and bench.DEBIAN_CHROMIUM.exists():  # the static export
        assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "bench.md").read_text(encoding="utf-8")
    assert "| setting | NFE/prompt | TPF | tok/s | speed-up | accuracy | outside fwd |" in md
    assert "python -m pangu_demo.bench --model" in md and "--quick" in md
    for row in report["rows"]:
        assert row["label"] in md and row["label"] in stdout
    # Every bar printed with its verdict, and the ratio with its explanation.
    assert sum(line.strip().startswith(("PASS", "FAIL")) for line in stdout.splitlines()) == len(bench.BARS)
    assert "Block/one-token forward ratio" in stdout and bench.RATIO_NOTE in stdout


def test_chart_marks_ar_speed_and_ar_accuracy(quick_run: tuple[dict, str, Path]) -> None:
    report, _, _ = quick_run
    fig = bench.figure(report)
    ar = next(r for r in report["rows"] if r["name"] == "ar")
    lines = {(s["y0"], s["yref"]) for s in fig.layout.shapes}
    assert (1.0, "y") in lines  # AR's speed on the speed-up axis
    assert (100 * ar["accuracy"], "y2") in lines  # AR's accuracy on the accuracy axis
    assert any(a.text.startswith("AR accuracy") and a.yref == "y2" for a in fig.layout.annotations)


def test_every_setting_once_with_quick_parameters(quick_run: tuple[dict, str, Path]) -> None:
    report, _, _ = quick_run
    names = [r["name"] for r in report["rows"]]
    assert names == [s.name for s in bench.settings()]
    assert {"ar", bench.HEADLINE, bench.FUSED, "entropy/8", "elastic"} <= set(names)
    assert report["params"]["n_prompts"] == bench.QUICK["n_prompts"]
    assert report["params"]["max_new_tokens"] == bench.QUICK["max_new_tokens"]
    fused = next(r for r in report["rows"] if r["name"] == bench.FUSED)
    assert fused["config"]["fused_commit"] is True and fused["config"]["threshold"] == 0.9


def test_rows_are_internally_consistent(quick_run: tuple[dict, str, Path]) -> None:
    report, _, _ = quick_run
    rows = {r["name"]: r for r in report["rows"]}
    ar = rows["ar"]
    assert ar["nfe"] == ar["tokens"]  # AR: one token per forward, prefill included
    for r in rows.values():
        assert r["prompts"] == report["params"]["n_prompts"]
        assert len(r["seconds_all"]) == report["params"]["repeats"]
        assert r["seconds"] == pytest.approx(statistics.median(r["seconds_all"]))
        assert r["tpf"] == pytest.approx(r["tokens"] / r["nfe"])
        assert r["mean_nfe"] == pytest.approx(r["nfe"] / r["prompts"])
        assert r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"])
        # Speed-up = AR's time per generated token / this setting's (= AR time / setting time for equal tokens).
        assert r["speedup"] == pytest.approx((ar["seconds"] / ar["tokens"]) / (r["seconds"] / r["tokens"]))
        if r["tokens"] == ar["tokens"]:
            assert r["speedup"] == pytest.approx(ar["seconds"] / r["seconds"])
        assert 0 <= r["accuracy"] <= 1
        assert 0 < r["forward_seconds"] <= r["seconds"]
        assert r["outside_forward_fraction"] == pytest.approx(1 - r["forward_seconds"] / r["seconds"])
        assert r["tokens"] <= r["prompts"] * report["params"]["max_new_tokens"]
    assert ar["speedup"] == pytest.approx(1.0)


def test_ratio_streaming_batch_and_bars_are_consistent(quick_run: tuple[dict, str, Path]) -> None:
    report, _, _ = quick_run
    rows = {r["name"]: r for r in report["rows"]}
    ratio = report["ratio"]
    assert ratio["ratio"] > 0
    assert ratio["ratio"] == pytest.approx(ratio["block_forward_ms"] / ratio["one_token_forward_ms"])
    s = report["streaming"]
    # The overhead is the median of per-prompt pairs; the totals are medians over repeats of the same runs.
    assert len(s["pair_ratios"]) == report["params"]["repeats"] * report["params"]["n_prompts"]
    assert s["overhead"] == pytest.approx(statistics.median(s["pair_ratios"]) - 1)
    assert sum(s["engine_seconds_all"]) > 0 and s["engine_seconds"] == statistics.median(s["engine_seconds_all"])
    assert s["records"] == rows[bench.HEADLINE]["nfe"]  # the same decodes: one record per forward
    assert 1 <= s["frames"] <= s["records"] + report["params"]["n_prompts"]
    batch = {(b["setting"], b["batch_size"]): b for b in report["batch"]}
    assert set(batch) == {(m, n) for m in ("ar", bench.HEADLINE) for n in bench.QUICK["batch_sizes"]}
    for b in batch.values():
        assert b["tokens_per_s"] == pytest.approx(b["tokens"] / b["seconds"])
        assert b["speedup_vs_ar_same_batch"] == pytest.approx(
            b["tokens_per_s"] / batch[("ar", b["batch_size"])]["tokens_per_s"])
    # Batch 1 decodes the prompt set cyclically: its token count is a multiple of the per-prompt totals.
    seqs = batch[("ar", 1)]["sequences"]
    assert batch[("ar", 1)]["tokens"] * report["params"]["n_prompts"] == rows["ar"]["tokens"] * seqs
    head = rows[bench.HEADLINE]
    assert report["ideal_speedup"] == pytest.approx(head["tpf"] / ratio["ratio"])
    bars = {b["key"]: b for b in report["bars"]}
    assert bars["speedup"]["measured"] == pytest.approx(head["speedup"])
    assert bars["speedup_vs_ideal"]["measured"] == pytest.approx(head["speedup"] / report["ideal_speedup"])
    assert bars["streaming_overhead"]["measured"] == pytest.approx(s["overhead"])
    for b in bars.values():
        assert b["pass"] == (b["measured"] >= b["target"] if b["kind"] == "min" else b["measured"] <= b["target"])


def test_summarize_speedup_is_a_tokens_per_second_ratio() -> None:
    chosen = [s for s in bench.settings() if s.name in ("ar", bench.HEADLINE)]
    tallies = {"ar": bench.Tally(seconds=[2.0, 4.0, 3.0], forward_seconds=[1.5, 3.5, 2.5], tokens=100, nfe=100,
                                 correct=1, prompts=2),
               bench.HEADLINE: bench.Tally(seconds=[1.0, 1.0, 5.0], forward_seconds=[0.8, 0.9, 4.0], tokens=50,
                                           nfe=10, correct=2, prompts=2)}
    ar, head = bench.summarize(chosen, tallies, 64, 32)
    assert ar["seconds"] == 3.0 and head["seconds"] == 1.0  # medians
    assert head["tpf"] == 5.0 and head["accuracy"] == 1.0 and ar["accuracy"] == 0.5
    assert head["speedup"] == pytest.approx((50 / 1.0) / (100 / 3.0))
    assert head["outside_forward_fraction"] == pytest.approx(1 - 0.9 / 1.0)


def test_cli_registers_bench_and_rejects_unknown_settings(tiny_checkpoint: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    args = cli.build_parser().parse_args(["bench", "--quick", "--threads", "1"])
    assert args.func is bench.run_cli and args.quick and args.out == Path("bench-out")
    code = cli.main(["bench", "--model", str(tiny_checkpoint), "--settings", "nonsense"])
    assert code == cli.USAGE_ERROR and "unknown setting" in capsys.readouterr().err


def test_the_printed_command_gives_the_same_arguments_back() -> None:
    import argparse
    import shlex

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert "--dtype bfloat16 " in bench.command_line(parser.parse_args(["--dtype", "bfloat16"]))
    assert "--dtype" not in bench.command_line(parser.parse_args([]))  # the loader's choice for the machine
    given = ["--settings", "ct0.9/1", "elastic", "--device", "cpu", "--ratio-trials", "7", "--block-length", "16",
             "--repeats", "2", "--model", "my models/tiny"]
    again = shlex.split(bench.command_line(parser.parse_args(given)))[3:]  # after "python -m pangu_demo.bench"
    assert vars(parser.parse_args(again)) == vars(parser.parse_args(given))

"""The embedded model's evaluation (pangu_demo.evaluate): scoring, aggregation, bars and the quick run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pangu_demo import chat, cli, data, engine, evaluate
from pangu_demo.evaluate import Record, Score, score_reply, summarize
from pangu_demo.loading import LoadedModel

THINK_START, THINK_END = chat.THINK_START, chat.THINK_END


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return data.eval_set(25)  # five of each task


def scored(example: dict, text: str, stop_reason: str = "stop_token") -> Score:
    return score_reply(example, text, stop_reason, think=True)


def test_reference_replies_score_as_correct_and_well_formed(examples: list[dict]) -> None:
    for ex in examples:
        gold = ex["messages"][-1]["content"]  # what the model should say
        assert scored(ex, gold) == Score(correct=True, well_formed=True, empty_trace=False, whole_answer=True)
        # Cut off by max_new_tokens: the answer may be right, the reply is not well formed.
        assert scored(ex, gold, "length") == Score(correct=True, well_formed=False, empty_trace=False,
                                                   whole_answer=False)


def test_broken_replies(examples: list[dict]) -> None:
    ex = next(e for e in examples if e["task"] == "one_op")
    right, wrong = ex["answer"], str(int(ex["answer"]) + 1)
    trace = f"I work it out: the result is {right}."
    # The trace never closes: nothing after it counts as the answer, though the trace names it.
    unclosed = f"{THINK_START}{trace} The answer is {right}."
    assert scored(ex, unclosed) == Score(False, False, False, False)
    wrong_answer = data.reply(trace, f"The answer is {wrong}.")
    assert scored(ex, wrong_answer) == Score(False, True, False, True)
    assert scored(ex, data.reply(trace, "")) == Score(False, False, False, False)  # no answer
    assert scored(ex, f"The answer is {right}.") == Score(True, False, False, False)  # no trace
    assert scored(ex, data.reply(trace, f"So {right}.") + THINK_END).well_formed is False
    # Cut short by an early stop token: the number is there, the sentence is not finished.
    cut_short = data.reply(trace, f"There are {right} of them on")
    assert scored(ex, cut_short) == Score(True, True, False, whole_answer=False)
    # What a no-think prompt should give; in think mode the same reply skipped its trace. And a trace that
    # does not start the reply.
    skipped = data.reply("", f"It is {right}.")
    assert score_reply(ex, skipped, "stop_token", think=False) == Score(True, True, True, True)
    assert scored(ex, skipped) == Score(True, False, True, False)
    assert scored(ex, data.reply(" ", f"It is {right}.")).well_formed is False
    assert scored(ex, "Hmm " + data.reply("", f"It is {right}.")) == Score(True, False, False, False)


def test_comparing_and_ordering_answers(examples: list[dict]) -> None:
    cmp = next(e for e in examples if e["task"] == "comparing")
    other = cmp["meta"]["other"]
    assert scored(cmp, data.reply("x", f"{cmp['answer']}.")).correct
    assert not scored(cmp, data.reply("x", f"{other}.")).correct
    order = next(e for e in examples if e["task"] == "ordering")
    numbers = order["answer"]
    assert scored(order, data.reply("x", numbers)).correct
    assert not scored(order, data.reply("x", ", ".join(reversed(numbers.split(", "))))).correct


def record(task: str, correct: bool, tokens: int, nfe: int, seconds: float, think: bool = True) -> Record:
    return Record(task, think, Score(correct, correct, not think, correct), tokens, nfe, seconds)


def test_summarize_pools_tokens_and_forwards() -> None:
    rows = [record("one_op", True, 10, 4, 0.5), record("one_op", False, 6, 6, 0.3),
            record("two_op", True, 20, 5, 0.2), record("two_op", True, 4, 4, 1.0, think=False)]
    m = summarize(rows[:2])
    assert m["n"] == 2 and m["accuracy"] == 0.5 and m["well_formed"] == 0.5
    assert m["tpf"] == pytest.approx(16 / 10)  # not the mean of 2.5 and 1.0
    assert m["mean_nfe"] == 5 and m["tokens_per_s"] == pytest.approx(16 / 0.8)
    s = evaluate.summarize_setting(rows, wall_seconds=4.0)
    assert s["think"]["one_op"]["n"] == 2 and s["think"]["two_op"]["tpf"] == 4.0
    assert s["think"]["counting"] == {"n": 0}
    assert s["think"]["all"]["tpf"] == pytest.approx(36 / 15)
    assert s["no_think"]["all"]["n"] == 1 and s["no_think"]["all"]["empty_trace"] == 1.0
    assert s["overall"]["tpf"] == pytest.approx(40 / 19) and s["overall"]["tokens_per_s_wall"] == 10.0

    bars = {b["bar"]: b for b in evaluate.check_bars(s)}
    assert bars["one-operation word problems: final-answer accuracy"]["measured"] == 0.5
    assert not bars["one-operation word problems: final-answer accuracy"]["pass"]
    assert bars["two-operation word problems: final-answer accuracy"]["pass"]
    assert bars["no-think prompts give an empty trace"]["pass"]
    assert not bars["tokens per forward over the whole evaluation"]["pass"]


def test_quick_run_on_the_tiny_checkpoint(tiny_checkpoint: Path, tiny_model: LoadedModel, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out, md = tmp_path / "eval.json", tmp_path / "eval.md"
    code = cli.main(["evaluate", "--model", str(tiny_checkpoint), "--dtype", "float64", "--quick", "--no-progress",
                     "--out", str(out), "--markdown", str(md)])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    n, max_new = evaluate.QUICK["n"], evaluate.QUICK["max_new_tokens"]
    assert report["n"] == n and report["max_new_tokens"] == max_new and report["dtype"] == "float64"
    assert list(report["settings"]) == evaluate.DEFAULT_SETTINGS  # fused@0.9 runs only on request
    for s in report["settings"].values():
        assert [s["think"][t]["n"] for t in data.EVAL_TASKS] == [1] * 5 and s["think"]["all"]["n"] == n
        assert s["no_think"]["all"]["n"] == n and s["overall"]["n"] == 2 * n
        assert s["overall"]["tpf"] > 0 and s["overall"]["tokens"] <= 2 * n * max_new
    assert report["settings"]["ar"]["overall"]["tpf"] == pytest.approx(1.0)  # one token per forward
    assert len(report["bars"]) == len(evaluate.BARS)
    assert len(report["samples"]) == 2 * (len(data.EVAL_TASKS) + evaluate.QUICK["open_prompts"])

    # The headline figures are those of decoding the same prompts directly.
    config = evaluate.decode_config(evaluate.HEADLINE, max_new, engine.DecodeConfig().block_length)
    decoder = engine.Decoder(tiny_model.model, tiny_model.tokenizer)
    tokens = nfe = 0
    for ex in data.eval_set(n):
        for think in (True, False):
            ids = chat.prompt_ids(tiny_model.tokenizer, [], evaluate.question(ex), think, evaluate.system(ex))
            _, result = engine.run(decoder, ids, config)
            tokens, nfe = tokens + len(result.tokens), nfe + result.nfe
    head = report["settings"][evaluate.HEADLINE]["overall"]
    assert (head["tokens"], head["nfe"]) == (tokens, nfe)
    assert head["tpf"] == pytest.approx(tokens / nfe)

    for b in report["bars"]:
        assert f"{'PASS' if b['pass'] else 'FAIL'}  {b['bar']}" in printed
    # Every setting is measured against the same bars; the text names the others' figures.
    assert report["settings"][evaluate.HEADLINE]["bars"] == report["bars"]
    for name, s in report["settings"].items():
        tpf = next(b for b in s["bars"] if b["short"] == "TPF")
        assert tpf["measured"] == pytest.approx(s["overall"]["tpf"])
        if name != evaluate.HEADLINE:
            assert f"  {s['label']}: one-op " in printed
    assert evaluate.SPEED_NOTE in printed
    text = md.read_text()
    assert text.startswith("## Evaluation") and "| bar | target | measured |" in text
    assert "(float64)." in text  # the weights' dtype: speed and accuracy depend on it
    assert text.count("\n| block diffusion, threshold 0.9 |") == 8  # 5 tasks, all, no-think, both


def test_the_fused_setting_is_the_headline_with_the_fused_commit() -> None:
    fused, plain = (evaluate.decode_config(name, 64, 32) for name in ("fused@0.9", evaluate.HEADLINE))
    assert fused.fused_commit and not plain.fused_commit
    assert fused == dataclasses.replace(plain, fused_commit=True)


def test_a_subset_run_asks_exactly_the_chosen_questions(tiny_model: LoadedModel,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, bool]] = []
    original = chat.prompt_ids

    def recording_prompt_ids(tok, history, user, think=True, system=None):  # noqa: ANN001, ANN202
        asked.append((user, think))
        return original(tok, history, user, think, system)

    monkeypatch.setattr(evaluate.chat, "prompt_ids", recording_prompt_ids)
    report = evaluate.evaluate(tiny_model.model, tiny_model.tokenizer, n=10, max_new_tokens=8, first=300,
                               tasks=["one_op", "two_op"], think_only=True, settings=[evaluate.HEADLINE, "ar"],
                               open_prompts=[], progress=False)
    wanted = [ex for ex in data.eval_set(10, start=300) if ex["task"] in ("one_op", "two_op")]
    assert len(wanted) == 4 and all(ex not in data.eval_set(300) for ex in wanted)  # a disjoint set
    assert asked == [(evaluate.question(ex), True) for ex in wanted]
    for s in report["settings"].values():
        assert [s["think"][t]["n"] for t in ("one_op", "two_op")] == [2, 2]
        assert s["think"]["counting"] == {"n": 0} and s["no_think"]["all"] == {"n": 0}
        assert s["overall"]["n"] == 4 and s["bars"] == []
    # The standard set's bars do not apply to a subset: none are reported, and the text says why.
    assert "bars" not in report and not report["standard"] and report["samples"] == []
    assert evaluate.bar_lines(report)[0].startswith("Bars: not checked")
    markdown = evaluate.render_markdown(report)
    assert "questions 300-309 of the held-out set (one_op, two_op;" in markdown
    assert "| think | all | 4 |" in markdown and "| both |" not in markdown
    with pytest.raises(ValueError, match="unknown task"):
        evaluate.evaluate(tiny_model.model, tiny_model.tokenizer, n=5, tasks=["facts"], progress=False)

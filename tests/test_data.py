"""Synthetic chat data: determinism, the eval/train split, correct traces, reply format, tokenizer training."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from pangu_demo.data import (
    EVAL_TASKS,
    NO_THINK,
    THINK_END,
    THINK_START,
    TRAIN_MIX,
    apply_op,
    check_answer,
    eval_set,
    is_eval_operands,
    iter_examples,
    make_example,
    parse_mix,
    split_reply,
)

N_TRAIN = 3000
TRAIN = [make_example("train", i) for i in range(N_TRAIN)]
EVAL = eval_set(1000)

CHAIN = re.compile(r"(\d+(?: [-+×÷] \d+)+) = (\d+)(?: remainder (\d+))?")
FINAL = re.compile(r"(?:So|That gives|Result:) (\d+) ([-+×÷]) (\d+) = (\d+)\.")
EVENT = re.compile(rf"write (\d+)|= (\d+) remainder \d+|{FINAL.pattern}")


def _last_reply(ex: dict) -> tuple[str, str]:
    parts = split_reply(ex["messages"][-1]["content"])
    assert parts is not None, ex["messages"][-1]["content"]
    return parts


def _check_equations(trace: str) -> int:
    """Every "a op b (op c) = d" in the trace is true; returns how many were checked."""
    n = 0
    for m in CHAIN.finditer(trace):
        tokens = m.group(1).split(" ")
        value = int(tokens[0])
        for op, num in zip(tokens[1::2], tokens[2::2], strict=True):
            num = int(num)
            if op == "÷":
                remainder = int(m.group(3) or 0)  # a final "a ÷ b = q" must divide exactly
                assert (value // num, value % num) == (int(m.group(2)), remainder), m.group(0)
                value = value // num
            else:
                value = {"+": value + num, "-": value - num, "×": value * num}[op]
        assert value == int(m.group(2)), f"{m.group(0)} in {trace}"
        n += 1
    return n


def _check_digits(trace: str) -> list[int]:
    """The digits the algorithm writes (or the quotient digits) spell each computation's result."""
    results, written = [], []
    for m in EVENT.finditer(trace):
        if m.group(1) is not None:
            written.append(m.group(1))
        elif m.group(2) is not None:
            written.append(m.group(2))
        else:
            op, r = m.group(4), int(m.group(6))
            digits = written if op == "÷" else written[::-1]
            assert int("".join(digits)) == r, f"{digits} vs {r} in {trace}"
            results.append(r)
            written = []
    return results


def test_make_example_is_deterministic_and_varied():
    assert make_example("train", 7) == make_example("train", 7)
    assert make_example("eval", 7, seed=3) == make_example("eval", 7, seed=3)
    assert make_example("train", 7) != make_example("train", 8)
    assert make_example("train", 7) != make_example("train", 7, seed=1)
    assert make_example("train", 3) != make_example("eval", 3)
    it = iter_examples("train", start=5)
    assert [next(it) for _ in range(3)] == TRAIN[5:8]


def test_same_examples_in_a_fresh_process_with_another_hash_seed():
    code = ("import json; from pangu_demo.data import make_example; "
            "print(json.dumps([make_example('train', i)['messages'] for i in range(40)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout
    assert json.loads(out) == [ex["messages"] for ex in TRAIN[:40]]


def test_train_mix_covers_all_tasks_and_modes():
    tasks = {ex["task"] for ex in TRAIN}
    assert tasks == {"one_op", "two_op", "facts", "counting", "comparing", "ordering", "text"}
    no_think = sum(ex["messages"][-2]["content"].endswith(NO_THINK) for ex in TRAIN)
    two_turn = sum(sum(m["role"] == "user" for m in ex["messages"]) == 2 for ex in TRAIN)
    assert 0.04 * N_TRAIN < no_think < 0.12 * N_TRAIN
    assert 0.04 * N_TRAIN < two_turn < 0.12 * N_TRAIN
    assert [ex["task"] for ex in EVAL[:5]] == list(EVAL_TASKS)


def test_eval_operands_never_occur_in_training():
    eval_pairs = {tuple(sorted(ex["meta"]["operands"])) for ex in EVAL if ex["task"] == "one_op"}
    eval_triples = {tuple(sorted(ex["meta"]["operands"])) for ex in EVAL if ex["task"] == "two_op"}
    assert len(eval_pairs) > 100 and len(eval_triples) > 150
    assert all(map(is_eval_operands, eval_pairs | eval_triples))
    train_pairs, train_triples = set(), set()
    for i in range(N_TRAIN, 4 * N_TRAIN):  # more training chats than the module-level sample
        ex = make_example("train", i)
        if ex["task"] == "one_op":
            train_pairs.add(tuple(sorted(ex["meta"]["operands"])))
        elif ex["task"] == "two_op":
            a, b, c = ex["meta"]["operands"]
            train_triples.add(tuple(sorted((a, b, c))))
            train_pairs.update({tuple(sorted((a, b))), tuple(sorted((ex["meta"]["mid"], c)))})
    assert not any(map(is_eval_operands, train_pairs | train_triples))
    assert not eval_pairs & train_pairs and not eval_triples & train_triples
    # The partition holds out a real share of operand tuples.
    share = sum(is_eval_operands((a, b)) for a in range(2, 100) for b in range(2, 100)) / 98 ** 2
    assert 0.09 < share < 0.16


@pytest.mark.parametrize("examples", [TRAIN, EVAL], ids=["train", "eval"])
def test_arithmetic_traces_are_correct(examples):
    checked = 0
    for ex in examples:
        if ex["task"] not in ("one_op", "two_op"):
            continue
        trace, answer_text = _last_reply(ex)
        meta = ex["meta"]
        if trace:  # no-think chats have no trace
            checked += _check_equations(trace)
            results = _check_digits(trace)
            if ex["task"] == "one_op":
                x, y = meta["operands"]
                assert results == [apply_op(meta["op"], x, y)]
            else:
                a, b, c = meta["operands"]
                mid = apply_op(meta["ops"][0], a, b)
                assert results == [mid, apply_op(meta["ops"][1], mid, c)]
            assert re.findall(r"= (\d+)", trace)[-1] == str(meta["result"])  # the last equation gives it
        assert ex["answer"] == str(meta["result"])
        assert check_answer(ex, answer_text), answer_text
        assert 0 <= meta["result"] <= 999
    assert checked > 1000


def test_fact_drills_are_right_and_avoid_held_out_pairs():
    drills = [make_example("train", i, task="facts") for i in range(300)]
    fact = re.compile(r"(\d+) ([-+×÷]) (\d+)( \+ 1)?(?: needs a borrow, (\d+) - \d+)? = (\d+)")
    seen = 0
    for ex in drills:
        trace, _ = _last_reply(ex)
        for m in fact.finditer(trace):
            x, op, y, carried, borrowed, r = m.groups()
            x, y, r = int(x), int(y), int(r)
            assert not is_eval_operands((x, y)), m.group(0)
            carry = 1 if carried else 0
            top = int(borrowed) if borrowed else x
            expect = x // y if op == "÷" else {"+": x + y + carry, "-": top - y, "×": x * y}[op]
            assert r == expect, m.group(0)
            seen += 1
        assert ex["answer"] is None or len(ex["answer"].split(", ")) >= 8
    assert seen > 1000
    with pytest.raises(ValueError):
        make_example("eval", 0, task="facts")


def test_carry_drills_add_a_carry_to_every_product_and_avoid_held_out_pairs():
    drills = [make_example("train", i, task="carry") for i in range(100)]
    item = re.compile(r"(\d+) × (\d+) = (\d+), (\d+) \+ (\d+) = (\d+)\.")
    for ex in drills:
        trace, answer = _last_reply(ex)
        if not trace:  # a no-think chat
            continue
        items = item.findall(trace)
        assert items and len(items) == trace.count("×"), trace
        results = []
        for d, m, product, again, carry, total in (map(int, found) for found in items):
            assert product == d * m == again and 1 <= carry < m and total == product + carry
            assert not is_eval_operands((d, m)) and not is_eval_operands((product, carry))
            results.append(total)
        assert ex["answer"] == ", ".join(map(str, results))
        assert check_answer(ex, answer)
    with pytest.raises(ValueError):
        make_example("eval", 0, task="carry")


def test_other_tasks_answers_are_consistent():
    for ex in TRAIN + EVAL:
        trace, answer_text = _last_reply(ex)
        if ex["task"] == "text":
            assert ex["answer"] is None and len(answer_text.split()) >= 5
            continue
        assert check_answer(ex, answer_text), (ex["answer"], answer_text)
        if ex["task"] == "ordering" and trace:
            values = ex["meta"]["values"]
            got = [int(v) for v in ex["answer"].split(", ")]
            assert got in (sorted(values), sorted(values, reverse=True))
        if ex["task"] == "comparing" and trace:
            x, y = ex["meta"]["values"]
            assert f"{max(x, y)} is more than {min(x, y)}" in trace
        if ex["task"] == "counting" and trace:
            marks = re.findall(r"\((\d+)\)", trace)
            assert [int(m) for m in marks] == list(range(1, len(marks) + 1))
            assert len(marks) == int(ex["answer"])


def test_reply_format():
    for ex in TRAIN + EVAL:
        msgs = ex["messages"]
        assert msgs[-1]["role"] == "assistant" and msgs[-2]["role"] == "user"
        content = msgs[-1]["content"]
        assert content.startswith(THINK_START) and content.count(THINK_END) == 1
        trace, answer_text = split_reply(content)
        assert answer_text.strip()
        if msgs[-2]["content"].endswith(NO_THINK):
            assert trace == ""
        else:
            assert trace.strip()
        for m in msgs[:-1]:
            if m["role"] == "assistant":  # history goes back without its trace
                assert m["content"].startswith(THINK_START + THINK_END)
        if any(m["role"] == "system" for m in msgs):
            assert msgs[0]["role"] == "system"
    for ex in EVAL:  # eval chats: single turn, thinking on
        assert [m["role"] for m in ex["messages"] if m["role"] != "system"] == ["user", "assistant"]
        assert not ex["messages"][-2]["content"].endswith(NO_THINK)


def test_check_answer_accepts_right_and_rejects_wrong():
    by_task = {ex["task"]: ex for ex in EVAL}
    one = by_task["one_op"]
    r = int(one["answer"])
    assert check_answer(one, f"The answer is {r}.")
    assert check_answer(one, f"{THINK_START}blah{THINK_END}So it is {r} apples.[unused10]")
    assert not check_answer(one, f"The answer is {r + 1}.")
    assert not check_answer(one, f"It is {r}, no wait, {r + 10}.")
    assert not check_answer(one, "I do not know.")
    cmp_ = by_task["comparing"]
    assert check_answer(cmp_, f"{cmp_['answer']} has more.")
    assert not check_answer(cmp_, f"{cmp_['meta']['other']} has more.")
    assert not check_answer(cmp_, f"{cmp_['answer']} or {cmp_['meta']['other']}.")
    order = by_task["ordering"]
    assert check_answer(order, f"The order is {order['answer']}.")
    assert not check_answer(order, "The order is " + ", ".join(reversed(order["answer"].split(", "))) + ".")
    with pytest.raises(ValueError):
        check_answer(make_example("eval", 0, task="text"), "anything")


def test_a_counting_answer_about_something_else_is_wrong():
    counts = [ex for ex in EVAL if ex["task"] == "counting"]
    letter = next(ex for ex in counts if "letter" in ex["meta"])
    n, asked, word = letter["answer"], letter["meta"]["letter"], letter["meta"]["word"]
    other = "z" if asked != "z" else "q"
    assert check_answer(letter, f"The letter {asked} appears {n} times in '{word}'.")
    assert check_answer(letter, f"I count {n}.")
    assert not check_answer(letter, f"The letter {other} appears {n} times in '{word}'.")
    assert not check_answer(letter, f"The letter {asked} appears {n} times in 'not{word}'.")
    listed = [ex for ex in counts if ex["meta"].get("not_named")]
    assert listed, "no list-counting question in the evaluation sample"
    for ex in listed:
        assert not check_answer(ex, f"{ex['meta']['not_named'][0].capitalize()} appears {ex['answer']} times.")


def test_text_chats_use_held_out_works_for_eval():
    train_works = {ex["meta"]["work"] for ex in TRAIN if ex["task"] == "text"}
    eval_works = {ex["meta"]["work"] for ex in eval_set(40, task="text")}
    assert eval_works and not train_works & eval_works


def test_tokenizer_training_round_trips(tmp_path):
    from pangu_demo.tokenizer import PanguTokenizer
    from pangu_demo.tokenizer_train import train_tokenizer

    out = train_tokenizer(tmp_path / "tok", vocab_size=1000, n_examples=2000)
    tok = PanguTokenizer.from_pretrained(out)
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "auto_map" not in config and config["tokenizer_class"] == "PanguTokenizer"
    for key, entry in config["added_tokens_decoder"].items():
        assert tok.sp.piece_to_id(entry["content"]) == int(key)
    for ex in (TRAIN[1], TRAIN[2], EVAL[1]):
        text = tok.apply_chat_template(ex["messages"], add_generation_prompt=False)
        assert "系统：" in text and "用户：" in text and "助手：" in text
        ids = tok.encode(text)
        assert ids[0] == tok.ids.bos and tok.ids.think_start in ids and tok.ids.think_end in ids
        assert tok.sp.unk_id() not in ids
        assert tok.decode(ids[1:]) == text
    digits = [tok.sp.id_to_piece(i) for i in tok.encode("12 + 345 = 357", add_bos=False)]
    assert all(len(p.lstrip("▁")) <= 1 for p in digits if any(ch.isdigit() for ch in p))
    assert tok.decode(tok.encode("[unused9]系统：x\ny[unused10]", add_bos=False)) == "[unused9]系统：x\ny[unused10]"


def test_a_mix_changes_the_task_shares_and_keeps_the_default_data():
    counts = {}
    mix = parse_mix("counting=60,one_op=0")
    assert mix["counting"] == 60 and mix["one_op"] == 0 and mix["two_op"] == TRAIN_MIX["two_op"]
    for i in range(600):
        task = make_example("train", i, mix=mix)["task"]
        counts[task] = counts.get(task, 0) + 1
    assert "one_op" not in counts
    default = sum(ex["task"] == "counting" for ex in TRAIN[:600])
    assert counts["counting"] > 3 * default  # about 60/176 of the chats instead of 3/100
    assert [make_example("train", i, mix=parse_mix("")) for i in range(50)] == TRAIN[:50]


@pytest.mark.parametrize("bad", ["counting", "nosuchtask=3", "counting=x", "one_op=-1"])
def test_a_bad_mix_is_refused_with_a_message(bad):
    with pytest.raises(ValueError, match="mix"):
        parse_mix(bad)


def test_the_steps_are_fixed_by_the_numbers():
    """Everything up to the result is one wording, so a digit's place in the reply follows from the operands;
    the wording varies only after the result and in the answer."""
    from pangu_demo.data import OPENER, compute_steps

    for op, x, y in [("add", 87, 45), ("sub", 61, 29), ("mul", 52, 8), ("div", 84, 7)]:
        variants = {" ".join(compute_steps(op, x, y, random.Random(seed))[1]) for seed in range(20)}
        assert len(variants) == 1, variants
    tails = set()
    for ex in TRAIN:
        trace, _ = _last_reply(ex)
        if ex["task"] == "one_op" and trace:
            m = ex["meta"]
            eq, steps, _ = compute_steps(m["op"], *m["operands"], random.Random(0))
            head = " ".join([OPENER.format(eq=eq), *steps])
            assert trace.startswith(head), (trace, head)
            tails.add(trace[len(head):])
    assert len(tails) >= 5  # the words after the result still vary


def test_copy_drills_say_the_list_back() -> None:
    drills = [make_example("train", i, task="echo") for i in range(200)]
    for ex in drills:
        trace, answer = _last_reply(ex)
        shown = ", ".join(ex["meta"]["items"])
        assert shown in ex["messages"][-2]["content"]
        no_think = ex["messages"][-2]["content"].endswith(NO_THINK)
        assert (trace == "" if no_think else trace.endswith(shown + ".")) and answer.endswith(shown + ".")
    firsts = {ex["meta"]["items"][0] for ex in drills}
    assert len(firsts) > 50  # drawn at random: copied, not guessed
    assert any(ex["messages"][-2]["content"].startswith(ex["meta"]["items"][0]) for ex in drills)
    with pytest.raises(ValueError):
        make_example("eval", 0, task="echo")

"""Deterministic synthetic "slow thinking" chats for training and evaluating the demo's small model.

Every example is a pure function of (split, index, seed). Arithmetic traces always follow the same
column / long-division algorithm with single-digit facts, so a small model can carry it over to operand
pairs it never saw: the eval split draws only operand tuples for which `is_eval_operands` is true and
the train split never does.
"""

from __future__ import annotations

import random
import re
import string
import zlib
from collections.abc import Callable, Iterator
from functools import lru_cache

from .corpus import EVAL_WORKS, load_works

THINK_START, THINK_END = "[unused16]", "[unused17]"
NO_THINK = " /no_think"
TASKS = ("one_op", "two_op", "facts", "carry", "counting", "comparing", "ordering", "text", "echo")
EVAL_TASKS = ("one_op", "two_op", "counting", "comparing", "ordering")
TRAIN_MIX = {"one_op": 34, "two_op": 38, "facts": 14, "counting": 3, "comparing": 3, "ordering": 3, "text": 5}
SYM = {"add": "+", "sub": "-", "mul": "×", "div": "÷"}
PLACES = ("ones", "tens", "hundreds", "thousands")


# -- the eval / train partition ----------------------------------------------------------------------
def is_eval_operands(operands: tuple[int, ...]) -> bool:
    """About 1 in 8 operand multisets belong to eval; the key ignores order and operation (stricter)."""
    key = ",".join(str(x) for x in sorted(operands)).encode()
    return zlib.crc32(key) % 8 == 0


# -- words ---------------------------------------------------------------------------------------------
_IRREGULAR = {"leaf": "leaves", "shelf": "shelves", "sheep": "sheep", "fish": "fish", "child": "children",
              "mouse": "mice", "potato": "potatoes", "tomato": "tomatoes", "mango": "mangoes",
              "person": "people", "goose": "geese", "loaf": "loaves", "km": "km", "tooth": "teeth"}


def plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        word = _IRREGULAR[last]
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        word = last[:-1] + "ies"
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def count_of(n: int, noun: str) -> str:
    return f"{n} {noun if n == 1 else plural(noun)}"


class _Fmt(string.Formatter):
    """`{a:apple}` -> "3 apples"; `{a:@}` uses the chat's item, `{a:@c}` its container."""

    def __init__(self, item: str, cont: str) -> None:
        super().__init__()
        self.nouns = {"@": item, "@c": cont}

    def format_field(self, value: object, spec: str) -> str:
        if spec and isinstance(value, int):
            return count_of(value, self.nouns.get(spec, spec))
        return super().format_field(value, spec)


NAMES = [("Anna", "she"), ("Ben", "he"), ("Claire", "she"), ("David", "he"), ("Emma", "she"), ("Felix", "he"),
         ("Grace", "she"), ("Hugo", "he"), ("Isla", "she"), ("Jack", "he"), ("Kate", "she"), ("Leo", "he"),
         ("Mia", "she"), ("Noah", "he"), ("Olivia", "she"), ("Paul", "he"), ("Rosa", "she"), ("Sam", "he"),
         ("Tara", "she"), ("Umar", "he"), ("Vera", "she"), ("Will", "he"), ("Yara", "she"), ("Zack", "he"),
         ("Lily", "she"), ("Omar", "he"), ("Nina", "she"), ("Tom", "he"), ("Priya", "she"), ("Ravi", "he"),
         ("Sofia", "she"), ("Max", "he"), ("Chloe", "she"), ("Ethan", "he"), ("Amara", "she"), ("Liam", "he"),
         ("Hana", "she"), ("Kenji", "he"), ("Lucia", "she"), ("Mateo", "he"), ("Zoe", "she"), ("Oscar", "he")]
THINGS = ["marble", "sticker", "book", "pencil", "card", "shell", "coin", "stamp", "balloon", "flower", "toy car",
          "crayon", "button", "ribbon", "candle", "bead", "ticket", "feather", "rock", "puzzle", "kite", "badge",
          "comic", "leaf", "postcard", "paper clip", "sock", "brush", "toy", "battery"]
FOODS = ["apple", "cookie", "cupcake", "muffin", "cherry", "strawberry", "peach", "orange", "lemon", "egg",
         "pancake", "biscuit", "plum", "banana", "potato", "tomato", "mango", "carrot", "sandwich", "grape"]
CONTAINERS = ["box", "bag", "basket", "jar", "crate", "pack", "tray", "bucket", "bowl", "tin"]
BUYABLES = ["toy", "book", "hat", "kite", "ball", "game", "scarf", "lamp", "cake", "plant"]


def _context(rng: random.Random, pool: list[str] | None = None) -> dict:
    (name, he), (name2, _) = rng.sample(NAMES, 2)
    item = rng.choice(pool or rng.choice([THINGS, FOODS]))
    cont = rng.choice(CONTAINERS)
    his, him = ("her", "her") if he == "she" else ("his", "him")
    return {"name": name, "name2": name2, "he": he, "He": he.capitalize(), "his": his, "His": his.capitalize(),
            "him": him, "item": item, "items": plural(item), "cont": cont, "conts": plural(cont),
            "thing": rng.choice(BUYABLES)}


# -- arithmetic traces ---------------------------------------------------------------------------------
def _digits(n: int) -> list[int]:
    return [int(c) for c in reversed(str(n))]  # ones first


def _column(place: int, work: str, write: int, carry: int, word: str = "carry") -> str:
    more = f", {word} {carry}" if carry else ""
    return f"{PLACES[place].capitalize()}: {work}, write {write}{more}."


def _add_steps(x: int, y: int) -> list[str]:
    dx, dy = _digits(x), _digits(y)
    n, carry, out = max(len(dx), len(dy)), 0, []
    for i in range(n):
        terms = [dx[i] if i < len(dx) else 0, dy[i] if i < len(dy) else 0] + ([1] if carry else [])
        s = sum(terms)
        work = " + ".join(map(str, terms)) + f" = {s}"
        if i == n - 1:  # the last column writes its whole sum
            out.append(_column(i, work, s, 0))
        else:
            carry = s // 10
            out.append(_column(i, work, s % 10, carry))
    return out


def _sub_steps(x: int, y: int) -> list[str]:
    # The borrow is added to the lower digit, so no column ever shows a negative number.
    dx, dy = _digits(x), _digits(y)
    borrow, out = 0, []
    for i, top in enumerate(dx):
        low = dy[i] if i < len(dy) else 0
        parts = []
        if borrow:
            parts.append(f"{low} + 1 = {low + 1}")
            low += 1
        if top >= low:
            parts.append(f"{top} - {low} = {top - low}")
            write, borrow = top - low, 0
        else:
            parts.append(f"{top} - {low} needs a borrow, {top + 10} - {low} = {top + 10 - low}")
            write, borrow = top + 10 - low, 1
        out.append(_column(i, ", ".join(parts), write, borrow, "borrow"))
    return out


def _mul_steps(x: int, m: int) -> list[str]:
    dx, carry, out = _digits(x), 0, []
    for i, d in enumerate(dx):
        p = d * m
        work = f"{d} × {m} = {p}"
        if carry:
            work += f", {p} + {carry} = {p + carry}"
            p += carry
        if i == len(dx) - 1:
            out.append(_column(i, work, p, 0))
        else:
            carry = p // 10
            out.append(_column(i, work, p % 10, carry))
    return out


def _div_steps(n: int, d: int) -> list[str]:
    rem, out = 0, []
    for i, c in enumerate(str(n)):
        cur = rem * 10 + int(c)
        q, rem = divmod(cur, d)
        fact = f"{cur} ÷ {d} = {q} remainder {rem}."
        if i == 0:
            out.append(f"Start with {cur}: {fact}")
        else:
            out.append(f"Bring down {c} to make {cur}. {fact}")
    return out


def canonical(op: str, x: int, y: int) -> tuple[int, int]:
    """Multiplication is always written with the longer factor first (single-digit multiplier)."""
    if op == "mul" and (len(str(y)) > len(str(x)) or (len(str(x)) == len(str(y)) and y > 9)):
        return y, x
    return x, y


def apply_op(op: str, x: int, y: int) -> int:
    return {"add": x + y, "sub": x - y, "mul": x * y, "div": x // y}[op]


# Wordings the data once drew from and no longer use, with how many there were. Their draws are still made
# (and thrown away), so that the held-out questions, drawn from the same stream, stay the same ones.
OLD_WORDINGS = {"openers": 6, "why_places": 2, "results": 4, "two_step_phrasings": 4}


def _unused_draw(rng: random.Random, n: int) -> None:
    rng.randrange(n)


def compute_steps(op: str, x: int, y: int, rng: random.Random,
                  old_step_wordings: int = 3) -> tuple[str, list[str], int]:
    """(equation, sentences of the fixed algorithm, result) for x op y. `old_step_wordings`: how many wordings
    of the steps this call once drew from (see OLD_WORDINGS).

    The steps have one wording: where a digit sits in the reply then follows from the numbers alone, so a
    denoising forward can fill the steps in parallel without guessing how long the words before them are."""
    x, y = canonical(op, x, y)
    _unused_draw(rng, old_step_wordings)
    steps = {"add": _add_steps, "sub": _sub_steps, "mul": _mul_steps, "div": _div_steps}[op](x, y)
    r = apply_op(op, x, y)
    eq = f"{x} {SYM[op]} {y}"
    _unused_draw(rng, OLD_WORDINGS["results"])
    steps.append(f"So {eq} = {r}.")
    return eq, steps, r


def valid_step(op: str, x: int, y: int) -> bool:
    """Operands the algorithms are written for: results 0..999, single-digit multiplier, whole quotient."""
    x, y = canonical(op, x, y)
    if op == "add":
        return x + y <= 999
    if op == "sub":
        return x >= y
    if op == "mul":
        return 2 <= y <= 9 and x * y <= 999
    return 2 <= y <= 12 and x % y == 0


# -- one-operation word problems -------------------------------------------------------------------------
# (question, story answer, item pool or fixed noun). Fields: a, b, r and the names of _context.
ONE_OP: dict[str, list[tuple[str, str, object]]] = {
    "add": [
        ("{name} has {a:@}. {He} gets {b:@} more. How many {items} does {he} have now?",
         "{name} has {r:@} now.", None),
        ("{name} picked {a:@} in the morning and {b:@} in the afternoon. How many {items} did {he} pick in all?",
         "{He} picked {r:@} in all.", FOODS),
        ("There are {a:@} in one {cont} and {b:@} in another {cont}. How many {items} are there altogether?",
         "There are {r:@} altogether.", None),
        ("{name} has {a:@} and {name2} has {b:@}. How many {items} do they have together?",
         "Together they have {r:@}.", None),
        ("A shop sold {a:@} on Monday and {b:@} on Tuesday. How many {items} did it sell on the two days?",
         "The shop sold {r:@}.", None),
        ("{name} read {a:page} yesterday and {b:page} today. How many pages has {he} read?",
         "{He} has read {r:page}.", None),
        ("A bus has {a:passenger}. At the next stop {b} more get on. How many passengers are on the bus now?",
         "There are {r:passenger} on the bus now.", None),
        ("{name} is {a} years old. How old will {he} be in {b} years?", "{He} will be {r} years old.", None),
        ("{name} walked {a} km on Saturday and {b} km on Sunday. How far did {he} walk in total?",
         "{He} walked {r} km.", None),
        ("{name} had {a:@}. {name2} gave {him} {b:@}. How many {items} does {name} have now?",
         "{name} has {r:@}.", None),
        ("A farm has {a:cow} and {b:sheep}. How many animals are on the farm?",
         "There are {r:animal} on the farm.", None),
        ("{name} scored {a:point} in the first game and {b:point} in the second. "
         "How many points did {he} score in total?", "{He} scored {r:point}.", None),
        ("There are {a:boy} and {b:girl} in a class. How many children are in the class?",
         "There are {r:child} in the class.", None),
        ("{name} saved {a:coin} last week and {b:coin} this week. How many coins has {he} saved?",
         "{He} has saved {r:coin}.", None),
        ("A garden has {a:rose} and {b:tulip}. How many flowers are in the garden?",
         "The garden has {r:flower}.", None),
        ("What is {a} + {b}?", "{a} + {b} = {r}.", None),
        ("Calculate {a} + {b}.", "The sum is {r}.", None),
        ("What is the sum of {a} and {b}?", "The sum is {r}.", None),
        ("Add {a} and {b}.", "{a} plus {b} is {r}.", None),
        ("How much is {a} plus {b}?", "It is {r}.", None),
        ("{a} + {b} = ?", "{a} + {b} = {r}.", None),
    ],
    "sub": [
        ("{name} has {a:@}. {He} gives {b:@} to {name2}. How many {items} does {name} have left?",
         "{name} has {r:@} left.", None),
        ("There were {a:@} in a {cont}. {name} took {b} out. How many {items} are still in the {cont}?",
         "There are {r:@} in the {cont}.", None),
        ("{name} had {a:coin}. {He} spent {b:coin} on a {thing}. How many coins does {he} have now?",
         "{He} has {r:coin} now.", None),
        ("A bus had {a:passenger}. At the stop, {b} got off. How many passengers are on the bus now?",
         "There are {r:passenger} on the bus.", None),
        ("{name} baked {a:@}. {His} friends ate {b} of them. How many {items} are left?",
         "{r:@} are left." , ["cookie", "cupcake", "muffin", "pancake", "biscuit", "pie", "tart", "bun"]),
        ("A book has {a:page}. {name} has read {b:page}. How many pages are left to read?",
         "{He} has {r:page} left to read.", None),
        ("{name} is {a} years old and {name2} is {b} years old. How much older is {name}?",
         "{name} is {r:year} older.", None),
        ("A tree had {a:leaf}. The wind blew away {b} of them. How many leaves are left on the tree?",
         "There are {r:leaf} left.", None),
        ("{name} needs {a:point} to win. {He} has {b:point}. How many more points does {he} need?",
         "{He} needs {r:point} more.", None),
        ("There are {a:bird} on a wire. {b} of them fly away. How many birds are left?",
         "{r:bird} are left on the wire.", None),
        ("A shop had {a:@}. It sold {b} of them. How many {items} does the shop have left?",
         "The shop has {r:@} left.", None),
        ("{name} ran {a} km and {name2} ran {b} km. How many more km did {name} run?",
         "{name} ran {r} km more.", None),
        ("A class has {a:student}. {b} of them are away today. How many students are in class today?",
         "{r:student} are in class today.", None),
        ("{name} wants to collect {a:@}. {He} already has {b}. How many more does {he} need?",
         "{He} needs {r:@} more.", THINGS),
        ("The temperature was {a} degrees at noon and fell by {b} degrees by night. How warm was it at night?",
         "It was {r:degree} at night.", None),
        ("A car park has {a:car}. Then {b} of them leave. How many cars are still there?",
         "{r:car} are still there.", None),
        ("What is {a} - {b}?", "{a} - {b} = {r}.", None),
        ("Calculate {a} - {b}.", "The difference is {r}.", None),
        ("What is {a} minus {b}?", "{a} minus {b} is {r}.", None),
        ("Subtract {b} from {a}.", "The result is {r}.", None),
        ("What is the difference between {a} and {b}?", "The difference is {r}.", None),
        ("{a} - {b} = ?", "{a} - {b} = {r}.", None),
    ],
    # g groups of s each; the trace writes the longer factor first.
    "mul": [
        ("{name} has {g:@c} with {s:@} in each. How many {items} does {he} have?",
         "{He} has {r:@}.", None),
        ("There are {g:row} of chairs with {s:chair} in each row. How many chairs are there?",
         "There are {r:chair}.", None),
        ("{name} buys {g:pack} of {items}. Each pack has {s:@}. How many {items} does {he} buy?",
         "{He} buys {r:@}.", THINGS),
        ("A {thing} costs {s:coin}. How many coins do {g} of them cost?", "They cost {r:coin}.", None),
        ("{name} reads {s:page} every day. How many pages does {he} read in {g:day}?",
         "{He} reads {r:page}.", None),
        ("Each {cont} holds {s:@}. How many {items} are in {g:@c}?", "There are {r:@} in all.", None),
        ("A spider has 8 legs. How many legs do {g:spider} have?", "They have {r:leg}.", 8),
        ("{name} makes a {s} egg omelet every morning. How many eggs does {he} eat in {g:day}?",
         "{He} eats {r:egg}.", None),
        ("A cafe has {g:table} with {s:chair} at each table. How many chairs are there?",
         "There are {r:chair}.", None),
        ("A car has 4 wheels. How many wheels do {g:car} have?", "They have {r:wheel}.", 4),
        ("{name} plants {g:row} of tulips with {s:tulip} in each row. How many tulips does {he} plant?",
         "{He} plants {r:tulip}.", None),
        ("A week has 7 days. How many days are there in {g:week}?", "There are {r:day}.", 7),
        ("{name} earns {s:coin} for every hour of work. How many coins does {he} earn in {g:hour}?",
         "{He} earns {r:coin}.", None),
        ("Each student needs {s:pencil}. How many pencils do {g:student} need?",
         "They need {r:pencil}.", None),
        ("A box of crayons has {s:crayon}. How many crayons are in {g:box}?", "There are {r:crayon}.", None),
        ("{name} walks {s} km every day. How far does {he} walk in {g:day}?", "{He} walks {r} km.", None),
        ("What is {g} × {s}?", "{g} × {s} = {r}.", None),
        ("Calculate {g} × {s}.", "The product is {r}.", None),
        ("What is {g} times {s}?", "{g} times {s} is {r}.", None),
        ("Multiply {g} by {s}.", "The result is {r}.", None),
        ("What is the product of {g} and {s}?", "The product is {r}.", None),
        ("{g} × {s} = ?", "{g} × {s} = {r}.", None),
    ],
    # a shared into b equal parts of r.
    "div": [
        ("{name} shares {a:@} equally among {b:friend}. How many {items} does each friend get?",
         "Each friend gets {r:@}.", None),
        ("{a:@} are packed equally into {b:@c}. How many {items} are in each {cont}?",
         "Each {cont} has {r:@}.", None),
        ("A teacher has {a:pencil} for {b:student}. Each student gets the same number. "
         "How many pencils does each student get?", "Each student gets {r:pencil}.", None),
        ("{name} has {a:@} and puts them in groups of {b}. How many groups does {he} make?",
         "{He} makes {r:group}.", None),
        ("A rope is {a} metres long. It is cut into {b} equal pieces. How long is each piece?",
         "Each piece is {r:metre} long.", None),
        ("{a:student} sit at tables of {b}. How many tables do they fill?", "They fill {r:table}.", None),
        ("{name} read {a:page} in {b:day}, the same number each day. How many pages did {he} read each day?",
         "{He} read {r:page} each day.", None),
        ("{name} has {a:egg} and puts {b} eggs in each box. How many boxes does {he} fill?",
         "{He} fills {r:box}.", None),
        ("{a:child} are split into {b:team} of equal size. How many children are in each team?",
         "Each team has {r:child}.", None),
        ("{name} earned {a:coin} in {b:day}, the same amount each day. How many coins did {he} earn each day?",
         "{He} earned {r:coin} each day.", None),
        ("How many weeks are there in {a:day}?", "That is {r:week}.", 7),
        ("{name} cuts a cake into {a:piece} and shares them equally among {b:plate}. "
         "How many pieces go on each plate?", "Each plate gets {r:piece}.", None),
        ("A trip of {a} km is split into {b} equal parts. How long is each part?", "Each part is {r} km.", None),
        ("{name} paid {a:coin} for {b:@}. Each one cost the same. How much did one {item} cost?",
         "One {item} cost {r:coin}.", BUYABLES),
        ("{name} has {a:sticker} and puts {b} on each page of an album. How many pages does {he} fill?",
         "{He} fills {r:page}.", None),
        ("What is {a} ÷ {b}?", "{a} ÷ {b} = {r}.", None),
        ("Calculate {a} ÷ {b}.", "The quotient is {r}.", None),
        ("What is {a} divided by {b}?", "{a} divided by {b} is {r}.", None),
        ("Divide {a} by {b}.", "The result is {r}.", None),
        ("How many times does {b} go into {a}?", "It goes in {r} times.", None),
        ("{a} ÷ {b} = ?", "{a} ÷ {b} = {r}.", None),
    ],
}
# Said after the result, where its length moves no digit of the steps.
OP_WHY = {"add": ["The amounts are put together, so it is an addition.", "This was an addition.", ""],
          "sub": ["Some are taken away, so it is a subtraction.", "This was a subtraction.", ""],
          "mul": ["These are equal groups, so it is a multiplication.", "This was a multiplication.", ""],
          "div": ["It is shared equally, so it is a division.", "This was a division.", ""]}
OPENER = "We need {eq}."
GENERIC_ANSWERS = ["The answer is {r}.", "So the answer is {r}.", "The result is {r}.", "It comes to {r}.",
                   "{r}.", "That makes {r}."]


def _draw_pair(op: str, rng: random.Random, fixed: int | None) -> tuple[int, int]:
    """Operands in story order: add (a, b); sub (a, b) with a > b; mul (g, s); div (a, b) with b | a."""
    if op == "add":
        return rng.randint(2, 99), rng.randint(2, 99)
    if op == "sub":  # results of at least 2 keep "are left" grammatical
        a = rng.randint(4, 99)
        return a, rng.randint(2, a - 2)
    if op == "mul":
        m = fixed or rng.randint(2, 9)
        x = rng.randint(2, 99 if rng.random() < 0.8 else 9)
        return (x, m) if fixed or rng.random() < 0.5 else (m, x)
    d = fixed or rng.randint(2, 12)  # both operands have at most two digits
    q = rng.randint(2, 99 // d)
    return q * d, d


def _want(split: str) -> Callable[[tuple[int, ...]], bool]:
    return (lambda t: is_eval_operands(t)) if split == "eval" else (lambda t: not is_eval_operands(t))


def _one_op(rng: random.Random, split: str) -> dict:
    op = rng.choice(list(ONE_OP))
    question, story_answer, pool = rng.choice(ONE_OP[op])
    fixed = pool if isinstance(pool, int) else None
    want = _want(split)
    while not want(pair := _draw_pair(op, rng, fixed)):
        pass
    assert want(pair)
    ctx = _context(rng, pool if isinstance(pool, list) else None)
    x, y = pair
    eq, steps, r = compute_steps(op, x, y, rng)
    fields = {**ctx, "a": x, "b": y, "g": x, "s": y, "r": r}
    fmt = _Fmt(ctx["item"], ctx["cont"])
    _unused_draw(rng, OLD_WORDINGS["openers"])
    why = rng.choice(OP_WHY[op])
    if why:
        _unused_draw(rng, OLD_WORDINGS["why_places"])
    answer = fmt.format(story_answer if rng.random() < 0.6 else rng.choice(GENERIC_ANSWERS), **fields)
    trace = " ".join([OPENER.format(eq=eq), *steps] + ([why] if why else []))
    return {"question": fmt.format(question, **fields), "trace": trace, "answer_text": answer, "task": "one_op",
            "answer": str(r), "meta": {"op": op, "operands": pair, "result": r}}


# -- two-operation word problems -------------------------------------------------------------------------
# (ops, question, first step, second step, answer, fixed b). Result r1 = a op1 b, r = r1 op2 c.
TWO_OP: list[tuple[tuple[str, str], str, str, str, str, int | None]] = [
    (("add", "sub"), "{name} has {a:@}. {He} buys {b} more and then gives {c} to {name2}. "
     "How many {items} does {name} have now?", "after buying", "after giving some away",
     "{name} has {r:@} now.", None),
    (("sub", "add"), "{name} had {a:@}. {He} lost {b} of them, then found {c} more. "
     "How many {items} does {he} have now?", "after losing some", "after finding more", "{He} has {r:@} now.", None),
    (("add", "add"), "{name} picked {a:@} on Monday, {b} on Tuesday and {c} on Wednesday. "
     "How many {items} did {he} pick in total?", "Monday and Tuesday", "adding Wednesday",
     "{He} picked {r:@} in total.", None),
    (("sub", "sub"), "A shop has {a:@}. It sells {b} in the morning and {c} in the afternoon. "
     "How many {items} are left?", "after the morning", "after the afternoon", "{r:@} are left.", None),
    (("mul", "add"), "{name} buys {a:@c} with {b:@} in each, and {c} loose {items}. "
     "How many {items} does {he} have?", "the {items} in the {conts}", "adding the loose ones",
     "{He} has {r:@}.", None),
    (("mul", "sub"), "There are {a:@c} of {items} with {b} in each. {name} gives away {c} of the {items}. "
     "How many {items} are left?", "all the {items}", "after giving some away", "{r:@} are left.", None),
    (("mul", "mul"), "{name} makes a {c} egg omelet every morning. How many eggs does {he} eat in {a:week}?",
     "the days", "the eggs", "In that time {he} eats {r:egg}.", 7),
    (("mul", "mul"), "{name} eats {c:@} every day. How many {items} does {he} eat in {a:week}?",
     "the days", "the {items}", "{He} eats {r:@}.", 7),
    (("mul", "mul"), "A shop has {a:shelf} with {b:@c} on each shelf. Each {cont} holds {c:@}. "
     "How many {items} are in the shop?", "the {conts}", "the {items}", "The shop has {r:@}.", None),
    (("div", "add"), "{name} shares {a:@} equally among {b:friend}. Then each friend gets {c} more. "
     "How many {items} does each friend have?", "one share", "adding the extra",
     "Each friend has {r:@}.", None),
    (("div", "sub"), "{a:@} are packed equally into {b:@c}. Then {c} are taken out of one {cont}. "
     "How many {items} are left in that {cont}?", "one {cont}", "after taking some out",
     "{r:@} are left in that {cont}.", None),
    (("add", "div"), "{name} has {a:@} and {name2} has {b:@}. They share them all equally among {c:child}. "
     "How many {items} does each child get?", "all the {items}", "one share", "Each child gets {r:@}.", None),
    (("sub", "div"), "A baker makes {a:roll}. {b} of them are sold and the rest are packed equally into "
     "{c:bag}. How many rolls are in each bag?", "the rolls left", "one bag", "Each bag has {r:roll}.", None),
    (("add", "mul"), "{name} reads {a:page} in the morning and {b:page} in the evening every day. "
     "How many pages does {he} read in {c:day}?", "the pages in one day", "all the days",
     "{He} reads {r:page}.", None),
    (("sub", "mul"), "A ticket costs {a:coin}, but {name} has a coupon for {b:coin} off each ticket. "
     "How many coins does {he} pay for {c:ticket}?", "the price of one ticket", "all the tickets",
     "{He} pays {r:coin}.", None),
    (("mul", "div"), "{name} buys {a:pack} of {b:sticker} and shares them equally among {c:friend}. "
     "How many stickers does each friend get?", "all the stickers", "one share",
     "Each friend gets {r:sticker}.", None),
    (("mul", "add"), "{name} has {a} dozen eggs and {c:egg} more. How many eggs does {he} have?",
     "the eggs in the dozens", "adding the others", "{He} has {r:egg}.", 12),
    (("add", "sub"), "{name} has {a:coin}. {He} earns {b:coin} and then spends {c:coin} on a {thing}. "
     "How many coins does {he} have now?", "after earning", "after spending", "{He} has {r:coin} now.", None),
    (("sub", "add"), "A bus has {a:passenger}. At a stop {b} get off and {c} get on. "
     "How many passengers are on the bus now?", "after some get off", "after some get on",
     "There are {r:passenger} on the bus now.", None),
]
TWO_OP_PLAIN = ["What is ({a} {s1} {b}) {s2} {c}?", "Calculate ({a} {s1} {b}) {s2} {c}.",
                "Work out ({a} {s1} {b}) {s2} {c}.", "({a} {s1} {b}) {s2} {c} = ?"]
FIRST, THEN = "First {eq}.", "Then {eq}."
OUTROS = ["That takes two steps.", "Both steps are done.", "Two steps: {what1}, then {what2}.", ""]  # after the result


def _draw_triple(ops: tuple[str, str], rng: random.Random, fixed: int | None) -> tuple[int, int, int]:
    op1, op2 = ops
    while True:
        if op1 == "mul" and fixed:
            a, b = rng.randint(2, 9), fixed
        elif op1 == "mul":
            a, b = rng.randint(2, 9), rng.randint(2, 30)
            if rng.random() < 0.5:
                a, b = b, a
        else:
            a, b = _draw_pair(op1, rng, None)
        r1 = apply_op(op1, a, b)
        if op2 == "add":
            c = rng.randint(2, 99)
        elif op2 == "sub":
            c = rng.randint(2, min(r1 - 2, 99)) if r1 > 3 else 0
        elif op2 == "mul":
            c = rng.randint(2, 9)
        else:
            divisors = [d for d in range(2, 13) if r1 % d == 0 and r1 // d >= 2]
            c = rng.choice(divisors) if divisors else 0
        if c >= 1 and valid_step(op1, a, b) and valid_step(op2, r1, c) and apply_op(op2, r1, c) <= 999 \
                and (op2 != "sub" or c <= r1 - 2):
            return a, b, c


def _two_op(rng: random.Random, split: str) -> dict:
    ops, question, what1, what2, story_answer, fixed = rng.choice(TWO_OP)
    plain = rng.random() < 0.2
    while True:
        a, b, c = _draw_triple(ops, rng, fixed)
        r1 = apply_op(ops[0], a, b)
        if split == "eval" and is_eval_operands((a, b, c)):
            break
        # Train never computes an eval triple, nor an eval pair of the one-op set in either step.
        if split != "eval" and not any(map(is_eval_operands, [(a, b, c), (a, b), (r1, c)])):
            break
    ctx = _context(rng)
    fmt = _Fmt(ctx["item"], ctx["cont"])
    fields = {**ctx, "a": a, "b": b, "c": c}
    eq1, steps1, r1 = compute_steps(ops[0], a, b, rng, old_step_wordings=2)
    eq2, steps2, r = compute_steps(ops[1], r1, c, rng, old_step_wordings=2)
    fields["r"] = r
    if plain:
        question = rng.choice(TWO_OP_PLAIN).format(a=a, b=b, c=c, s1=SYM[ops[0]], s2=SYM[ops[1]])
        what1, what2 = "the brackets", "the rest"
        story_answer = rng.choice(GENERIC_ANSWERS)
    _unused_draw(rng, OLD_WORDINGS["two_step_phrasings"])
    outro = fmt.format(rng.choice(OUTROS).format(what1=what1, what2=what2), **fields)
    trace = " ".join([FIRST.format(eq=eq1), *steps1, THEN.format(eq=eq2), *steps2] + ([outro] if outro else []))
    answer = fmt.format(story_answer if rng.random() < 0.6 else rng.choice(GENERIC_ANSWERS), **fields)
    return {"question": fmt.format(question, **fields), "trace": trace, "answer_text": answer, "task": "two_op",
            "answer": str(r), "meta": {"ops": ops, "operands": (a, b, c), "mid": r1, "result": r}}


# -- counting, comparing, ordering -----------------------------------------------------------------------
WORDS = ["apple", "banana", "cherry", "strawberry", "bottle", "letter", "balloon", "pepper", "coffee", "butter",
         "mississippi", "committee", "success", "address", "puzzle", "rabbit", "kitten", "summer", "winter",
         "garden", "teacher", "elephant", "umbrella", "pineapple", "tomato", "potato", "banner", "dinner",
         "window", "yellow", "happiness", "bookkeeper", "parallel", "assessment", "cinnamon", "giraffe",
         "hippopotamus", "mammal", "raccoon", "tattoo", "pizza", "jazz", "level", "banana split", "cookie",
         "mirror", "sheep", "needle", "balloons", "occurrence", "vanilla", "chocolate", "penguin", "zebra",
         "monkey", "orange", "purple", "rainbow", "river", "mountain", "castle", "dragon", "wizard", "forest"]
CATEGORIES = {"fruits": ["apple", "pear", "plum", "grape", "peach", "lemon", "mango", "cherry"],
              "animals": ["cat", "dog", "horse", "cow", "fox", "owl", "bear", "goat"],
              "colours": ["red", "blue", "green", "yellow", "pink", "brown", "black", "white"],
              "tools": ["hammer", "saw", "drill", "spade", "rake", "wrench"]}
COUNT_ANSWERS = ["The answer is {r}.", "There are {r}.", "I count {r}.", "{r}."]


def _counting(rng: random.Random, split: str) -> dict:
    kind = rng.randrange(3)
    if kind == 0:
        word = rng.choice(WORDS)
        letters = [ch for ch in word if ch != " "]
        letter = rng.choice(letters) if rng.random() < 0.85 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        q = rng.choice(["How many times does the letter '{l}' appear in '{w}'?", "How many {l}'s are in '{w}'?",
                        "Count the letter {l} in the word '{w}'.", "How often does '{l}' occur in '{w}'?"])
        question = q.format(l=letter, w=word)
        n, marks = 0, []
        for ch in letters:
            if ch == letter:
                n += 1
                marks.append(f"{ch} ({n})")
            else:
                marks.append(ch)
        head = rng.choice(["Spell it out: ", "Letter by letter: ", "Go through the letters: "])
        trace = head + ", ".join(marks) + f". The letter {letter} appears {count_of(n, 'time')}."
        story = f"The letter {letter} appears {count_of(n, 'time')} in '{word}'."
        meta = {"letter": letter, "word": word}
    else:
        cat, members = rng.choice(list(CATEGORIES.items()))
        if kind == 1:  # one word repeated in a list
            vocab = rng.sample(members, rng.randint(2, 4))
            seq = [rng.choice(vocab) for _ in range(rng.randint(3, 9))]
            target = rng.choice(vocab)
            question = rng.choice(["How many times does '{t}' appear in this list: {s}?",
                                   "Count how often {t} occurs: {s}.", "In the list {s}, how many times is {t}?"]
                                  ).format(t=target, s=", ".join(seq))
            hits = [x == target for x in seq]
            meta = {"not_named": sorted(set(members) - {target})}
        else:  # members of a category among other words
            others = [w for c, ws in CATEGORIES.items() if c != cat for w in ws]
            seq = rng.sample(members, rng.randint(1, 4)) + rng.sample(others, rng.randint(1, 4))
            rng.shuffle(seq)
            question = rng.choice(["How many {c} are in this list: {s}?", "Count the {c} in: {s}.",
                                   "In the list {s}, how many are {c}?"]).format(c=cat, s=", ".join(seq))
            hits = [x in members for x in seq]
            meta = {"not_named": sorted({name for c in CATEGORIES if c != cat for name in (c, c[:-1])})}
        n, marks = 0, []
        for word, hit in zip(seq, hits, strict=True):
            n += hit
            marks.append(f"{word} ({n})" if hit else word)
        head = rng.choice(["One by one: ", "Going through the list: ", "Count them: "])
        if kind == 1:
            result = f"{target} appears {count_of(n, 'time')}"
            story = f"{target.capitalize()} appears {count_of(n, 'time')}."
        else:
            result = f"there {'is' if n == 1 else 'are'} {count_of(n, cat[:-1])}"
            story = f"There {'is' if n == 1 else 'are'} {count_of(n, cat[:-1])} in the list."
        trace = head + ", ".join(marks) + f". So {result}."
    answer = story if rng.random() < 0.6 else rng.choice(COUNT_ANSWERS).format(r=n)
    return {"question": question, "trace": trace, "answer_text": answer, "task": "counting", "answer": str(n),
            "meta": meta}


def compare_steps(x: int, y: int) -> list[str]:
    """Digit-by-digit comparison of two different whole numbers."""
    big, small = max(x, y), min(x, y)
    lx, ly = len(str(x)), len(str(y))
    if lx != ly:
        return [f"{x} has {count_of(lx, 'digit')} and {y} has {count_of(ly, 'digit')}, "
                f"so {big} is more than {small}."]
    out = [f"Both have {count_of(lx, 'digit')}."]
    for i in range(lx - 1, -1, -1):
        dx, dy = _digits(x)[i], _digits(y)[i]
        if dx == dy:
            out.append(f"The {PLACES[i]} are both {dx}.")
        else:
            out.append(f"Compare the {PLACES[i]}: {max(dx, dy)} is more than {min(dx, dy)}, "
                       f"so {big} is more than {small}.")
            break
    return out


def _comparing(rng: random.Random, split: str) -> dict:
    x = rng.randint(1, 99 if rng.random() < 0.8 else 999)
    y = rng.randint(max(1, x - 20), x + 20) if rng.random() < 0.6 else rng.randint(1, 999)
    if x == y:
        y += rng.choice([-1, 1]) if x > 1 else 1
    more = rng.random() < 0.5
    ctx = _context(rng)
    fmt = _Fmt(ctx["item"], ctx["cont"])
    names = rng.random() < 0.7
    if names:
        n1, n2 = ctx["name"], ctx["name2"]
        word = "more" if more else "fewer"
        question = fmt.format(rng.choice([
            "{n1} has {x:@} and {n2} has {y:@}. Who has {w}?",
            "{n1} collected {x:@}. {n2} collected {y:@}. Who collected {w} {items}?",
            "{n1} has {x:@}, and {n2} has {y}. Which of them has {w}?"]),
            n1=n1, n2=n2, x=x, y=y, w=word, **ctx)
        winner, loser = (n1, n2) if (x > y) == more else (n2, n1)
        first = f"{n1} has {x} and {n2} has {y}."
        answer = rng.choice([f"{winner} has {word}.", f"{winner}.", f"The answer is {winner}.",
                             f"{winner} has {word} {ctx['items']}."])
    else:
        word = rng.choice(["larger", "bigger", "greater"]) if more else "smaller"
        question = rng.choice(["Which is {w}, {x} or {y}?", "Which number is {w}: {x} or {y}?",
                               "Of {x} and {y}, which one is {w}?"]).format(w=word, x=x, y=y)
        winner, loser = (str(x), str(y)) if (x > y) == more else (str(y), str(x))
        first = f"Compare {x} and {y}."
        answer = rng.choice([f"{winner} is {word}.", f"The {word} number is {winner}.", f"{winner}."])
    steps = compare_steps(x, y)
    end = f"So {winner} has {word}." if names else f"So the {word} number is {winner}."
    return {"question": question, "trace": " ".join([first, *steps, end]), "answer_text": answer,
            "task": "comparing", "answer": winner, "meta": {"other": loser, "values": (x, y)}}


def _ordering(rng: random.Random, split: str) -> dict:
    nums = rng.sample(range(1, 100 if rng.random() < 0.8 else 1000), rng.randint(3, 5))
    up = rng.random() < 0.6
    shown = ", ".join(map(str, nums))
    if up:
        question = rng.choice(["Put these numbers in order from smallest to largest: {s}.",
                               "Sort {s} from smallest to largest.", "Order these from least to greatest: {s}.",
                               "Arrange {s} in increasing order."]).format(s=shown)
    else:
        question = rng.choice(["Put these numbers in order from largest to smallest: {s}.",
                               "Sort {s} from largest to smallest.", "Order these from greatest to least: {s}.",
                               "Arrange {s} in decreasing order."]).format(s=shown)
    word = "smallest" if up else "largest"
    left, steps, out = list(nums), [], []
    while len(left) > 1:
        pick = min(left) if up else max(left)
        steps.append(rng.choice(["The {w} of {l} is {p}.", "Among {l}, the {w} is {p}."]).format(
            w=word, l=", ".join(map(str, left)), p=pick))
        out.append(pick)
        left.remove(pick)
    steps.append(f"Only {left[0]} is left.")
    out.append(left[0])
    order = ", ".join(map(str, out))
    steps.append(f"So the order is {order}.")
    answer = rng.choice(["{o}.", "The order is {o}.", "From {w} on: {o}.", "In order: {o}."]).format(o=order, w=word)
    return {"question": question, "trace": " ".join(steps), "answer_text": answer, "task": "ordering",
            "answer": order, "meta": {"values": tuple(nums)}}


# -- Shakespeare -----------------------------------------------------------------------------------------
THEMES = ["love", "death", "night", "king", "honour", "blood", "heaven", "sleep", "crown", "fortune", "war",
          "heart", "grief", "fool", "music", "sea", "beauty", "time", "gold", "stars", "father", "daughter",
          "sword", "dream", "spring", "winter", "moon", "tears", "friend", "grave", "wine", "truth", "hope",
          "fear", "youth", "soul", "battle", "kingdom", "marriage", "mercy", "justice", "revenge", "storm"]
MAX_WORDS = 80


def _words(lines: list[str]) -> int:
    return sum(len(ln.split()) for ln in lines)


def _clip(lines: list[str], limit: int = MAX_WORDS) -> list[str]:
    out = []
    for ln in lines:
        if out and _words(out) + len(ln.split()) > limit:
            break
        out.append(ln)
    return out


@lru_cache(maxsize=2)
def _text_sources(split: str) -> list[tuple[str, list[list[str]], list[tuple[str, list[str]]]]]:
    """Per work of the split: (title, passages of 5+ lines, speeches of 30+ words)."""
    out = []
    for w in load_works():
        if (w.key in EVAL_WORKS) != (split == "eval"):
            continue
        if w.is_play:
            passages = [p for p in w.passages if len(p) >= 5]
        else:  # a poem is one long run of lines
            passages = [[ln for p in w.passages for ln in p]]
        out.append((w.title, passages, [s for s in w.speeches if _words(s[1]) >= 30]))
    return out


def _text(rng: random.Random, split: str) -> dict:
    title, passages, speeches = rng.choice(_text_sources(split))
    if rng.random() < 0.5 or not speeches:
        passage = rng.choice(passages)
        k = rng.randint(2, min(3, len(passage) - 3))
        start = rng.randrange(0, len(passage) - k - 1)  # leave at least two lines to continue
        given = _clip(passage[start:start + k], 30)
        rest = _clip(passage[start + len(given):])
        question = rng.choice(["Continue this passage:\n{p}", "Continue the text:\n{p}",
                               "What comes next?\n{p}", "Go on from these lines:\n{p}"]).format(p="\n".join(given))
        trace = rng.choice(["The lines come from {t}. I will continue in the same verse.",
                            "This is from {t}. I continue the passage.", "These lines are from {t}.",
                            "I know this passage from {t}; here is what follows."]).format(t=title)
        body = rest
    else:
        speaker, lines = rng.choice(speeches)
        body = _clip(lines)
        text_words = {w.strip(".,;:!?'-").lower() for ln in body for w in ln.split()}
        themes = [t for t in THEMES if t in text_words]
        if rng.random() < 0.5 or not themes:
            question = rng.choice(["Recite a speech by {s} from {t}.", "Give me some lines spoken by {s} in {t}.",
                                   "What does {s} say in {t}?", "Quote {s} from {t}."]).format(s=speaker, t=title)
            trace = rng.choice(["{s} speaks in {t}. Here is one of the speeches.",
                                "I will recite lines of {s} from {t}.", "A speech by {s}, from {t}."]
                               ).format(s=speaker, t=title)
        else:
            theme = rng.choice(themes)
            question = rng.choice(["Recite a passage about {k}.", "Give me some lines about {k}.",
                                   "Quote Shakespeare on {k}.", "Say something about {k} in the style of Shakespeare."]
                                  ).format(k=theme)
            trace = rng.choice(["A passage about {k}: {s} speaks these lines in {t}.",
                                "These lines on {k} are from {t}, spoken by {s}.",
                                "{s} talks of {k} in {t}."]).format(k=theme, s=speaker, t=title)
    return {"question": question, "trace": trace, "answer_text": "\n".join(body), "task": "text", "answer": None,
            "meta": {"work": title}}


# -- fact drills (training only) -------------------------------------------------------------------------
# The single-digit facts the traces are built from, many to a chat, in the traces' own wording: the word
# problems hold only a few each, and the facts are what a small model learns last.
FACT_ASKS = ["Work these out: {list}.", "Quick drill: {list}.", "What are {list}?", "Practise these facts: {list}.",
             "Tell me {list}."]
FACT_ANSWERS = ["{r}.", "The answers are {r}.", "In order: {r}.", "{r}, in that order."]


def _fact(op: str, rng: random.Random, carry_share: float) -> tuple[str, str, tuple[tuple[int, int], ...]]:
    """(question item, trace sentence, the operand pairs it shows) of one single-digit fact; `carry_share`: the
    share of products that also add a carry."""
    if op == "add":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        carry = rng.random() < 0.3
        terms = f"{a} + {b}" + (" + 1" if carry else "")
        return terms, f"{terms} = {a + b + carry}.", ((a, b),)
    if op == "sub":
        top, low = rng.randint(0, 9), rng.randint(0, 9)
        if top >= low:
            return f"{top} - {low}", f"{top} - {low} = {top - low}.", ((top, low),)
        return (f"{top} - {low}", f"{top} - {low} needs a borrow, {top + 10} - {low} = {top + 10 - low}.",
                ((top, low),))
    if op == "mul":
        d, m = rng.randint(0, 9), rng.randint(2, 9)
        if rng.random() < carry_share:  # the carry added to a product, as in the multiplication traces
            c = rng.randint(1, m - 1)
            return (f"{d} × {m} + {c}", f"{d} × {m} = {d * m}, {d * m} + {c} = {d * m + c}.",
                    ((d, m), (d * m, c)))
        return f"{d} × {m}", f"{d} × {m} = {d * m}.", ((d, m),)
    d = rng.randint(2, 12)
    cur = rng.randint(0, 10 * d - 1)
    return f"{cur} ÷ {d}", f"{cur} ÷ {d} = {cur // d} remainder {cur % d}.", ((cur, d),)


def _facts(rng: random.Random, split: str, op: str | None = None, carry_share: float = 0.3) -> dict:
    """8-14 facts of one operation (drawn unless given); `carry_share`: see `_fact`."""
    if split == "eval":
        raise ValueError("fact drills are a training task; the evaluation asks word problems")
    op = op or rng.choice(list(SYM))
    items, sentences, results = [], [], []
    n = rng.randint(8, 14)
    while len(items) < n:
        item, sentence, pairs = _fact(op, rng, carry_share)
        if any(map(is_eval_operands, pairs)):  # the held-out partition covers every operand pair we show
            continue
        items.append(item)
        sentences.append(sentence)
        results.append(sentence.rstrip(".").rsplit("= ", 1)[1])
    ask = rng.choice(FACT_ASKS).format(list=", ".join(items[:-1]) + " and " + items[-1])
    return {"question": ask, "trace": " ".join(sentences), "task": "facts", "answer": ", ".join(results),
            "answer_text": rng.choice(FACT_ANSWERS).format(r=", ".join(results)), "meta": {"op": op}}


ECHO_ASKS = ["Repeat these words: {s}.", "Say these back to me: {s}.", "Copy this list: {s}.",
             "{s}. Repeat that list.", "Read this list back: {s}.", "{s}. Say them back in the same order."]


def _echo(rng: random.Random, split: str) -> dict:
    """A copy drill: say back a list of names, words and numbers (training only, like the fact drills). The
    comparing and counting traces copy names and words from the question; items drawn at random can only be
    copied, not guessed. A trial with these drills did not teach the model to copy (see its card)."""
    if split == "eval":
        raise ValueError("copy drills are a training task; the evaluation asks word problems")
    pools = [[name for name, _ in NAMES], WORDS, THINGS + FOODS, [w for ws in CATEGORIES.values() for w in ws]]
    items = []
    for _ in range(rng.randint(2, 8)):
        pool = rng.choice(pools + [None])
        items.append(str(rng.randint(1, 999)) if pool is None else rng.choice(pool))
    shown = ", ".join(items)
    trace = rng.choice(["The list is {s}.", "In order: {s}.", "Word by word: {s}."]).format(s=shown)
    answer = rng.choice(["{s}.", "Here it is: {s}.", "The list again: {s}."]).format(s=shown)
    return {"question": rng.choice(ECHO_ASKS).format(s=shown), "trace": trace, "answer_text": answer,
            "task": "echo", "answer": shown, "meta": {"items": items}}


def _carries(rng: random.Random, split: str) -> dict:
    """Fact drills of one kind: a product plus a carry (`5 × 8 + 7`). Read autoregressively, the model's
    multiplication errors are mostly this step (`40 + 7 = 45`), which the other drills show least."""
    return {**_facts(rng, split, op="mul", carry_share=1.0), "task": "carry"}


# -- chats -----------------------------------------------------------------------------------------------
MAKERS: dict[str, Callable[[random.Random, str], dict]] = {
    "one_op": _one_op, "two_op": _two_op, "counting": _counting, "comparing": _comparing,
    "ordering": _ordering, "text": _text, "facts": _facts, "carry": _carries, "echo": _echo}
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a careful assistant who thinks step by step.",
                  "Answer the user's questions.", "You are a friendly tutor."]


def reply(trace: str, answer_text: str) -> str:
    return f"{THINK_START}{trace}{THINK_END}{answer_text}"


def split_reply(text: str) -> tuple[str, str] | None:
    """(trace, answer) of a reply `[unused16]trace[unused17]answer`, or None if malformed."""
    text = text.split("[unused10]", 1)[0]
    if not text.startswith(THINK_START) or text.count(THINK_END) != 1 or text.count(THINK_START) != 1:
        return None
    trace, answer = text[len(THINK_START):].split(THINK_END)
    return trace, answer


def _rng(*parts: object) -> random.Random:
    return random.Random("-".join(map(str, parts)))  # str seeds hash with SHA-512: stable across runs


def _pick_task(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def parse_mix(text: str) -> dict[str, float]:
    """TRAIN_MIX with some weights changed: "counting=8,text=4" (an empty text keeps TRAIN_MIX)."""
    mix = dict(TRAIN_MIX)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep or name.strip() not in TASKS:
                raise ValueError
            mix[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"bad mix item {item!r}: write task=weight with a task from {', '.join(TASKS)}") from None
    if any(w < 0 for w in mix.values()) or not any(mix.values()):
        raise ValueError("mix weights must be >= 0 and not all 0")
    return mix


def _chat(core: dict, rng: random.Random, mode: str, earlier: dict | None = None) -> dict:
    messages = []
    if rng.random() < 0.05:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    if earlier is not None:
        messages += [{"role": "user", "content": earlier["question"]},
                     {"role": "assistant", "content": reply("", earlier["answer_text"])}]
    if mode == "no_think":
        messages += [{"role": "user", "content": core["question"] + NO_THINK},
                     {"role": "assistant", "content": reply("", core["answer_text"])}]
    else:
        messages += [{"role": "user", "content": core["question"]},
                     {"role": "assistant", "content": reply(core["trace"], core["answer_text"])}]
    return {"messages": messages, "task": core["task"], "answer": core["answer"], "meta": core["meta"]}


def make_example(split: str, index: int, seed: int = 0, task: str | None = None,
                 mix: dict[str, float] | None = None) -> dict:
    """One chat: {"messages", "task", "answer", "meta"}; the last message is the reply to learn.

    train: `mix` (default TRAIN_MIX) of tasks, ~10% no-think and ~10% two-turn chats among the non-text tasks.
    eval: think-mode single-turn chats cycling over EVAL_TASKS (or only `task`), eval operands only.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    rng = _rng(seed, split, task or "mix", index)
    if split == "eval":
        task = task or EVAL_TASKS[index % len(EVAL_TASKS)]
        return _chat(MAKERS[task](rng, split), rng, "think")
    task = task or _pick_task(rng, mix or TRAIN_MIX)
    core = MAKERS[task](rng, split)
    mode, earlier = "think", None
    if task != "text":
        u = rng.random()
        if u < 0.1:
            mode = "no_think"
        elif u < 0.2:
            earlier = MAKERS[rng.choice(EVAL_TASKS)](rng, split)
    return _chat(core, rng, mode, earlier)


def iter_examples(split: str, start: int = 0, seed: int = 0) -> Iterator[dict]:
    i = start
    while True:
        yield make_example(split, i, seed)
        i += 1


def eval_set(n: int, seed: int = 0, task: str | None = None, start: int = 0) -> list[dict]:
    """Held-out chats `start` to `start + n - 1`: think-mode, single turn, operand tuples never seen in training."""
    return [make_example("eval", i, seed, task) for i in range(start, start + n)]


_INT = re.compile(r"\d+")


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def _counts_the_asked_thing(meta: dict, answer_text: str) -> bool:
    """A counting answer that names what it counted must name what was asked: 'The letter e appears
    0 times in 'pepper'' is wrong for the letter m in 'yellow', whatever the number."""
    if "letter" in meta:
        letters = re.findall(r"\bletter '?(\w)\b", answer_text)
        quoted = re.findall(r"'([^']+)'", answer_text)
        return all(x == meta["letter"] for x in letters) and all(w == meta["word"] for w in quoted)
    return not any(_mentions(answer_text.lower(), name) for name in meta.get("not_named", ()))


def check_answer(example: dict, answer_text: str) -> bool:
    """Does the answer part of a reply (the text after the trace) state the expected answer?"""
    if THINK_END in answer_text:
        answer_text = answer_text.rsplit(THINK_END, 1)[1]
    answer_text = answer_text.split("[unused10]", 1)[0]
    expected, task = example["answer"], example["task"]
    if expected is None:
        raise ValueError(f"{task} examples have no checkable answer")
    if task in ("ordering", "facts", "carry"):  # a list of numbers, in order
        return _INT.findall(answer_text) == _INT.findall(expected)
    if task == "comparing":
        other = example["meta"]["other"]
        return _mentions(answer_text, expected) and not _mentions(answer_text, other)
    if task == "counting" and not _counts_the_asked_thing(example["meta"], answer_text):
        return False
    numbers = _INT.findall(answer_text)
    return bool(numbers) and numbers[-1] == expected

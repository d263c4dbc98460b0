"""The page's settings, messages and links, checked without a page (pangu_demo.controls)."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from pangu_demo import controls

DEFAULTS = ("diffusion", "confidence_threshold", 0.9, 1, 0.0, 1.0, 0, 64, 0)  # the settings controls, in order


@pytest.mark.parametrize(("seed", "message"), [(None, "Seed must be a number"), ("abc", "Seed must be a number"),
                                               (10**20, "seed must be a whole number"),
                                               (-1, "seed must be a whole number")])
def test_impossible_seeds_are_refused_in_words(seed, message) -> None:
    with pytest.raises(ValueError, match=message):
        controls.make_config(*DEFAULTS[:8], seed)


@pytest.mark.parametrize(("index", "value", "message"), [(7, 33.7, "Max new tokens must be a whole number"),
                                                         (6, 2.5, "top_k must be a whole number"),
                                                         (7, float("inf"), "Max new tokens must be a whole number"),
                                                         (3, "two", "Small blocks per block must be a number"),
                                                         (2, True, "Threshold must be a number"),
                                                         (6, True, "top_k must be a number")])
def test_whole_number_settings_refuse_fractions_in_words(index: int, value: object, message: str) -> None:
    settings = list(DEFAULTS)
    settings[index] = value
    with pytest.raises(ValueError, match=message):
        controls.make_config(*settings)


def test_whole_numbers_arrive_as_floats_or_text() -> None:
    cfg = controls.make_config(*DEFAULTS[:6], 5.0, 256.0, "123456789012345678901"[:19])  # a slider sends floats
    assert (cfg.top_k, cfg.max_new_tokens, cfg.seed) == (5, 256, 1234567890123456789)


def test_the_largest_seed_is_accepted() -> None:
    assert controls.make_config(*DEFAULTS[:8], 2**63 - 1).seed == 2**63 - 1


def test_preset_descriptions_follow_the_presets() -> None:
    assert controls.describe_preset(controls.PRESETS["Throughput"]) == "confidence_threshold 0.9, 1 small block"
    assert controls.describe_preset(controls.PRESETS["Coding"]) == "entropy, 32 small blocks, top_p 0.8, T 1"
    # Any preset's description names its own settings, so the radio's note cannot drift from PRESETS.
    for preset in controls.PRESETS.values():
        text = controls.describe_preset(preset)
        assert text.startswith(preset["algorithm"]) and f"{preset['num_small_blocks']} small block" in text


def test_the_page_caps_max_new_tokens_for_a_long_context_model() -> None:
    assert controls.max_new_limit(32768) == controls.MAX_NEW_TOKENS_PAGE == 8192  # openPangu-R-7B-Diffusion
    assert controls.max_new_limit(1024) == 992  # whole blocks of 32, and one block of context left for the question
    assert controls.max_new_limit(1000) == 960
    assert controls.max_new_limit(None) == 992  # no model loaded yet
    assert controls.max_new_default(False, 8192) == 1024 and controls.max_new_default(True, 8192) == 256


LINKED = ("diffusion", "elastic", 0.7, 4, 0.5, 0.9, 20, 64, 7)


def test_no_link_is_made_with_a_seed_the_page_would_refuse() -> None:
    with pytest.raises(ValueError, match=r"Seed must be from 0 to 9,007,199,254,740,991 here \(got 1,152"):
        controls.link_query("Hi", "on", "", DEFAULTS[:8] + (2**60,))


def test_a_link_gives_back_the_question_and_the_settings_it_was_made_with() -> None:
    text = 'Is 3 + 4 = 7? & what about "8"? <b>'
    query = controls.link_query(text, "auto", "Be brief.", LINKED)
    parsed = urllib.parse.parse_qs(query.removeprefix("?"), keep_blank_values=True)
    values, problems, changes = controls.read_link({k: v[0] for k, v in parsed.items()}, 1024)
    assert problems == changes == []
    assert values == {"prompt": text, "think": "auto", "system": "Be brief.",
                      **dict(zip(controls.LINK_SETTINGS, LINKED, strict=True))}


@pytest.mark.parametrize(("check", "text", "words"), [
    (controls.check_prompt, "\u200b\u200c\u200d\ufeff \n", "Type a message first"),  # nothing to read
    (controls.check_prompt, "hi \ud800 there", "The message holds a character that is not text (a lone surrogate, "
                                               "at position 4)"),
    (controls.check_prompt, 5, "The message must be text (got int)"),
    (controls.check_system, "\udfff", "The system message holds a character that is not text"),
    (controls.check_system, 5, "The system message must be text (got int)"),
    (controls.check_history, [["Hi", "\ud800"]], "An answer of history holds a character that is not text"),
])
def test_text_the_tokenizer_cannot_take_is_refused_in_words(check, text, words) -> None:
    """A lone surrogate (only an API call can send one) reached the tokenizer, which raised; zero-width characters
    alone were answered as a question."""
    with pytest.raises(ValueError, match=re.escape(words)):
        check(text)
    assert controls.check_prompt("Hi \u200b there") == "Hi \u200b there"  # inside text they stay
    assert controls.check_system("\u200b") is None  # an invisible system message is none


def test_a_link_is_refused_for_settings_that_could_not_run() -> None:
    with pytest.raises(ValueError, match="Small blocks per block must be one of 1, 2, 4"):
        controls.link_query("Hi", "on", "", ("diffusion", "confidence_threshold", 0.9, 3, 0.0, 1.0, 0, 64, 0))
    with pytest.raises(ValueError, match="Type a message first"):
        controls.link_query("  ", "on", "", LINKED)


@pytest.mark.parametrize(("query", "values", "words"), [
    ({"threshold": "0.7", "utm_source": "x"}, {"threshold": 0.7}, []),  # unknown keys are someone else's
    ({"prompt": "", "system": " "}, {}, []),  # empty is no value
    ({"threshold": "2", "prompt": "Hi"}, {"prompt": "Hi"},
     ["settings were left out, all of them, since a run takes them together: Threshold must be from 0 to 1 here "
      "(got 2)."]),
    ({"max_new_tokens": "64"}, {"max_new_tokens": 64}, []),
    ({"max_new_tokens": "40"}, {"max_new_tokens": 64}, ["Max new tokens 40 is taken as 64: the page counts whole"]),
    ({"max_new_tokens": "2048"}, {}, ["Max new tokens must be from 32 to 1,024 here (got 2,048)."]),
    ({"max_new_tokens": "10"}, {"max_new_tokens": 32}, ["Max new tokens 10 is taken as 32"]),  # the slider's least
    ({"max_new_tokens": "-5"}, {}, ["Max new tokens must be from 32 to 1,024 here (got -5)."]),
    ({"temperature": "3", "seed": str(2**60)}, {},  # the engine takes them, the page's controls do not
     ["Temperature must be from 0 to 2 here (got 3). Seed must be from 0 to 9,007,199,254,740,991 here (got "
      "1,152,921,504,606,846,976)."]),
    ({"think": "maybe", "top_k": "2.5"}, {}, ["thinking setting was left out", "top_k must be a whole number"]),
    ({"threshold": "abc", "algorithm": "foo", "max_new_tokens": "99999", "seed": "1"}, {},  # every bad one named
     ["algorithm 'foo'; valid algorithms: confidence_threshold, entropy, low_confidence, topk_margin, elastic. "
      "Threshold must be a number (got 'abc'). Max new tokens must be from 32 to 1,024 here (got 99,999)."]),
    ({"max_new_tokens": "99999", "top_p": "0"}, {}, ["top_p must be from 0.05 to 1 here (got 0). Max new tokens"]),
])
def test_a_link_takes_what_it_can_and_says_what_it_left_out(query: dict, values: dict, words: list) -> None:
    got, problems, changes = controls.read_link(query, 1024)
    assert got == values
    said = problems + changes
    assert len(said) == len(words) and all(w in p for w, p in zip(words, said, strict=True)), said
    assert not [c for c in changes if "left out" in c]  # a change is not a refusal

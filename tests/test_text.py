"""English front end: numbers, abbreviations, punctuation, symbol sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rfspeech.data.text import (
    EOS_ID,
    PAD_ID,
    cardinal,
    normalize_text,
    num_symbols,
    ordinal,
    phonemizer_available,
    sequence_to_text,
    symbols,
    text_to_sequence,
    year,
)
from rfspeech.errors import ConfigError, DataError


@pytest.mark.parametrize("n,words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (42, "forty-two"), (100, "one hundred"),
    (101, "one hundred one"), (999, "nine hundred ninety-nine"), (1000, "one thousand"),
    (1234, "one thousand two hundred thirty-four"), (1_000_000, "one million"),
    (2_500_017, "two million five hundred thousand seventeen"), (-3, "minus three"),
])
def test_cardinal(n: int, words: str) -> None:
    assert cardinal(n) == words


@pytest.mark.parametrize("n,words", [
    (1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (5, "fifth"), (8, "eighth"), (9, "ninth"),
    (11, "eleventh"), (12, "twelfth"), (20, "twentieth"), (21, "twenty-first"), (22, "twenty-second"),
    (100, "one hundredth"), (103, "one hundred third"),
])
def test_ordinal(n: int, words: str) -> None:
    assert ordinal(n) == words


@pytest.mark.parametrize("n,words", [
    (1984, "nineteen eighty-four"), (1905, "nineteen oh five"), (1900, "nineteen hundred"),
    (2000, "two thousand"), (2007, "two thousand seven"), (2019, "twenty nineteen"), (1066, "ten sixty-six"),
])
def test_year(n: int, words: str) -> None:
    assert year(n) == words


@pytest.mark.parametrize("raw,expected", [
    ("It cost $3.50.", "it cost three dollars, fifty cents."),
    ("Only $1 each", "only one dollar each"),
    ("$0.05", "five cents"),
    ("£2", "two pounds"),
    ("€1.5", "one euro, fifty cents"),
    ("a $2.5 million deal", "a two point five million dollars deal"),
    ("pi is 3.14", "pi is three point one four"),
    ("0.5 litres", "zero point five litres"),
    ("50% off", "fifty percent off"),
    ("1,000,000 people", "one million people"),
    ("the 21st of May", "the twenty-first of may"),
    ("2nd and 3rd place", "second and third place"),
    ("in 1984 and 2005", "in nineteen eighty-four and two thousand five"),
    ("at 10:05 and 3:00", "at ten oh five and three o'clock"),
    ("it was -5 degrees", "it was minus five degrees"),
    ("agent 007", "agent zero zero seven"),
    ("room 42", "room forty-two"),
])
def test_numbers(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("raw,expected", [
    ("Mr. Smith met Mrs. Jones.", "mister smith met misess jones."),
    ("Dr. Who lives on St. Helena", "doctor who lives on saint helena"),
    ("Lt. Col. Brown, Jr.", "lieutenant colonel brown, junior"),
    ("cats vs. dogs etc.", "cats versus dogs et cetera"),
    ("fruit, e.g. apples", "fruit, for example apples"),
    ("MR. BIG", "mister big"),
])
def test_abbreviations(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("raw,expected", [
    ("\u201cQuoted,\u201d she said\u2026", "quoted, she said."),
    ("It\u2019s   a  caf\u00e9!", "it's a cafe!"),
    ("wait -- what?", "wait, what?"),
    ("one\u2014two", "one, two"),
    ("salt & pepper", "salt and pepper"),
    ("[aside] ok ; fine", "(aside) ok; fine"),
    ("tabs\tand\nnewlines", "tabs and newlines"),
    ("emoji \U0001F600 dropped", "emoji dropped"),
])
def test_punctuation(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalised_text_uses_only_symbols() -> None:
    allowed = set(symbols()) - {symbols()[PAD_ID], symbols()[EOS_ID]}
    text = normalize_text("Dr. Ångström paid £1,234.56 on 3/4/1999 at 5:30 p.m. (50%) — “wow” #1 & co.!")
    assert set(text) <= allowed
    assert "doctor angstrom paid one thousand two hundred thirty-four pounds, fifty-six pence" in text


def test_sequence_round_trip() -> None:
    seq = text_to_sequence("Hello, World!")
    assert seq[-1] == EOS_ID and PAD_ID not in seq
    assert sequence_to_text(seq) == "hello, world!"
    assert text_to_sequence("Hello", add_eos=False)[-1] != EOS_ID
    assert max(seq) < num_symbols() == len(symbols())


def test_symbol_set_layout() -> None:
    syms = symbols("chars")
    assert syms[PAD_ID] == "_" and syms[EOS_ID] == "~"
    assert len(set(syms)) == len(syms)
    with pytest.raises(ConfigError):
        symbols("klingon")


@pytest.mark.parametrize("raw", ["", "   ", "...", "\U0001F600"])
def test_unspeakable_text_is_an_error(raw: str) -> None:
    with pytest.raises(DataError):
        text_to_sequence(raw)


@pytest.mark.skipif(phonemizer_available(), reason="phonemizer installed: the error path does not apply")
def test_phonemes_without_phonemizer_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="phonemizer"):
        text_to_sequence("hello", symbol_set="phonemes")


@pytest.mark.skipif(not phonemizer_available(), reason="phonemizer not installed")
def test_phonemes_with_phonemizer() -> None:  # pragma: no cover - only where phonemizer exists
    seq = text_to_sequence("hello world", symbol_set="phonemes")
    assert seq[-1] == EOS_ID and len(seq) > 4


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_normalises_into_the_symbol_set(raw: str) -> None:
    allowed = set(symbols()) - {symbols()[PAD_ID], symbols()[EOS_ID]}
    text = normalize_text(raw)
    assert set(text) <= allowed
    assert text == text.strip(" ,") and "  " not in text
    try:
        seq = text_to_sequence(raw)
    except DataError:
        return
    assert seq[-1] == EOS_ID and PAD_ID not in seq[:-1] and sequence_to_text(seq) == text

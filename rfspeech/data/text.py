"""English text front end: normalisation and symbol sequences for the acoustic model.

The default symbol set is characters (lower-case letters, a few punctuation marks, space), which
needs no external tool. ``symbol_set="phonemes"`` uses IPA phonemes from the ``phonemizer``
package with its espeak backend; it is only available where that package is installed.

Normalisation (:func:`normalize_text`) spells out what a reader would say:

* numbers: cardinals (``42`` → ``forty-two``), grouped thousands (``1,000,000``), decimals
  (``3.14`` → ``three point one four``), ordinals (``21st`` → ``twenty-first``), years
  (``1984`` → ``nineteen eighty-four``, ``2005`` → ``two thousand five``), percentages, clock times,
  currency (``$3.50`` → ``three dollars, fifty cents``, ``£``, ``€``, ``$2.5 million``);
* abbreviations: ``Mr.``, ``Mrs.``, ``Dr.``, ``St.`` (saint), ``Jr.``, ``Lt.``, ``etc.``, ``vs.`` …;
* punctuation: typographic quotes and dashes mapped to the symbol set, accents folded to ASCII,
  symbols spoken as words (``&`` → ``and``), anything else dropped, whitespace collapsed.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence

from rfspeech.errors import ConfigError, DataError

PAD = "_"
EOS = "~"
PAD_ID = 0  # id of PAD in every symbol set (padding of batches, never produced by text_to_sequence)
EOS_ID = 1  # id of EOS in every symbol set
PUNCTUATION = "!'(),.:;?-"
SPACE = " "
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# IPA symbols espeak-ng produces for English (phonemizer's espeak backend, with stress marks).
_IPA = (
    "aeiouybdfhjklmnprstvwzæçðøħŋœɐɑɒɓɔɕɖɘəɚɛɜɝɞɟɠɡɢɣɤɥɦɧɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛ"
    "ʜʝʟʡʢʲˈˌːˑ̩̃θχᵻ"
)

SYMBOL_SETS = ("chars", "phonemes")


def symbols(symbol_set: str = "chars") -> list[str]:
    """The ordered symbol list of ``symbol_set``: pad (id 0), end of sentence (id 1), then the rest.

    Args:
        symbol_set: ``"chars"`` (default) or ``"phonemes"``.

    Raises:
        ConfigError: an unknown symbol set.
    """
    if symbol_set == "chars":
        return [PAD, EOS, *PUNCTUATION, SPACE, *LETTERS]
    if symbol_set == "phonemes":
        return [PAD, EOS, *PUNCTUATION, SPACE, *dict.fromkeys(_IPA)]
    raise ConfigError(f"symbol_set must be one of {list(SYMBOL_SETS)}, got {symbol_set!r}")


@functools.cache
def _symbol_to_id(symbol_set: str) -> dict[str, int]:
    return {s: i for i, s in enumerate(symbols(symbol_set))}


@functools.cache
def _speakable_ids(symbol_set: str) -> frozenset[int]:
    return frozenset(i for i, s in enumerate(symbols(symbol_set)) if i > EOS_ID and s not in PUNCTUATION + SPACE)


def num_symbols(symbol_set: str = "chars") -> int:
    """Size of the embedding table a model needs for ``symbol_set``."""
    return len(symbols(symbol_set))


# ---------------------------------------------------------------------------------------------
# Numbers to words
# ---------------------------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))


def _below_thousand(n: int) -> str:
    words = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words.append(f"{_ONES[hundreds]} hundred")
    if rest:
        if rest < 20:
            words.append(_ONES[rest])
        else:
            tens, ones = divmod(rest, 10)
            words.append(_TENS[tens] + (f"-{_ONES[ones]}" if ones else ""))
    return " ".join(words)


def cardinal(n: int) -> str:
    """Spell an integer in words (American style, no "and"): ``1234`` → ``one thousand two hundred thirty-four``.

    Numbers of a quadrillion or more are read digit by digit.
    """
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 1000:
        return _below_thousand(n) if n else "zero"
    if n >= 10**15:
        return " ".join(_ONES[int(c)] for c in str(n))
    words = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            words.append(f"{_below_thousand(count)} {name}")
    if n:
        words.append(_below_thousand(n))
    return " ".join(words)


_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}


def ordinal(n: int) -> str:
    """Spell an ordinal: ``1`` → ``first``, ``22`` → ``twenty-second``, ``100`` → ``one hundredth``."""
    words = cardinal(n)
    head, sep, last = words.rpartition(" ")
    stem, hyphen, unit = last.rpartition("-")
    if unit in _ORDINAL_IRREGULAR:
        unit = _ORDINAL_IRREGULAR[unit]
    elif unit.endswith("y"):
        unit = unit[:-1] + "ieth"
    else:
        unit += "th"
    return head + sep + stem + hyphen + unit


def year(n: int) -> str:
    """Read a year the way it is spoken: ``1984`` → ``nineteen eighty-four``, ``1905`` → ``nineteen oh five``,
    ``1900`` → ``nineteen hundred``, ``2000`` → ``two thousand``, ``2007`` → ``two thousand seven``,
    ``2019`` → ``twenty nineteen``. Other numbers fall back to :func:`cardinal`."""
    if not 1000 <= n <= 9999 or 2000 <= n < 2010 or n % 1000 == 0:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{cardinal(high)} hundred"
    if low < 10:
        return f"{cardinal(high)} oh {cardinal(low)}"
    return f"{cardinal(high)} {cardinal(low)}"


def _digits(s: str) -> str:
    return " ".join(_ONES[int(c)] for c in s)


def _decimal(s: str) -> str:
    whole, _, frac = s.partition(".")
    return f"{cardinal(int(whole or '0'))} point {_digits(frac)}"


def _number_words(s: str) -> str:
    """Words for a bare numeric string (may contain a decimal point)."""
    return _decimal(s) if "." in s else cardinal(int(s))


_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}


def _plural(n: int, one: str, many: str) -> str:
    return f"{cardinal(n)} {one if n == 1 else many}"


def _money(sign: str, amount: str) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[sign]
    whole, _, frac = amount.partition(".")
    units = int(whole or "0")
    # "$1.5" means a dollar fifty: cents are the first two fraction digits, zero-padded on the right.
    subunits = int((frac + "00")[:2]) if frac else 0
    if len(frac) > 2:  # "$0.125": not a price; read as a decimal amount
        return f"{_decimal(amount)} {many}"
    if units and subunits:
        return f"{_plural(units, one, many)}, {_plural(subunits, sub_one, sub_many)}"
    if subunits:
        return _plural(subunits, sub_one, sub_many)
    return _plural(units, one, many)


_RE_GROUPED = re.compile(r"(?<![0-9.])([0-9]{1,3}(?:,[0-9]{3})+)(?![0-9])")
_RE_MONEY_SCALE = re.compile(r"([$£€])\s?([0-9]*\.?[0-9]+)\s+(thousand|million|billion|trillion)\b", re.I)
_RE_MONEY = re.compile(r"([$£€])\s?([0-9]*\.?[0-9]+)")
_RE_TIME = re.compile(r"\b([0-9]{1,2}):([0-9]{2})\b(\s*[ap]\.?m\b\.?)?", re.I)
_RE_PERCENT = re.compile(r"([0-9]*\.?[0-9]+)\s?%")
_RE_DECIMAL = re.compile(r"(?<![0-9])([0-9]*\.[0-9]+)")
_RE_ORDINAL = re.compile(r"\b([0-9]+)(st|nd|rd|th)\b", re.I)
_RE_NEGATIVE = re.compile(r"(?<![\w)])-([0-9]+)")
_RE_NUMBER = re.compile(r"[0-9]+")


def _time(m: re.Match[str]) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours > 24 or minutes > 59:  # not a clock time ("12:75" in a score): read both numbers
        return f"{cardinal(hours)} {cardinal(minutes)}"
    suffix = ""
    if m.group(3):
        suffix = " a m" if m.group(3).strip().lower().startswith("a") else " p m"
    if minutes == 0:
        return cardinal(hours) + (suffix or " o'clock")
    if minutes < 10:
        return f"{cardinal(hours)} oh {cardinal(minutes)}{suffix}"
    return f"{cardinal(hours)} {cardinal(minutes)}{suffix}"


def _integer(m: re.Match[str]) -> str:
    s = m.group(0)
    n = int(s)
    # A four-digit number from 1000 to 2099 is almost always a year in running text.
    if len(s) == 4 and 1000 <= n <= 2099:
        return year(n)
    if len(s) > 1 and s.startswith("0"):  # "007", zip codes: digit by digit
        return _digits(s)
    return cardinal(n)


def normalize_numbers(text: str) -> str:
    """Spell out every number in ``text`` (currency, times, percentages, decimals, ordinals, years)."""
    text = _RE_GROUPED.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _RE_MONEY_SCALE.sub(
        lambda m: f"{_number_words(m.group(2))} {m.group(3).lower()} {_CURRENCIES[m.group(1)][1]}", text)
    text = _RE_MONEY.sub(lambda m: _money(m.group(1), m.group(2)), text)
    text = _RE_TIME.sub(_time, text)
    text = _RE_PERCENT.sub(lambda m: f"{_number_words(m.group(1))} percent", text)
    text = _RE_DECIMAL.sub(lambda m: _decimal(m.group(1)), text)
    text = _RE_ORDINAL.sub(lambda m: ordinal(int(m.group(1))), text)
    text = _RE_NEGATIVE.sub(lambda m: f"minus {m.group(1)}", text)
    return _RE_NUMBER.sub(_integer, text)


# ---------------------------------------------------------------------------------------------
# Abbreviations, punctuation, characters
# ---------------------------------------------------------------------------------------------

_ABBREVIATIONS = {
    "mrs": "misess", "mr": "mister", "ms": "miss", "dr": "doctor", "drs": "doctors", "st": "saint",
    "co": "company", "jr": "junior", "sr": "senior", "maj": "major", "gen": "general", "rev": "reverend",
    "lt": "lieutenant", "hon": "honorable", "sgt": "sergeant", "capt": "captain", "esq": "esquire",
    "ltd": "limited", "col": "colonel", "ft": "fort", "prof": "professor", "mt": "mount", "vs": "versus",
    "etc": "et cetera", "inc": "incorporated", "dept": "department", "jan": "january", "feb": "february",
    "aug": "august", "sept": "september", "oct": "october", "nov": "november", "dec": "december",
}
_RE_ABBREVIATION = re.compile(r"\b(" + "|".join(sorted(_ABBREVIATIONS, key=len, reverse=True)) + r")\.", re.I)
_RE_EG = re.compile(r"\be\.g\.", re.I)
_RE_IE = re.compile(r"\bi\.e\.", re.I)

_PUNCT_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": "", "\u201d": "", "\u201e": "", "\u201f": "", "\u2033": "", '"': "", "\u00ab": "", "\u00bb": "",
    "\u2013": ", ", "\u2014": ", ", "\u2015": ", ", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u2026": ".", "[": "(", "]": ")", "{": "(", "}": ")", "\u00a1": "", "\u00bf": "",
    "&": " and ", "+": " plus ", "@": " at ", "=": " equals ", "/": " ", "\\": " ", "_": " ", "*": " ",
    "#": " number ", "\u00e6": "ae", "\u00c6": "ae", "\u0153": "oe", "\u0152": "oe", "\u00df": "ss",
    "\u00f8": "o", "\u00d8": "o", "\u0131": "i", "\u0142": "l", "\u0141": "l", "\u00f0": "d", "\u00fe": "th",
}
_PUNCT_TABLE = str.maketrans(_PUNCT_MAP)
_RE_DOUBLE_DASH = re.compile(r"\s*-{2,}\s*")
_RE_SPACE_BEFORE_PUNCT = re.compile(r"\s+([!),.:;?])")
_RE_REPEATED_COMMA = re.compile(r"(,\s*){2,}")
_RE_WHITESPACE = re.compile(r"\s+")
_ALLOWED = set(PUNCTUATION + SPACE + LETTERS)


def fold_to_ascii(text: str) -> str:
    """Drop accents (``café`` → ``cafe``) and map typographic punctuation to plain ASCII."""
    text = text.translate(_PUNCT_TABLE)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def expand_abbreviations(text: str) -> str:
    """Expand ``Mr.``, ``Dr.``, ``St.``, ``e.g.`` … (case-insensitive; the full stop is consumed)."""
    text = _RE_EG.sub("for example", text)
    text = _RE_IE.sub("that is", text)
    return _RE_ABBREVIATION.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], text)


def normalize_text(text: str) -> str:
    """The English normalisation pipeline: what the character model reads.

    Returns lower-case text made only of letters, space and ``!'(),.:;?-``.
    """
    text = fold_to_ascii(text)
    text = _RE_DOUBLE_DASH.sub(", ", text)
    text = expand_abbreviations(text)
    text = normalize_numbers(text)
    text = text.lower()
    text = "".join(c if c in _ALLOWED else (" " if c.isspace() else "") for c in text)
    text = _RE_WHITESPACE.sub(" ", text)
    text = _RE_SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _RE_REPEATED_COMMA.sub(", ", text)
    return text.strip(" ,")


# ---------------------------------------------------------------------------------------------
# Phonemes (optional)
# ---------------------------------------------------------------------------------------------

def phonemizer_available() -> bool:
    """True where the ``phonemizer`` package (espeak backend) can be imported."""
    try:
        import phonemizer  # noqa: F401
    except ImportError:
        return False
    return True


def phonemize(text: str, language: str = "en-us") -> str:
    """Normalised text → IPA phonemes with stress marks (espeak backend of ``phonemizer``).

    Raises:
        ConfigError: ``phonemizer`` is not installed.
    """
    try:
        from phonemizer import phonemize as _phonemize
    except ImportError:
        raise ConfigError("symbol_set=phonemes needs the 'phonemizer' package with espeak-ng; "
                          "install it or use symbol_set=chars") from None
    return str(_phonemize(normalize_text(text), language=language, backend="espeak", strip=True,
                          preserve_punctuation=True, with_stress=True))


# ---------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------

def text_to_sequence(text: str, symbol_set: str = "chars", add_eos: bool = True) -> list[int]:
    """Normalise ``text`` and map it to symbol ids (pad is 0 and never produced; eos is 1).

    Args:
        text: raw English text.
        symbol_set: ``"chars"`` or ``"phonemes"`` (needs ``phonemizer``).
        add_eos: append the end-of-sentence symbol (models are trained with it).

    Raises:
        DataError: nothing speakable is left after normalisation.
        ConfigError: unknown symbol set, or phonemes without ``phonemizer``.
    """
    table = _symbol_to_id(symbol_set)
    units = phonemize(text) if symbol_set == "phonemes" else normalize_text(text)
    ids = [table[c] for c in units if c in table and table[c] > EOS_ID]
    if not _speakable_ids(symbol_set).intersection(ids):
        raise DataError(f"text {text[:60]!r} has nothing speakable after normalisation")
    if add_eos:
        ids.append(EOS_ID)
    return ids


def sequence_to_text(sequence: Iterable[int], symbol_set: str = "chars") -> str:
    """Map symbol ids back to a string (pad and end of sentence dropped)."""
    syms = symbols(symbol_set)
    return "".join(syms[int(i)] for i in sequence if int(i) > EOS_ID)


def batch_to_texts(tokens: Sequence[Sequence[int]], symbol_set: str = "chars") -> list[str]:
    """:func:`sequence_to_text` for each row of a padded batch."""
    return [sequence_to_text(row, symbol_set) for row in tokens]

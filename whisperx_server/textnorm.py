"""Reference tokens → the words an English acoustic model can align.

A token as written ("2026,", "COVID-19", "&", "$5", "—") becomes the ways it
may be read aloud, each a list of plain lower-case words: "2026" is
"twenty twenty six" or "two thousand (and) twenty six"; "&" is "and"; "—" is
nothing. The aligner picks the reading it hears and the server maps the words'
times back onto the token as written.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

from num2words import num2words

SYMBOLS = {
    "&": ["and"],
    "%": ["percent"],
    "+": ["plus"],
    "@": ["at"],
    "=": ["equals"],
    "°": ["degrees"],
    "#": ["number", "hash"],
    "×": ["times", "by"],
}
CURRENCIES = {"$": "dollars", "£": "pounds", "€": "euros", "¥": "yen"}
MAX_READINGS = 6
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'"})
_FRACTIONS = str.maketrans({"½": " a half", "¼": " a quarter", "¾": " three quarters"})
_PIECES = re.compile(r"\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th|s)?|[a-z']+|[^\sa-z'\d]", re.IGNORECASE)
_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$", re.IGNORECASE)
_PLURAL = re.compile(r"^([\d,]+)s$", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _with_and_without_and(text: str) -> list[list[str]]:
    words = _words(text)
    plain = [w for w in words if w != "and"]
    return [words, plain] if plain != words else [words]


_DIGITS = "zero one two three four five six seven eight nine".split()
LONGEST_NUMBER = 15  # digits; longer runs (ids, phone numbers) are read digit by digit


def _digit_by_digit(piece: str) -> list[list[str]]:
    """ "0123.45" → zero one two three point four five."""
    words = []
    for c in piece:
        if c == ".":
            words.append("point")
        elif c.isdecimal():
            words.append(_DIGITS[int(c)])
    return [words]


def _number_readings(piece: str) -> list[list[str]]:
    if sum(c.isdecimal() for c in piece) > LONGEST_NUMBER:
        return _digit_by_digit(piece)  # num2words overflows past ~400 digits anyway
    plural = _PLURAL.match(piece)
    if plural:  # "1990s", "90s"
        readings = []
        for words in _number_readings(plural.group(1)):
            last = words[-1]
            readings.append(words[:-1] + [last[:-1] + "ies" if last.endswith("y") else last + "s"])
        return readings
    ordinal = _ORDINAL.match(piece)
    if ordinal:
        return _with_and_without_and(num2words(int(ordinal.group(1)), to="ordinal"))
    digits = piece.replace(",", "")
    if "." in digits:
        whole, _, frac = digits.partition(".")
        return [_words(num2words(int(whole or 0))) + ["point"] + [_words(num2words(int(d)))[0] for d in frac]]
    value = int(digits)
    readings = []
    if len(digits) == 4 and 1100 <= value <= 2099:
        readings.append(_words(num2words(value, to="year")))
    readings += _with_and_without_and(num2words(value))
    return readings


def token_readings(token: str) -> list[list[str]]:
    """The ways one whitespace token may be spoken, most likely first; each a list of
    lower-case ``[a-z']+`` words. ``[]`` when the token is not spoken (punctuation)."""
    token = unicodedata.normalize("NFKD", token.translate(_APOSTROPHES).translate(_FRACTIONS))
    token = "".join(c for c in token if not unicodedata.combining(c))  # "Zürich" → "Zurich"
    parts: list[list[list[str]]] = []
    currency = None
    for piece in _PIECES.findall(token):
        if piece[0].isdecimal():  # isdigit() also takes numerals int() cannot read
            parts.append(_number_readings(piece))
            if currency:
                parts.append([[currency]])
                currency = None
        elif piece in CURRENCIES:
            currency = CURRENCIES[piece]
        elif piece in SYMBOLS:
            if not (parts and parts[-1] == [[w] for w in SYMBOLS[piece]]):  # "###" is one "#"
                parts.append([[w] for w in SYMBOLS[piece]])
        elif piece[0].isalpha() or piece[0] == "'":
            word = piece.lower().strip("'")
            if word and word.isascii():
                parts.append([[word]])
    if not parts:
        return []
    combos = itertools.islice(itertools.product(*parts), MAX_READINGS)
    readings = [[w for chunk in combo for w in chunk] for combo in combos]
    return [r for i, r in enumerate(readings) if r and r not in readings[:i]]


def is_spoken_word(token: str) -> bool:
    """False for tokens of symbols only ("&", "###", ":)"): a reader may skip them."""
    return any(c.isalnum() for c in token)


def token_words(token: str) -> list[str]:
    """The most likely reading of ``token`` (``[]`` when it is not spoken)."""
    readings = token_readings(token)
    return readings[0] if readings else []

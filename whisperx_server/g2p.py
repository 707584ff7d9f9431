"""Pronunciations for words missing from the pocketsphinx dictionary.

eSpeak NG (already embedded for speech) gives IPA for any spelling; this maps it
onto the CMU phone set the English acoustic model uses, so a name like "Qwen"
is aligned, not guessed.
"""

from __future__ import annotations

import unicodedata

from gpu_audio.espeak import espeak

IPA_TO_CMU = {
    "aɪ": "AY",
    "aʊ": "AW",
    "eɪ": "EY",
    "oʊ": "OW",
    "ɔɪ": "OY",
    "tʃ": "CH",
    "dʒ": "JH",
    "ɚ": "ER",
    "ɝ": "ER",
    "ɜ": "ER",
    "æ": "AE",
    "ɑ": "AA",
    "ɒ": "AA",
    "ɔ": "AO",
    "ɛ": "EH",
    "e": "EH",
    "ə": "AH",
    "ʌ": "AH",
    "ɐ": "AH",
    "ɪ": "IH",
    "ᵻ": "IH",
    "i": "IY",
    "ʊ": "UH",
    "u": "UW",
    "o": "OW",
    "a": "AA",
    "p": "P",
    "b": "B",
    "t": "T",
    "d": "D",
    "k": "K",
    "ɡ": "G",
    "g": "G",
    "f": "F",
    "v": "V",
    "θ": "TH",
    "ð": "DH",
    "s": "S",
    "z": "Z",
    "ʃ": "SH",
    "ʒ": "ZH",
    "h": "HH",
    "m": "M",
    "n": "N",
    "ŋ": "NG",
    "l": "L",
    "ɫ": "L",
    "ɹ": "R",
    "r": "R",
    "j": "Y",
    "w": "W",
    "ɾ": "T",
    "ʔ": "T",
    "x": "K",
    "ç": "HH",
    "ʍ": "W",
}
_DROP = {"ˈ", "ˌ", "ː", "ˑ", "'", ",", "-"}
_LONGEST = max(len(k) for k in IPA_TO_CMU)


def ipa_to_cmu(ipa: str) -> list[str]:
    """CMU phones for an IPA string (phoneme separators and stress marks ignored)."""
    chars = [c for c in unicodedata.normalize("NFD", ipa) if c not in _DROP and not unicodedata.combining(c)]
    text = "".join(chars)
    phones: list[str] = []
    i = 0
    while i < len(text):
        for size in range(_LONGEST, 0, -1):
            phone = IPA_TO_CMU.get(text[i : i + size])
            if phone:
                # "ɜːɹ" is one r-coloured vowel in the CMU set, not ER R.
                if not (phone == "R" and phones and phones[-1] == "ER"):
                    phones.append(phone)
                i += size
                break
        else:
            i += 1  # separator or a symbol with no English counterpart
    return phones


def pronounce(word: str) -> list[str]:
    """CMU phones for ``word`` from eSpeak NG's en-us rules ([] if none)."""
    return ipa_to_cmu(espeak().phonemes(word, "en-us"))

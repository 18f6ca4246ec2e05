"""What Qdrant's text index does to words besides splitting them: which characters a
word is made of, the stopword lists of ``stopwords``, and the stemmers of ``stemmer``.

- Words: Qdrant's word and prefix tokenizers split on every character that is not
  ``char::is_alphanumeric`` in Rust. Python's ``str.isalnum`` leaves out Unicode's
  Other_Alphabetic marks (Indic vowel signs, Arabic harakat), circled letters and
  letters newer than Python's Unicode tables; ``rust_alnum.json`` lists them, so that a
  Bengali, Nepali or Arabic word stays one token, as in Qdrant.
- Stopwords: ``stopwords.json`` holds Qdrant's own lists (its ``stop_words/<language>.rs``),
  verbatim.
- Stemmers: Qdrant stems with the rust-stemmers crate (1.2.0: older Snowball algorithms).
  ``py_rust_stemmers`` is Qdrant's Python binding of that same crate, so stems are the
  same by construction; the Python Snowball packages follow newer Snowball releases whose
  French (ë, ï), Russian (ё) and, from Snowball 3, Dutch, German, Romanian and
  Scandinavian stems differ. The binding leaves out Armenian, whose Snowball algorithm has
  not changed: ``snowballstemmer`` stems it as Qdrant does (checked word by word against
  Qdrant's segment code, as every language is: tests/test_text_index.py).
"""

from __future__ import annotations

import json
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Callable

_HERE = Path(__file__).parent

# The languages of ``stemmer.language`` (Qdrant's ``SnowballLanguage``), in their serde
# spelling; those of ``stopwords`` are the keys of stopwords.json.
SNOWBALL_LANGUAGES = (
    "arabic", "armenian", "danish", "dutch", "english", "finnish", "french", "german", "greek",
    "hungarian", "italian", "norwegian", "portuguese", "romanian", "russian", "spanish", "swedish",
    "tamil", "turkish",
)  # fmt: skip


@lru_cache(maxsize=1)
def _stopword_lists() -> dict[str, list[str]]:
    with open(_HERE / "stopwords.json", encoding="utf-8") as f:
        data = json.load(f)
    data.pop("_source", None)
    return data


def stopword_languages() -> tuple[str, ...]:
    return tuple(_stopword_lists())


def stopwords(language: str) -> list[str]:
    """Qdrant's stopword list for ``language`` (a ``Language`` name); KeyError if none."""
    return _stopword_lists()[language]


@lru_cache(maxsize=1)
def _word_runs() -> tuple[re.Pattern, re.Pattern]:
    """Runs of Python's word characters (``\\w``: alphanumerics and ``_``, split off
    afterwards) or of those Rust counts as alphanumeric and Python does not: one
    pattern for text within the Basic Multilingual Plane, as fast as ``\\w+`` (a
    character class reaching past it is matched range by range, five times slower),
    and one for any text."""
    with open(_HERE / "rust_alnum.json", encoding="utf-8") as f:
        ranges = json.load(f)["ranges"]

    def chars(rs) -> str:
        return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in rs)

    bmp = chars(r for r in ranges if r[1] <= 0xFFFF)
    return re.compile(rf"[\w{bmp}]+"), re.compile(rf"[\w{chars(ranges)}]+")


def words(text: str) -> list[str]:
    """The words of Qdrant's word tokenizer: maximal runs of characters that Rust's
    ``char::is_alphanumeric`` accepts."""
    bmp, anywhere = _word_runs()
    runs = (anywhere if text and max(text) > "\uffff" else bmp).findall(text)
    if "_" not in text:
        return runs
    return [w for run in runs for w in run.split("_") if w]


@lru_cache(maxsize=None)
def stemmer(language: str) -> Callable[[str], str]:
    """The Snowball stemmer Qdrant uses for ``language`` (a ``SnowballLanguage`` name):
    a function from a word to its stem. KeyError for another language."""
    if language not in SNOWBALL_LANGUAGES:
        raise KeyError(language)
    if language == "armenian":  # not in py_rust_stemmers; its Snowball algorithm is unchanged
        import snowballstemmer

        stem, lock = snowballstemmer.stemmer("armenian").stemWord, threading.Lock()

        def locked(word: str) -> str:  # a snowballstemmer object keeps state while stemming
            with lock:
                return stem(word)

        return locked
    import py_rust_stemmers

    return py_rust_stemmers.SnowballStemmer(language).stem_word

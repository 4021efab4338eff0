"""Drop training pairs whose question appears in an evaluation set.

Two tests, both on the final user turn (``question``):

* exact: equal after collapsing whitespace and casefolding;
* with ``ngram=N``: the two questions share any run of N words. Words are ``\\w+`` runs of the
  casefolded text, so punctuation and spacing do not hide an overlap. This is the GPT-3-style
  n-gram check (13 is a common choice); it is stricter than exact matching and can drop pairs
  that merely quote the same sentence. Questions shorter than N words only get the exact test.

Evaluation questions come from the rows that each evaluation source would itself use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from conj_train.errors import ConjError

_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Whitespace collapsed to single spaces, casefolded."""
    return " ".join(text.split()).casefold()


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word n-grams of ``text`` (casefolded ``\\w+`` words)."""
    words = _WORD.findall(text.casefold())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class Decontaminator:
    """Holds evaluation questions and tells whether a question matches one of them."""

    def __init__(self, questions: Iterable[str], ngram: int | None = None) -> None:
        if ngram is not None and ngram < 1:
            raise ConjError(f"--ngram must be a positive number of words, got {ngram}")
        self.ngram = ngram
        self.exact: set[str] = set()
        self.grams: set[tuple[str, ...]] = set()
        for q in questions:
            self.exact.add(normalize(q))
            if ngram:
                self.grams |= word_ngrams(q, ngram)

    @classmethod
    def from_sources(cls, sources: list[str], ngram: int | None = None) -> Decontaminator:
        """Load each evaluation source (format auto-detected) and collect its questions."""
        from conj_train.data import load_preferences

        questions = [r["question"] for src in sources for r in load_preferences(src).records]
        return cls(questions, ngram)

    def match(self, question: str) -> str | None:
        """``"exact"`` or ``"ngram"`` when the question is contaminated, else None."""
        if normalize(question) in self.exact:
            return "exact"
        if self.ngram and not self.grams.isdisjoint(word_ngrams(question, self.ngram)):
            return "ngram"
        return None

"""N-gram decontamination: keep evaluation text out of training text.

A training document is dropped when it shares any run of ``n`` consecutive words with an evaluation text (13
words, the usual choice for language-model training sets; words are lower-cased, whitespace-separated, and
WikiText's ``<unk>`` placeholders are left out so that runs of them do not count as shared text). This guards
against the shipped files overlapping (GLUE sentences quoting Wikipedia, say) and against a teacher model
reciting text it memorised. Words rather than subword tokens, because a tokenizer that splits numbers into
digits makes 13 tokens as short as "the 1970s and 1980s".
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_N = 13
IGNORED_WORDS = frozenset({"<unk>"})


def words(text: str) -> list[str]:
    """Lower-cased whitespace-separated words of ``text``, without ``IGNORED_WORDS``."""
    return [w for w in text.lower().split() if w not in IGNORED_WORDS]


def ngrams(text: str, n: int = DEFAULT_N) -> set[tuple[str, ...]]:
    """Every run of ``n`` consecutive words of ``text`` (empty when it has fewer than ``n``)."""
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def evaluation_ngrams(texts: Iterable[str], n: int = DEFAULT_N) -> set[tuple[str, ...]]:
    """The union of ``ngrams`` over every evaluation text."""
    out: set[tuple[str, ...]] = set()
    for text in texts:
        out |= ngrams(text, n)
    return out


def overlaps(text: str, forbidden: set[tuple[str, ...]], n: int = DEFAULT_N) -> bool:
    """Whether ``text`` contains any of the ``forbidden`` n-grams."""
    w = words(text)
    return any(tuple(w[i : i + n]) in forbidden for i in range(len(w) - n + 1))

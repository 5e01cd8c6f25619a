"""Text for the language-model comparison: a character corpus, its vocabulary, a split and windows of tokens.

The corpus is the Jargon File 4.4.7 (E. S. Raymond et al., 2003), 1,618,757 characters (155 distinct) of English
prose about hacker slang, read from Debian's ``jargon-text`` package (``apt-get install jargon-text``: 650 kB, no
dependencies), which installs it as ``/usr/share/doc/jargon-text/jargon.txt.gz``. Its licence (the package's
``copyright`` file): "This document (the Jargon File) is in the public domain, to be freely used, shared, and
modified", so it may be shipped, cut and quoted; cite it as "Jargon File 4.4.7". Any other UTF-8 text (``.txt``,
or ``.gz`` of one) loads through ``path=``.

>>> corpus = from_text("hello world, " * 40, val_fraction=0.25)
>>> corpus.vocab.size, len(corpus.train) + len(corpus.val)
(9, 520)
>>> corpus.vocab.decode(corpus.vocab.encode("hello"))
'hello'
>>> x, y = windows(corpus.train, batch_size=2, context=8, seed=0, step=0)
>>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())       # y is x shifted by one character
(torch.Size([2, 8]), True)

Where the file is looked for, in order (as :mod:`rbdlib.data` does for images): the ``root`` argument,
``$RBDLIB_DATA`` and ``$RBDLIB_DATA/jargon``, the user cache ``~/.cache/rbdlib/jargon``, then
``/usr/share/doc/jargon-text``; in each, ``jargon.txt.gz`` or ``jargon.txt``. (A minimal Docker image that excludes
``/usr/share/doc`` from packages drops the file: copy it into one of the other folders.) Reads are bounded: a file, or
what a ``.gz`` unpacks to, of more than ``max_bytes`` (16 MiB) is refused unread, so is text that is not UTF-8.
"""

from __future__ import annotations

import gzip
import hashlib
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import DatasetFormatError, DatasetNotFoundError

__all__ = ["Vocabulary", "TextCorpus", "load_corpus", "from_text", "find_corpus", "read_text", "corpus_dirs",
           "windows", "eval_windows", "CORPUS_FILES", "SYSTEM_DIR", "MAX_BYTES"]

CORPUS_FILES = ("jargon.txt.gz", "jargon.txt")
SYSTEM_DIR = "/usr/share/doc/jargon-text"
MAX_BYTES = 16 * 2**20   # the Jargon File is 1.7 MB; nothing a character model here trains on needs more


@dataclass(frozen=True)
class Vocabulary:
    """The characters of a text, sorted by code point; token i is ``chars[i]``.

    >>> v = Vocabulary("abc")
    >>> v.encode("cab").tolist(), v.decode([0, 1])
    ([2, 0, 1], 'ab')
    """

    chars: str

    @classmethod
    def of(cls, text: str) -> Vocabulary:
        """The vocabulary of every character in ``text``."""
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """int64 token ids of ``text``; a character outside the vocabulary is an error naming it."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"characters {''.join(unknown)!r} are not in the vocabulary of {self.size} characters; "
                             "build the vocabulary from a text that holds them (Vocabulary.of)")
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, tokens) -> str:
        """The text of token ids (a tensor or a list of ints)."""
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        bad = [i for i in ids if not 0 <= i < self.size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary [0, {self.size})")
        return "".join(self.chars[i] for i in ids)


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """Train and validation token ids (int64, 1-D) of one text, its vocabulary, and where it came from.

    ``sha256`` is the digest of the whole text (UTF-8): two corpora with the same digest, ``val_fraction`` and
    ``split_seed`` hold the same tokens in the same split."""

    train: torch.Tensor
    val: torch.Tensor
    vocab: Vocabulary
    name: str
    sha256: str
    val_fraction: float
    split_seed: int
    source_path: str | None = None

    def describe(self) -> dict:
        """What identifies this corpus and split, as plain data for a run's settings."""
        return dict(corpus=self.name, sha256=self.sha256, chars=len(self.train) + len(self.val),
                    vocab=self.vocab.size, val_fraction=self.val_fraction, split_seed=self.split_seed)

    def __repr__(self) -> str:
        return (f"TextCorpus({self.name!r}, train={len(self.train):,}, val={len(self.val):,}, "
                f"vocab={self.vocab.size}, source={self.source_path!r})")


def corpus_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for the Jargon File, in order (existing or not).

    >>> str(corpus_dirs()[-1])
    '/usr/share/doc/jargon-text'
    """
    dirs: list[Path] = []
    for base in (root, os.environ.get("RBDLIB_DATA") or None):
        if base is not None:
            dirs += [Path(base).expanduser(), Path(base).expanduser() / "jargon"]
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return dirs + [Path(cache) / "rbdlib" / "jargon", Path(SYSTEM_DIR)]


def find_corpus(root: str | os.PathLike | None = None) -> Path:
    """The first ``jargon.txt.gz`` or ``jargon.txt`` in :func:`corpus_dirs`; else an error saying how to get it."""
    tried = corpus_dirs(root)
    for folder in tried:
        for name in CORPUS_FILES:
            if (folder / name).is_file():
                return folder / name
    places = "\n".join(f"  - {p}" for p in tried)
    raise DatasetNotFoundError(
        f"The Jargon File (public domain) was not found.\nLooked for {' or '.join(CORPUS_FILES)} in:\n{places}\n"
        "To fix, one of:\n  - apt-get install jargon-text  (Debian/Ubuntu; as root)\n"
        "  - copy jargon.txt.gz into a folder and pass root=... or set RBDLIB_DATA=...\n"
        "  - pass path=... to load_corpus with any UTF-8 text file")


def read_text(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> str:
    """The text of a UTF-8 file, or of a gzip file of one (by its ``.gz`` suffix), at most ``max_bytes`` bytes.

    A file (or what it unpacks to) over the limit is refused before more than ``max_bytes + 1`` bytes are read; a
    damaged gzip stream, bytes that are not UTF-8 and an empty text are :class:`~rbdlib.data.DatasetFormatError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} is not a file" + (" (it does not exist)" if not path.exists() else ""))
    size = path.stat().st_size
    if size > max_bytes:
        raise DatasetFormatError(f"{path} holds {size:,} bytes, more than max_bytes={max_bytes:,}; pass a larger "
                                 "max_bytes if this text is meant")
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except (OSError, EOFError) as error:   # BadGzipFile is an OSError, a truncated stream an EOFError
        raise DatasetFormatError(f"{path} is not a readable {'gzip' if path.suffix == '.gz' else 'text'} file "
                                 f"({error}); delete it, or reinstall the package that shipped it") from error
    if len(raw) > max_bytes:
        raise DatasetFormatError(f"{path} unpacks to more than max_bytes={max_bytes:,} bytes; refusing it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DatasetFormatError(f"{path} is not UTF-8 text: byte {error.start} is {raw[error.start:error.start + 1]!r}"
                                 f" ({error.reason})") from None
    if not text:
        raise DatasetFormatError(f"{path} holds no text")
    return text


def _split(tokens: torch.Tensor, val_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A contiguous validation block of ``round(val_fraction * n)`` tokens at an offset drawn from ``split_seed``
    (as :mod:`rbdlib.data` holds out images); the training tokens are the text before and after it, joined."""
    n = len(tokens)
    size = round(val_fraction * n)
    offset = int(np.random.default_rng(split_seed).integers(0, n - size + 1))
    val = tokens[offset:offset + size].clone()
    return torch.cat([tokens[:offset], tokens[offset + size:]]), val


def from_text(text: str, name: str = "text", val_fraction: float = 0.1, split_seed: int = 0,
              source_path: str | None = None) -> TextCorpus:
    """A :class:`TextCorpus` of ``text``: its character vocabulary and the split of :func:`_split`.

    >>> c = from_text("abcdefghij" * 10, split_seed=1)
    >>> len(c.train), len(c.val), c.vocab.chars
    (90, 10, 'abcdefghij')
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty str, got {type(text).__name__} of length {len(text or '')}")
    ok = not isinstance(val_fraction, bool) and isinstance(val_fraction, numbers.Real)
    if not ok or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ValueError(f"split_seed must be a non-negative int, got {split_seed!r}")
    if not 1 <= round(val_fraction * len(text)) <= len(text) - 2:
        raise ValueError(f"a text of {len(text)} characters is too short to hold out val_fraction={val_fraction} "
                         "of it and keep two characters to train on")
    vocab = Vocabulary.of(text)
    train, val = _split(vocab.encode(text), float(val_fraction), split_seed)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return TextCorpus(train, val, vocab, name, digest, float(val_fraction), split_seed, source_path)


def load_corpus(path: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                val_fraction: float = 0.1, split_seed: int = 0, max_bytes: int = MAX_BYTES) -> TextCorpus:
    """The Jargon File (:func:`find_corpus`), or the UTF-8 text at ``path``, as a :class:`TextCorpus`: 90 % of
    the characters to train on, a contiguous 10 % block (:func:`_split`) to validate on."""
    where = Path(path) if path is not None else find_corpus(root)
    name = "jargon" if path is None else where.name.removesuffix(".gz")
    return from_text(read_text(where, max_bytes), name, val_fraction, split_seed, str(where))


def _check_window(tokens: torch.Tensor, batch_size: int, context: int) -> None:
    for what, value in (("batch_size", batch_size), ("context", context)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.dtype != torch.int64:
        raise ValueError(f"tokens must be a 1-D int64 tensor (TextCorpus.train or .val), got {tokens!r:.80}")
    if len(tokens) < context + 1:
        raise ValueError(f"{len(tokens)} tokens cannot hold one window of context {context} and its next character; "
                         "use a shorter context or a longer text")


def windows(tokens: torch.Tensor, batch_size: int, context: int, seed: int, step: int):
    """The mini-batch of step ``step`` under ``seed``: ``batch_size`` windows at uniform random offsets,
    ``x`` (``batch_size x context`` token ids) and ``y``, the characters that follow (``x`` shifted by one).

    A pure function of ``(seed, step)`` (NumPy's PCG64 seeded by the pair), so a run resumed at any step draws the
    same batches as an uninterrupted one, with no generator state to save.

    >>> t = torch.arange(100)
    >>> windows(t, 4, 16, seed=0, step=7)[0].equal(windows(t, 4, 16, seed=0, step=7)[0])
    True
    """
    _check_window(tokens, batch_size, context)
    for what, value in (("seed", seed), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    starts = np.random.default_rng([int(seed), int(step)]).integers(0, len(tokens) - context, batch_size)
    index = torch.from_numpy(starts)[:, None] + torch.arange(context + 1)
    chunk = tokens[index]
    return chunk[:, :-1], chunk[:, 1:]


def eval_windows(tokens: torch.Tensor, context: int, count: int):
    """``count`` windows spread evenly over ``tokens`` (the validation split), the first at its start and the last at
    its end; fewer when the text is too short to give ``count`` that do not overlap. The same every time.

    >>> x, y = eval_windows(torch.arange(100), context=10, count=3)
    >>> x[:, 0].tolist(), y[-1, -1].item()
    ([0, 44, 89], 99)
    """
    _check_window(tokens, count, context)
    count = min(count, (len(tokens) - 1) // context)
    starts = torch.linspace(0, len(tokens) - context - 1, count, dtype=torch.float64).round().long()
    chunk = tokens[starts[:, None] + torch.arange(context + 1)]
    return chunk[:, :-1], chunk[:, 1:]

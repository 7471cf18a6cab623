"""Text input for the estimators: a word tokenizer and sinusoidal token embeddings.

``SimpleWordTokenizer`` turns texts into padded integer token ids (N, L); ``SineTokenEmbedder``
turns ids into sinusoidal embeddings (N, d, L) channels-first (or pooled (N, d)). Passed to an
estimator as ``embedder=``, the embedder becomes the model's first layer: the estimator takes the
ids as X and its network sees the embeddings.

Example::

    tok = SimpleWordTokenizer(max_vocab=500).fit(train_texts)
    X = tok.encode_batch(train_texts, max_length=16)                 # (N, 16) int64, pad id 0
    est = ResConvPSANNRegressor(embedder={"dim": 16, "pad_id": tok.pad_id}).fit(X, y)
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from psann.errors import ValidationError, ValidationTypeError, is_finite_number, short_repr, unknown_key

__all__ = ["SimpleWordTokenizer", "SineTokenEmbedder"]

_WORD = re.compile(r"\w+|[^\w\s]")
_FORMAT = "psann.SimpleWordTokenizer/1"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class SimpleWordTokenizer:
    """Words and punctuation marks as tokens, with pad, unknown, begin and end-of-sequence tokens.

    The four special tokens always take ids 0-3 (``pad_id``, ``unk_id``, ``bos_id``, ``eos_id``);
    words follow by descending frequency (ties alphabetically), at most ``max_vocab`` ids in all and
    only words seen ``min_freq`` times or more. A word outside the vocabulary encodes to ``unk_id``.

    Args:
        lowercase: fold case before counting and encoding.
        max_vocab: the largest vocabulary size, special tokens included (None: no limit; >= 5).
        min_freq: the fewest occurrences a word needs to get an id.
        add_bos, add_eos: put ``<bos>`` / ``<eos>`` around every encoded text.
    """

    PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
    SPECIALS = (PAD, UNK, BOS, EOS)

    def __init__(
        self,
        *,
        lowercase: bool = True,
        max_vocab: int | None = None,
        min_freq: int = 1,
        add_bos: bool = True,
        add_eos: bool = True,
    ) -> None:
        for name, value in (("lowercase", lowercase), ("add_bos", add_bos), ("add_eos", add_eos)):
            if not isinstance(value, bool):
                raise ValidationError.expected(name, "a bool", value)
        if max_vocab is not None and (not _is_int(max_vocab) or max_vocab < len(self.SPECIALS) + 1):
            raise ValidationError.expected(
                "max_vocab", f"None or an int >= {len(self.SPECIALS) + 1} (4 special tokens and a word)", max_vocab
            )
        if not _is_int(min_freq) or min_freq < 1:
            raise ValidationError.expected("min_freq", "an int >= 1", min_freq)
        self.lowercase = lowercase
        self.max_vocab = None if max_vocab is None else int(max_vocab)
        self.min_freq = int(min_freq)
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.vocabulary_: list[str] | None = None
        self._index: dict[str, int] = {}

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    # -- vocabulary -----------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """The tokens of one text: runs of word characters and single punctuation marks."""
        if not isinstance(text, str):
            raise ValidationTypeError.expected("text", "a str", text)
        return _WORD.findall(text.lower() if self.lowercase else text)

    def fit(self, texts: Iterable[str]) -> "SimpleWordTokenizer":
        """Build the vocabulary from ``texts`` (a list of strings); returns self."""
        texts = self._texts(texts)
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(self.tokenize(text))
        words = sorted((w for w, c in counts.items() if c >= self.min_freq and w not in self.SPECIALS),
                       key=lambda w: (-counts[w], w))
        if self.max_vocab is not None:
            words = words[: self.max_vocab - len(self.SPECIALS)]
        self._set_vocabulary([*self.SPECIALS, *words])
        return self

    def _set_vocabulary(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary_ = list(vocabulary)
        self._index = {token: i for i, token in enumerate(self.vocabulary_)}

    @staticmethod
    def _texts(texts: Any) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Iterable):
            raise ValidationTypeError.expected("texts", "a list of strings", texts)
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValidationTypeError.expected(f"texts[{i}]", "a str", text)
        return texts

    def _fitted(self) -> list[str]:
        if self.vocabulary_ is None:
            raise ValidationError("vocabulary", "the tokenizer is not fitted; call fit(texts) or load(path) first")
        return self.vocabulary_

    @property
    def vocab_size(self) -> int:
        """Number of ids (special tokens included); token ids are 0 .. vocab_size - 1."""
        return len(self._fitted())

    def token_to_id(self, token: str) -> int:
        self._fitted()
        return self._index.get(token, self.unk_id)

    def id_to_token(self, token_id: int) -> str:
        vocabulary = self._fitted()
        if not _is_int(token_id) or not 0 <= token_id < len(vocabulary):
            raise ValidationError.expected("token_id", f"an int in [0, {len(vocabulary) - 1}]", token_id)
        return vocabulary[int(token_id)]

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        """Token ids of one text (unknown words -> ``unk_id``), cut to ``max_length`` ids."""
        self._fitted()
        ids = [self._index.get(token, self.unk_id) for token in self.tokenize(text)]
        if self.add_bos:
            ids.insert(0, self.bos_id)
        if self.add_eos:
            ids.append(self.eos_id)
        if max_length is not None:
            if not _is_int(max_length) or max_length < 1:
                raise ValidationError.expected("max_length", "None or an int >= 1", max_length)
            ids = ids[:max_length]
        return ids

    def encode_batch(self, texts: Iterable[str], *, max_length: int | None = None) -> np.ndarray:
        """Padded ids (N, L) int64: L is ``max_length`` or the longest text; pads are ``pad_id``."""
        encoded = [self.encode(text, max_length=max_length) for text in self._texts(texts)]
        length = max_length if max_length is not None else max((len(ids) for ids in encoded), default=1)
        out = np.full((len(encoded), max(1, length)), self.pad_id, dtype=np.int64)
        for row, ids in enumerate(encoded):
            out[row, : len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Tokens of ``ids`` joined by spaces; pad/bos/eos left out unless ``skip_special=False``.

        Unknown words come back as ``<unk>``; ``decode(encode(t))`` equals ``" ".join(tokenize(t))``
        for a text whose words are all in the vocabulary.
        """
        vocabulary = self._fitted()
        values = np.asarray(ids).reshape(-1) if not isinstance(ids, (list, tuple)) else list(ids)
        skipped = {self.pad_id, self.bos_id, self.eos_id} if skip_special else set()
        tokens = []
        for i, value in enumerate(values):
            if not _is_int(value) or not 0 <= int(value) < len(vocabulary):
                raise ValidationError.expected(f"ids[{i}]", f"an int id in [0, {len(vocabulary) - 1}]", value)
            if int(value) not in skipped:
                tokens.append(vocabulary[int(value)])
        return " ".join(tokens)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the settings and vocabulary as one JSON file."""
        path = Path(path)
        payload = {
            "format": _FORMAT,
            "settings": {
                "lowercase": self.lowercase,
                "max_vocab": self.max_vocab,
                "min_freq": self.min_freq,
                "add_bos": self.add_bos,
                "add_eos": self.add_eos,
            },
            "vocabulary": self._fitted(),
        }
        path.write_text(json.dumps(payload, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SimpleWordTokenizer":
        """A tokenizer written by ``save``; it encodes exactly as the saved one did."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        try:
            payload = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValidationError("path", f"{path} is not a tokenizer file (not JSON: {exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValidationError("path", f"{path} is not a tokenizer file (expected format {_FORMAT!r})")
        vocabulary = payload.get("vocabulary")
        if not isinstance(vocabulary, list) or list(vocabulary[: len(cls.SPECIALS)]) != list(cls.SPECIALS):
            raise ValidationError("vocabulary", f"{path}: expected a list starting with the special tokens {cls.SPECIALS}")
        tokenizer = cls(**payload["settings"])
        tokenizer._set_vocabulary(vocabulary)
        return tokenizer


class SineTokenEmbedder(nn.Module):
    """Sinusoidal embeddings of token ids: (N, L) ids -> (N, dim, L) channels-first, or (N, dim).

    For id t, ``emb[2i] = sin(t * w_i)`` and ``emb[2i + 1] = cos(t * w_i)`` with frequencies
    ``w_i = base ** (-2i / dim)``, i = 0 .. dim/2 - 1 (the Transformer's sinusoid, read over token
    ids). Positions holding ``pad_id`` embed to zeros; with ``pool=True`` the output is the mean over
    the non-pad positions. ``learnable=True`` makes the frequencies a trained parameter.

    Args:
        dim: embedding size d (even, >= 2).
        base: the frequency base (> 1; 10000 as in the Transformer).
        learnable: train the frequencies with the estimator's network.
        pad_id: the padding id (None: no padding).
        vocab_size: when given, ids must lie in [0, vocab_size) (the estimator checks its inputs).
        pool: average over positions, giving (N, d) instead of (N, d, L).
    """

    FIELDS = ("dim", "base", "learnable", "pad_id", "vocab_size", "pool")

    def __init__(
        self,
        dim: int = 32,
        *,
        base: float = 10000.0,
        learnable: bool = False,
        pad_id: int | None = 0,
        vocab_size: int | None = None,
        pool: bool = False,
    ) -> None:
        super().__init__()
        if not _is_int(dim) or dim < 2 or dim % 2:
            raise ValidationError.expected("dim", "an even int >= 2", dim)
        if not is_finite_number(base) or base <= 1:
            raise ValidationError.expected("base", "a finite number > 1", base)
        for name, value in (("learnable", learnable), ("pool", pool)):
            if not isinstance(value, bool):
                raise ValidationError.expected(name, "a bool", value)
        if vocab_size is not None and (not _is_int(vocab_size) or vocab_size < 1):
            raise ValidationError.expected("vocab_size", "None or an int >= 1", vocab_size)
        if pad_id is not None and (not _is_int(pad_id) or pad_id < 0 or (vocab_size is not None and pad_id >= vocab_size)):
            limit = f" below vocab_size ({vocab_size})" if vocab_size is not None else ""
            raise ValidationError.expected("pad_id", f"None or an int >= 0{limit}", pad_id)
        self.dim = int(dim)
        self.base = float(base)
        self.learnable = learnable
        self.pad_id = None if pad_id is None else int(pad_id)
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.pool = pool
        exponents = torch.arange(0, self.dim, 2, dtype=torch.float64) / self.dim
        frequencies = (self.base ** (-exponents)).to(torch.float32)
        if learnable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)

    def config(self) -> dict[str, Any]:
        """The constructor arguments as a JSON-able dict (what metadata.json records)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_config(cls, value: Mapping[str, Any]) -> "SineTokenEmbedder":
        """An embedder from a mapping of its fields; an unknown field gets a did-you-mean error."""
        for key in value:
            if key not in cls.FIELDS:
                raise unknown_key(key, cls.FIELDS)
        return cls(**dict(value))

    @classmethod
    def coerce(cls, value: Any) -> "SineTokenEmbedder":
        """The estimator parameter as a module: a mapping builds one, an instance is used as it is.

        Errors are keyed under ``embedder`` (``embedder.dim``).
        """
        if isinstance(value, SineTokenEmbedder):
            return value
        if not isinstance(value, Mapping):
            raise ValidationTypeError.expected("embedder", "None, a SineTokenEmbedder or a mapping of its fields", value)
        try:
            return cls.from_config(value)
        except ValidationError as exc:
            raise exc.under("embedder") from None

    def check_ids(self, ids: torch.Tensor, name: str = "X") -> None:
        """Raise a ValidationError naming ``name`` unless ``ids`` are (N, L) ids this embedder takes."""
        if ids.dim() != 2:
            raise ValidationError(name, f"expected token ids of shape (n_samples, sequence_length), got shape {tuple(ids.shape)}")
        if ids.numel() == 0:
            raise ValidationError(name, f"expected at least 1 sample and 1 position, got shape {tuple(ids.shape)}")
        low, high = int(ids.min()), int(ids.max())
        top = self.vocab_size if self.vocab_size is not None else 2**24  # float32 holds ids exactly below 2**24
        if low < 0 or high >= top:
            raise ValidationError(name, f"expected token ids in [0, {top - 1}], got ids in [{low}, {high}]")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, L) ids (integer or integral float) -> (N, dim, L), or (N, dim) when pooled."""
        dtype = ids.dtype if ids.is_floating_point() else torch.float32
        frequencies = self.frequencies.to(dtype)
        angles = ids.to(dtype).unsqueeze(-1) * frequencies  # (N, L, dim/2)
        emb = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).flatten(-2)  # (N, L, dim)
        if self.pad_id is not None:
            keep = (ids != self.pad_id).unsqueeze(-1).to(emb.dtype)
            emb = emb * keep
        if self.pool:
            if self.pad_id is None:
                return emb.mean(dim=1)
            return emb.sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
        return emb.movedim(-1, 1)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={short_repr(v)}" for k, v in self.config().items())

"""CLIP's byte-level BPE tokenizer (49408 tokens), producing the same ids as open_clip's default tokenizer.

Text is cleaned (ftfy, HTML unescaping, whitespace collapsing, lowercasing), split into pre-tokens by a
regex, and each pre-token is BPE-merged over its UTF-8 bytes. `tokenize` wraps every text as
[<start_of_text>] + ids + [<end_of_text>] in a zero-padded int32 row of `context_length` tokens.
"""

from __future__ import annotations

import functools
import gzip
import html
import operator
from pathlib import Path
from typing import Sequence

import ftfy
import numpy as np
import regex

from flyp_jax import errors

# Read from the package itself so tokenizing never needs a download or a network.
DEFAULT_VOCAB_PATH = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # CLIP trained a 49152-entry vocab; the last 258 merges never made it in.
SOT_TOKEN, EOT_TOKEN = "<start_of_text>", "<end_of_text>"
_END_OF_WORD = "</w>"

# Special tokens come first so that they win over the punctuation rule; `\p{N}` matches one digit at a
# time, so numbers are always spelled digit by digit.
_PRETOKEN_RE = regex.compile(
    "|".join(regex.escape(t) for t in (SOT_TOKEN, EOT_TOKEN))
    + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def _byte_alphabet() -> tuple[list[str], list[int]]:
  """The 256 one-character symbols for the 256 byte values, and those byte values, in vocabulary order.

  Printable Latin-1 bytes stand for themselves; the rest (controls, space, soft hyphen) are moved to
  U+0100 onwards so no symbol is whitespace, which the merges file uses as its separator.
  """
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  shifted = [b for b in range(256) if b not in printable]
  return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))], printable + shifted


def clean_text(text: str) -> str:
  """open_clip's 'lower' cleaning: ftfy repair, HTML unescape (twice, for double-escaped scrapes), strip,
  collapse whitespace runs to one space, lowercase.

  Printable ASCII without '&' (every prompt template, most class names) skips ftfy and unescaping, which leave
  it unchanged: ftfy repairs mojibake, curly quotes, ligatures, wide forms (all non-ASCII), controls and
  terminal escapes (not printable) and HTML entities (start with '&'). ftfy is most of the time of tokenizing
  ImageNet's 80,000 prompts otherwise."""
  if not (text.isascii() and text.isprintable() and "&" not in text):
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
  return " ".join(text.split()).lower()


class Tokenizer:
  """CLIP BPE tokenizer. Ids are in [0, vocab_size): 0..255 single bytes (in `_byte_alphabet` order, not
  byte value), 256..511 the same bytes ending a word, one id per merge, then `sot_token_id`, `eot_token_id`."""

  def __init__(self, vocab_path: str | Path = DEFAULT_VOCAB_PATH, bpe_cache_size: int = 1 << 18):
    with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")
    # Line 0 is a version header.
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
      raise errors.BadValue(f"{vocab_path} does not hold {NUM_MERGES} BPE merges (one 'a b' pair per line)")
    symbols, byte_values = _byte_alphabet()
    vocab = symbols + [s + _END_OF_WORD for s in symbols] + ["".join(m) for m in merges]
    vocab += [SOT_TOKEN, EOT_TOKEN]
    self._encoder = {token: i for i, token in enumerate(vocab)}
    self._merge_ranks = {m: i for i, m in enumerate(merges)}
    self._byte_to_symbol = dict(zip(byte_values, symbols))
    symbol_to_byte = dict(zip(symbols, byte_values))
    # Decoding works on bytes so multi-byte characters split across tokens come back whole.
    self._id_to_bytes = [
        bytes(symbol_to_byte[c] for c in t.removesuffix(_END_OF_WORD)) + (b" " if t.endswith(_END_OF_WORD) else b"")
        for t in vocab[:-2]
    ] + [SOT_TOKEN.encode(), EOT_TOKEN.encode()]
    self.vocab_size = len(vocab)
    self.sot_token_id = self._encoder[SOT_TOKEN]
    self.eot_token_id = self._encoder[EOT_TOKEN]
    # Pre-tokens repeat heavily (prompt templates, common words), so BPE results are memoised.
    self._bpe = functools.lru_cache(maxsize=bpe_cache_size)(self._bpe_uncached)

  def _bpe_uncached(self, pretoken: str) -> tuple[int, ...]:
    if pretoken in (SOT_TOKEN, EOT_TOKEN):
      return (self._encoder[pretoken],)
    word = [self._byte_to_symbol[b] for b in pretoken.encode("utf-8")]
    word[-1] += _END_OF_WORD
    ranks = self._merge_ranks
    while len(word) > 1:
      # Apply the earliest-learned merge present, at every non-overlapping spot, left to right.
      best = min(zip(word, word[1:]), key=lambda pair: ranks.get(pair, NUM_MERGES))
      if best not in ranks:
        break
      merged, i = [], 0
      while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == best:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    return tuple(self._encoder[s] for s in word)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text` after cleaning, without <start_of_text>/<end_of_text>."""
    return [i for pretoken in _PRETOKEN_RE.findall(clean_text(text)) for i in self._bpe(pretoken)]

  def decode(self, ids: Sequence[int]) -> str:
    """Text for token ids; every word-final token is followed by a space, invalid UTF-8 becomes U+FFFD."""
    return b"".join(self._id_to_bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

  def __call__(self, texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> np.ndarray:
    """int32 array [N, context_length] (N = 1 for a single str): [sot] + ids + [eot], zero padded.

    Rows that do not fit are cut to `context_length` tokens and their last token replaced by eot, so a
    text model pooling at the eot position always finds one.
    """
    context_length = operator.index(context_length)
    if context_length < 2:
      raise errors.BadValue(f"context_length must be >= 2 (room for sot and eot), got {context_length}")
    if isinstance(texts, str):
      texts = [texts]
    texts = list(texts)
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}: {text!r:.80}")
    result = np.zeros((len(texts), context_length), dtype=np.int32)
    for row, text in zip(result, texts):
      ids = [self.sot_token_id, *self.encode(text)][:context_length - 1] + [self.eot_token_id]
      row[:len(ids)] = ids
    return result


@functools.lru_cache(maxsize=None)
def default_tokenizer() -> Tokenizer:
  """The shared tokenizer over the packaged vocabulary, built on first use (~0.5 s)."""
  return Tokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> np.ndarray:
  """Tokenize with the default tokenizer: int32 array [N, context_length]; see `Tokenizer.__call__`."""
  return default_tokenizer()(texts, context_length)


def trim_padding(tokens: np.ndarray) -> np.ndarray:
  """`tokens[:, :n]`, n the length of the longest row (its last nonzero id + 1): the columns cut are
  padding in every row.

  CLIP's text tower is causal and pooled at each row's end-of-text token, so its features for the trimmed
  rows are those of the full rows (tests/test_models.py), at about n / context_length of the cost: FLYP's
  ImageNet prompts (1000 classes x 80 templates) are at most 22 of 77 tokens long.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 2:
    raise errors.BadValue(f"expected token ids of shape [N, L], got {tokens.shape}")
  used = np.flatnonzero(tokens.any(axis=0))
  return tokens[:, :used[-1] + 1 if used.size else 1]


def prompt_tokens(classnames: Sequence[str], templates: Sequence[str], context_length: int) -> np.ndarray:
  """The prompts `template.format(classname)`, class-major ([class * len(templates) + template]), tokenised
  and cut to the longest (`trim_padding`). Cached: the FLYP step and every zero-shot evaluation ask for the
  same table (80,000 ImageNet prompts take ~3 s to tokenise). Read-only."""
  return _prompt_tokens(tuple(classnames), tuple(templates), operator.index(context_length))


@functools.lru_cache(maxsize=8)
def _prompt_tokens(classnames: tuple, templates: tuple, context_length: int) -> np.ndarray:
  tokens = trim_padding(tokenize([t.format(c) for c in classnames for t in templates], context_length))
  tokens.flags.writeable = False
  return tokens

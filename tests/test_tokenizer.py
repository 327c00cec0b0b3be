"""flyp_jax.tokenizer: hand-checked ids, and id-for-id agreement with open_clip's and OpenAI's tokenizers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flyp_jax import tokenizer as tok
from tests import references

SOT, EOT, A = 49406, 49407, 320  # A: 'a</w>'

LONG_TEXT = (
    "FLYP fine-tunes CLIP by contrasting images with prompts such as 'a photo of a {}.' built from the "
    "class names, exactly as during pre-training; the paper reports gains on ImageNet, WILDS (iWildCam, "
    "FMoW), and few-shot transfer — naïve fine-tuning with cross-entropy loses robustness under shift, "
    "e.g. on ImageNet-R/-A/-Sketch. Numbers: 1,000 classes, 80 templates, 77 tokens, 49408 ids, 3.14159."
)

TRICKY_TEXTS = [
    "a photo of a cat",
    "A Photo Of A CAT!!!",
    "",
    "   ",
    " \t\n\r\n ",
    # unicode: accents, NFC vs combining marks, CJK, emoji (incl. ZWJ sequences and flags), RTL scripts
    "café naïve résumé Ærøskøbing Ångström façade",
    "cafe\u0301 n\u0303 a\u0308\u0304 z\u0336",
    "東京タワー 北京烤鸭 서울 ひらがな",
    "emoji 🐶🐱 👩\u200d👩\u200d👧 🇯🇵 ❤️ 👍🏽",
    "مرحبا بالعالم שלום עולם",
    "İstanbul STRASSE straße ǅ ﬁne ＦＵＬＬ１２３",
    "zero\u200bwidth soft\u00adhyphen nbsp\u00a0em\u2003ideo\u3000space",
    "control\x00chars\x07and\x1b[31mescapes\x7f",
    # mojibake that ftfy repairs
    "The Mona Lisa doesnâ€™t have eyebrows.",
    "schÃ¶n Ã©tÃ© â€œquotedâ€\x9d",
    "\ud83d\ude00 surrogate pair",
    # html entities, including double escaping that two html.unescape passes undo
    "fish &amp; chips",
    "&lt;b&gt;bold&lt;/b&gt; <i>tag</i>",
    "&amp;amp; &amp;amp;amp; &amp;lt;",
    "&amp;lt;b&amp;gt; fish &amp;amp; chips <tag>",  # '<' stops ftfy unescaping, so both passes matter
    "&#39;quoted&#39; &quot;x&quot; &nbsp;&copy;&eacute;&#x1F600;",
    # punctuation and numbers
    "Hello, world!!! ... ?!? (parens) [brackets] {braces} -- --- ~~~ @#$%^&*_+=|\\/<>`",
    "1234567890 3.14159 1,000,000 2nd 10x -42 ½ ² ٣ ⅷ",
    "https://example.com/path?a=1&b=two#frag user@example.org",
    "__init__ snake_case kebab-case CamelCase ALLCAPS",
    # contractions (the regex only knows lowercase ones; cleaning lowercases first)
    "it's don't they're we've I'm you'll he'd IT'S DON'T rock'n'roll '' 'quoted'",
    "it’s curly apostrophes ‘single’ “double”",
    # whitespace
    "  leading\ttabs\nnewlines\r\n  and   trailing   ",
    "a\x1cb\x1dc\x1ed\x1fe \x85 f\u2028g\u2029h",
    # strings that look like tokens
    "</w> a</w>b <start_of_text>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    LONG_TEXT,
    LONG_TEXT * 3,
]


@pytest.fixture(scope="module")
def ours() -> tok.Tokenizer:
  return tok.default_tokenizer()


@pytest.fixture(scope="module")
def open_clip_tok():
  return references.load_open_clip_tokenizer_module()


@pytest.fixture(scope="module")
def openai_tok():
  return references.load_openai_clip_module("simple_tokenizer").SimpleTokenizer()


@pytest.fixture(scope="module")
def imagenet():
  return references.load_open_clip_zero_shot_metadata()


# --- hand-checked, no reference needed ------------------------------------------------------------


def test_vocabulary_layout(ours):
  assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == (49408, SOT, EOT)
  assert tok.NUM_MERGES == 48894 == 49408 - 2 * 256 - 2
  # Printable ASCII bytes come first from '!' (33): 'a' (97) is byte symbol 64, word-final 256 + 64.
  assert ours.encode("a") == [A]
  assert ours.encode("!") == [256 + ord("!") - 33]
  # Every number is spelled one digit per token; digit d alone is word-final id 256 + 15 + d.
  assert ours.encode("2024") == [273, 271, 273, 275]
  assert ours.encode("0123456789") == list(range(271, 281))
  assert ours.encode("3.14") == [274, 269, 272, 275]


def test_known_clip_ids():
  row = tok.tokenize("a photo of a cat")[0]
  assert row[:7].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT]
  assert not row[7:].any()


def test_cleaning(ours):
  assert tok.clean_text("  Fish &amp;amp; Chips\t\n ") == "fish & chips"
  assert tok.clean_text("doesnâ€™t") == "doesn't"
  assert tok.clean_text("&lt;B&gt;") == "<b>"
  # ftfy leaves entities alone in text containing '<'; the two unescape passes still undo double escaping.
  assert tok.clean_text("&amp;lt;b&amp;gt; &amp;amp; <i>") == "<b> & <i>"
  assert ours.encode("A  PHOTO\nof\ta  cat ") == ours.encode("a photo of a cat")
  assert ours.encode("   ") == ours.encode("") == []


def test_ascii_fast_path_cleans_as_ftfy_does():
  """Printable ASCII without '&' skips ftfy and unescaping; the rest takes the full path. Both give what the
  full path gives, on ImageNet's 1000 class names in 8 of its templates and on ASCII that ftfy or unescaping
  does change."""
  import html

  import ftfy

  from flyp_jax.data import classnames, templates
  full = lambda t: " ".join(html.unescape(html.unescape(ftfy.fix_text(t))).split()).lower()
  prompts = [t.format(c) for c in classnames.get("imagenet") for t in templates.get("imagenet")[:8]]
  changed = ["Fish &amp; Chips", "a\x1b[31mred\x1b[0m cat", "bell\x07", "&#39;quoted&#39;", "line\r\nbreak",
             "tab\tand  spaces"]
  assert all(full(t) != " ".join(t.split()).lower() for t in changed[:4])  # the fast path would be wrong on them
  for text in prompts + changed + TRICKY_TEXTS + [LONG_TEXT]:
    assert tok.clean_text(text) == full(text), text


@pytest.mark.parametrize("n_tokens", [0, 1, 74, 75, 76, 77, 200])
def test_context_boundary(n_tokens):
  # 'a a a ...' is exactly one token per 'a'; 75 + sot + eot fill 77 exactly.
  row = tok.tokenize("a " * n_tokens)[0].tolist()
  kept = min(n_tokens, 75)
  assert row == [SOT] + [A] * kept + [EOT] + [0] * (75 - kept)


def test_short_context_lengths():
  assert tok.tokenize(["", "a photo of a cat"], context_length=2).tolist() == [[SOT, EOT]] * 2
  assert tok.tokenize("a photo of a cat", context_length=3).tolist() == [[SOT, 320, EOT]]
  assert tok.tokenize("a", context_length=500).shape == (1, 500)


def test_shapes_and_dtype():
  for texts, n in [("one", 1), (["one", "two"], 2), (("t", "u", "v"), 3), ((s for s in "ab"), 2), ([], 0),
                   (np.array(["x", "y"]), 2)]:
    out = tok.tokenize(texts)
    assert out.dtype == np.int32 and out.shape == (n, 77), texts
  assert tok.tokenize("x", context_length=16).shape == (1, 16)


@pytest.mark.parametrize("context_length", [1, 0, -3])
def test_bad_context_length(context_length):
  with pytest.raises(ValueError, match="context_length"):
    tok.tokenize("a cat", context_length=context_length)


def test_non_str_item_names_index_and_type():
  with pytest.raises(TypeError, match=r"texts\[2\].*int"):
    tok.tokenize(["a", "b", 3])
  with pytest.raises(TypeError, match=r"texts\[0\].*bytes"):
    tok.tokenize([b"bytes"])
  with pytest.raises(TypeError, match=r"texts\[1\].*NoneType"):
    tok.tokenize(["a", None])


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_round_trip(ours, text):
  ids = ours.encode(text)
  decoded = ours.decode(ids)
  # Decoding puts a space after every word-final token, so compare modulo spaces, and check that the
  # decoded text is a fixed point of encoding.
  assert "".join(decoded.split()) == "".join(tok.clean_text(text).split())
  assert ours.encode(decoded) == ids


def test_default_instance_is_shared():
  assert tok.default_tokenizer() is tok.default_tokenizer()
  assert tok.DEFAULT_VOCAB_PATH.is_file()
  assert tok.DEFAULT_VOCAB_PATH.parent == Path(tok.__file__).resolve().parent / "assets"


def test_offline_and_torch_free():
  # A fresh interpreter with sockets disabled loads the module by path (so no package __init__ runs) and
  # tokenizes: the vocabulary must come from the package, and torch must never be imported.
  script = textwrap.dedent(f"""
      import importlib.util, socket, sys
      def no_network(*a, **k):
          raise OSError("network access attempted")
      socket.socket = socket.create_connection = socket.getaddrinfo = no_network
      spec = importlib.util.spec_from_file_location("tokenizer_under_test", {tok.__file__!r})
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      print(module.tokenize("a photo of a cat")[0, :7].tolist())
      assert "torch" not in sys.modules, "tokenizer imported torch"
  """)
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "no_proxy": "*"}
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == str([SOT, 320, 1125, 539, 320, 2368, EOT])


# --- against the reference implementations --------------------------------------------------------


def test_known_ids_match_reference(open_clip_tok):
  assert open_clip_tok.tokenize("a photo of a cat")[0, :7].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_matches_open_clip(ours, open_clip_tok, text):
  ref = open_clip_tok._tokenizer
  assert ours.encode(text) == ref.encode(text)
  assert ours.decode(ours.encode(text)) == ref.decode(ref.encode(text))
  np.testing.assert_array_equal(tok.tokenize(text), open_clip_tok.tokenize(text).numpy())


@pytest.mark.parametrize("text", [t for t in TRICKY_TEXTS if "<start_of_text>" not in t])
def test_matches_openai(ours, openai_tok, text):
  # OpenAI's cleaning collapses whitespace with regex `\s+` instead of str.split; ftfy removes the
  # control characters where the two differ, so the ids still agree.
  assert ours.encode(text) == openai_tok.encode(text)


def test_special_token_strings_follow_open_clip(ours, openai_tok):
  # open_clip matches its own special-token spellings inside text; OpenAI matched '<|startoftext|>'.
  assert ours.encode("<start_of_text> <end_of_text>") == [SOT, EOT]
  assert SOT not in ours.encode("<|startoftext|>")
  assert openai_tok.encode("<|startoftext|>") == [SOT]


@pytest.mark.parametrize("n_tokens", [74, 75, 76, 77, 78, 300])
@pytest.mark.parametrize("context_length", [2, 3, 16, 77, 100])
def test_truncation_matches_open_clip(open_clip_tok, n_tokens, context_length):
  texts = ["a " * n_tokens, LONG_TEXT[: n_tokens * 4], ("x" + "é" * 3) * n_tokens]
  ours = tok.tokenize(texts, context_length=context_length)
  np.testing.assert_array_equal(ours, open_clip_tok.tokenize(texts, context_length=context_length).numpy())
  ends = (ours != 0).sum(axis=1) - 1
  assert (ours[np.arange(len(texts)), ends] == EOT).all()


def test_imagenet_prompts_match_open_clip(open_clip_tok, imagenet):
  templates, classnames = imagenet.OPENAI_IMAGENET_TEMPLATES, imagenet.IMAGENET_CLASSNAMES
  assert len(templates) == 80 and len(classnames) == 1000
  # Every template on every 10th class, plus every class bare and in the most common template.
  prompts = [t(c) for c in classnames[::10] for t in templates]
  prompts += list(classnames) + [f"a photo of a {c}." for c in classnames]
  np.testing.assert_array_equal(tok.tokenize(prompts), open_clip_tok.tokenize(prompts).numpy())


def test_prompt_tokens_are_cut_cached_and_read_only():
  names, templates = ["cat", "sea lion"], ["a photo of a {}.", "{}"]
  table = tok.prompt_tokens(names, templates, 77)
  full = tok.tokenize(["a photo of a cat.", "cat", "a photo of a sea lion.", "sea lion"], 77)
  np.testing.assert_array_equal(table, full[:, :table.shape[1]])  # class-major, same rows
  assert table.shape[1] == (full != 0).sum(1).max() and not full[:, table.shape[1]:].any()
  assert tok.prompt_tokens(tuple(names), tuple(templates), 77) is table  # tokenised once
  with pytest.raises(ValueError):
    table[0, 0] = 1

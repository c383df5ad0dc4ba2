"""Text normalisation for labels and for WER, safe for Indic scripts.

Whisper's ``BasicTextNormalizer`` replaces every combining mark with a space. In Devanagari the
vowel signs and the virama are combining marks, so it splits every Marathi word into fragments and
makes WER meaningless. Here combining marks stay attached to their letters; only punctuation,
symbols, invisible format characters and case are removed. English, where Whisper writes numbers
as digits or words at will (``5.``, ``Five.``, ``five``), is scored after Whisper's own English
normaliser instead.
"""

import functools
import re
import unicodedata

# Invisible characters that copy-paste and web scraping leave in transcripts: BOM, zero-width
# space / joiners, word joiner, soft hyphen. They change the tokenisation but not the words.
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060\u00ad"))
_SPACES = re.compile(r"\s+")


def clean_transcript(text: str) -> str:
    """Tidy a transcript without changing what it says: the form used for training labels.

    Unicode NFC, invisible characters removed, every kind of space (NBSP included) made one plain
    space. Punctuation and case are kept, because the model should learn to write them.
    """
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    return _SPACES.sub(" ", text).strip()


def normalize(text: str, language: str | None = None) -> str:
    """Normalise for a case- and punctuation-insensitive WER, keeping Indic words whole.

    Removes punctuation (``।`` and ``॥`` included) and symbols, casefolds, and keeps letters,
    digits and combining marks (vowel signs, virama, nukta) in place. For ``language="en"``
    (a Whisper language code), transformers' ``EnglishTextNormalizer``: numbers and number words
    become digits, contractions and fillers are standardised, and bracketed tags such as
    ``[BLANK_AUDIO]`` are dropped.
    """
    if language == "en":
        return _english()(clean_transcript(text))
    text = clean_transcript(text).casefold()
    kept = (" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)
    return _SPACES.sub(" ", "".join(kept)).strip()


# Languages written without spaces between words (Whisper codes): a "word" there is a whole phrase, so their
# adapters are compared by CER.
UNSPACED = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my", "bo"})


def score_metric(language: str | None) -> str:
    """The metric that ranks adapters for ``language``: normalised WER (case and punctuation are the writer's style,
    not recognition), or CER for a language written without spaces."""
    return "val/cer" if language in UNSPACED else "val/wer_norm"


def is_degenerate(token_ids: list[int], max_new_tokens: int, ngram: int = 4, repeats: int = 3) -> bool:
    """True when a generated sequence looks like a decoding collapse.

    Either it ran into ``max_new_tokens`` (no end-of-text), or one token n-gram occurs ``repeats``
    times back to back, the signature of int8 LoRA runs that diverge while their loss looks fine.
    """
    if len(token_ids) >= max_new_tokens:
        return True
    for size in range(1, ngram + 1):
        span = size * repeats
        for start in range(len(token_ids) - span + 1):
            window = token_ids[start : start + span]
            if window == window[:size] * repeats:
                return True
    return False


@functools.cache
def _english():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    # The British-to-American spelling map ships as normalizer.json with OpenAI's hub tokenizers,
    # not with every local copy; numbers and the rest do not need it.
    return EnglishTextNormalizer({})

"""The tokenizer files of a CTranslate2 / faster-whisper Whisper directory, made from openai-whisper's tokenizer.

- vocabulary.json: one string per token id, as CTranslate2's converter writes it (GPT-2's byte-level
  characters for the BPE tokens, then the special tokens and the timestamps by their text). CTranslate2
  refuses a directory without it, and looks the special tokens up in it by name.
- tokenizer.json: a Hugging Face `tokenizers` BPE tokenizer with the same ids. faster-whisper reads it
  from the model directory and downloads one from the Hugging Face hub when it is missing.
- the config.json fields CTranslate2 reads for Whisper (suppressed ids, language ids).

The BPE merges are derived from the token ranks the way transformers converts tiktoken files: a token
of rank r is the merge of every split of it into two lower-ranked tokens, and merges apply in rank
order, which is the order tiktoken merges in.
"""

from functools import lru_cache
from typing import Dict, List, Tuple

import whisper.tokenizer

# whisper.model.Whisper: an English-only model has 51864 tokens, a multilingual one 51765 + 1 + its languages.
_MULTILINGUAL_MIN_VOCAB = 51865


def tokenizer_for(n_vocab: int) -> "whisper.tokenizer.Tokenizer":
    """openai-whisper's tokenizer for a model with ``n_vocab`` tokens (as whisper.model.Whisper picks it)."""
    multilingual = n_vocab >= _MULTILINGUAL_MIN_VOCAB
    num_languages = n_vocab - 51765 - int(multilingual)
    if not 1 <= num_languages <= len(whisper.tokenizer.LANGUAGES):
        raise ValueError(f"no openai-whisper tokenizer has {n_vocab} tokens")
    return whisper.tokenizer.get_tokenizer(multilingual, num_languages=num_languages)


@lru_cache(maxsize=None)
def _byte_to_char() -> Dict[int, str]:
    """GPT-2's reversible map of bytes to printable characters (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _bpe_text(token: bytes) -> str:
    chars = _byte_to_char()
    return "".join(chars[b] for b in token)


@lru_cache(maxsize=4)
def _tables(n_vocab: int) -> Tuple[List[str], int, List[Tuple[int, str]]]:
    """(token strings by id, number of BPE tokens, [(id, text) of the special tokens])."""
    tokenizer = tokenizer_for(n_vocab)
    encoding = tokenizer.encoding
    specials = sorted((encoding.encode_single_token(text), text) for text in encoding.special_tokens_set)
    first_special = specials[0][0]
    if encoding.n_vocab != n_vocab or [i for i, _ in specials] != list(range(first_special, n_vocab)):
        raise ValueError(f"openai-whisper's tokenizer ({encoding.name}, {encoding.n_vocab} tokens) does not fit a "
                         f"model with {n_vocab} tokens")
    tokens = [_bpe_text(encoding.decode_single_token_bytes(i)) for i in range(first_special)]
    return tokens + [text for _, text in specials], first_special, specials


def vocabulary(n_vocab: int) -> List[str]:
    """vocabulary.json's list: the token string of every id below ``n_vocab``."""
    return list(_tables(n_vocab)[0])


def _merges(tokens: List[str]) -> List[str]:
    rank = {token: i for i, token in enumerate(tokens)}
    merges = []
    for token in tokens:
        if len(token) < 2:
            continue
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in rank and token[i:] in rank]
        splits.sort(key=lambda pair: (rank[pair[0]], rank[pair[1]]))
        merges += [f"{left} {right}" for left, right in splits]
    return merges


def tokenizer_json(n_vocab: int) -> Dict:
    """tokenizer.json's content for a model with ``n_vocab`` tokens (no network needed)."""
    tokens, n_bpe, specials = _tables(n_vocab)
    bpe = tokens[:n_bpe]
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, text in specials],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": {token: i for i, token in enumerate(bpe)}, "merges": _merges(bpe)},
    }


def config_fields(n_vocab: int) -> Dict[str, List[int]]:
    """config.json's token fields: the ids CTranslate2 suppresses by default (openai-whisper's suppress_tokens=-1
    set plus the tokens DecodingTask always suppresses), those suppressed at the first step, the language ids."""
    tokenizer = tokenizer_for(n_vocab)
    always = [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm]
    if tokenizer.no_speech is not None:
        always.append(tokenizer.no_speech)
    return {"suppress_ids": sorted(set(tokenizer.non_speech_tokens) | set(always)),
            "suppress_ids_begin": tokenizer.encode(" ") + [tokenizer.eot],
            "lang_ids": list(tokenizer.all_language_tokens)}

"""fastwhisper.compat holds everything taken from openai-whisper's internals, for the versions it names."""

import ast
from pathlib import Path

import whisper
from whisper.decoding import DecodingOptions

from fastwhisper import compat
from conftest import TINY_MULTI, random_model

PACKAGE = Path(compat.__file__).parent
# names of openai-whisper's DecodingTask machinery: public in Python's sense, internal to whisper
INTERNAL_NAMES = {"DecodingTask", "BeamSearchDecoder", "GreedyDecoder", "SuppressBlank", "SuppressTokens",
                  "ApplyTimestampRules", "MaximumLikelihoodRanker", "LogitFilter"}
INTERNAL_ATTRIBUTES = {"_get_audio_features", "_detect_language", "_main_loop", "finished_sequences", "whisper_task",
                       "sequence_ranker", "logit_filters"}


def test_the_installed_openai_whisper_is_a_supported_version():
    assert whisper.__version__ in compat.SUPPORTED_WHISPER_VERSIONS, (
        f"openai-whisper {whisper.__version__} is not one fastwhisper.compat is written against "
        f"({', '.join(compat.SUPPORTED_WHISPER_VERSIONS)}): check compat.py and add it")


def test_only_compat_touches_whispers_internals():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("whisper"):
                offenders += [f"{path.name}: imports {a.name}" for a in node.names
                              if a.name in INTERNAL_NAMES or a.name.startswith("_")]
            elif isinstance(node, ast.Attribute) and node.attr in INTERNAL_ATTRIBUTES:
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert offenders == []


def test_plan_reads_the_task_settings_whisper_decodes_with():
    model = random_model(TINY_MULTI)
    greedy = compat.plan(model, DecodingOptions(language="en", fp16=False))
    tokenizer = whisper.tokenizer.get_tokenizer(True, language="en", task="transcribe")
    assert greedy.initial_tokens == tuple(tokenizer.sot_sequence)
    assert greedy.sample_begin == len(tokenizer.sot_sequence)
    assert greedy.sot_index == 0 and greedy.n_group == 1 and greedy.beam_size is None
    assert greedy.sample_len == model.dims.n_text_ctx // 2
    assert greedy.suppress_blank and greedy.timestamp_rules
    assert {tokenizer.sot, tokenizer.transcribe, tokenizer.translate} <= set(greedy.suppress_tokens)
    beams = compat.plan(model, DecodingOptions(language="en", fp16=False, beam_size=3, patience=2.0,
                                               without_timestamps=True, prompt=[50, 51]))
    assert (beams.beam_size, beams.patience, beams.n_group) == (3, 2.0, 3)
    assert not beams.timestamp_rules
    assert beams.initial_tokens[:3] == (tokenizer.sot_prev, 50, 51)
    assert beams.sot_index == 3

"""C++ decoding against openai-whisper for the options around the loop: bad options, long prompts,
beam search with a temperature, scoring of sampled sequences, language detection, and the
temperature fallback of long-form transcription. Random weights of Whisper tiny's real dims."""

import copy

import numpy as np
import pytest
import torch
import whisper
from whisper.decoding import DecodingTask

import fastwhisper
import fastwhisper.decoder.cpp as cd
from conftest import TINY_MULTI, assert_same_results, random_audio_features, random_model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def features(model):
    return random_audio_features(model, batch=2)


BAD_OPTIONS = {
    "unknown-language": dict(language="klingon"),
    "beam-and-best-of": dict(beam_size=3, best_of=2),
    "best-of-greedy": dict(best_of=2),
    "patience-without-beam": dict(patience=2.0),
    "length-penalty-range": dict(length_penalty=1.5),
}


def raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_raise_whisper_errors(model, features, case):
    kwargs = dict(fp16=False, sample_len=5, **BAD_OPTIONS[case])
    options = whisper.DecodingOptions(**{"language": "en", **kwargs})
    expected = raised(lambda: whisper.decode(model, features, options))
    assert raised(lambda: cd.decode_cpp(model, features, options)) == expected
    assert raised(lambda: fastwhisper.decode(model, features, options, decoder="cpp")) == expected


def test_unknown_language_in_transcribe_raises_like_whisper():
    multi = random_model(TINY_MULTI, seed=2)
    audio = np.zeros(16000, dtype=np.float32)
    expected = raised(lambda: whisper.transcribe(copy.deepcopy(multi), audio, language="klingon", fp16=False))
    assert raised(lambda: fastwhisper.transcribe(multi, audio, decoder="cpp", language="klingon", fp16=False)) == expected


def test_beam_search_with_a_temperature_is_beam_search_like_whisper(model, features):
    """openai-whisper does not refuse beam_size with temperature > 0: it runs beam search and reports
    the temperature. decode_cpp does the same."""
    options = whisper.DecodingOptions(language="en", fp16=False, beam_size=3, temperature=0.5, sample_len=20)
    expected = whisper.decode(model, features[:1], options)
    assert expected[0].temperature == 0.5
    assert_same_results(expected, cd.decode_cpp(model, features[:1], options))


def test_long_prompt_and_prefix_are_cut_like_whisper(model, features):
    """A prompt beyond n_text_ctx // 2 - 1 tokens and a prefix beyond its share are truncated, not refused."""
    prompt = list(range(1000, 1500))  # 500 tokens
    options = whisper.DecodingOptions(language="en", fp16=False, prompt=prompt, prefix=list(range(300, 400)),
                                      sample_len=20)
    assert_same_results(whisper.decode(model, features, options), cd.decode_cpp(model, features, options))


def whisper_sum_logprobs(model, features, options, results):
    """Teacher-forced scoring with openai-whisper: sum over the sampled tokens (and the EOT that ended
    them, unless sample_len ran out first) of log_softmax(filtered logits), as whisper's GreedyDecoder
    accumulates it."""
    task = DecodingTask(model, options)
    eot = task.tokenizer.eot
    sums = []
    for i, result in enumerate(results):
        sampled = result.tokens + ([eot] if len(result.tokens) < task.sample_len else [])
        tokens = torch.tensor([list(task.initial_tokens) + sampled])
        with torch.no_grad():
            logits = model.decoder(tokens, features[i : i + 1])[0]  # [L, n_vocab]
        total = 0.0
        for j, token in enumerate(sampled):
            position = task.sample_begin + j  # the token's position; its logits come from the one before
            row = logits[position - 1 : position].clone()
            for f in task.logit_filters:
                f.apply(row, tokens[:, :position])
            total += torch.log_softmax(row.float(), dim=-1)[0, token].item()
        sums.append(total)
    return sums


@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_sampled_sequences_score_like_whisper(model, features, temperature):
    """Sequences sampled by the C++ loop (its own seeded generator) carry the log-probabilities
    openai-whisper gives them when it scores them token by token."""
    options = whisper.DecodingOptions(language="en", fp16=False, temperature=temperature, sample_len=30)
    results = cd.decode_cpp(model, features, options, seed=2024)
    ours = [r.avg_logprob * (len(r.tokens) + 1) for r in results]
    assert ours == pytest.approx(whisper_sum_logprobs(model, features, options, results), abs=1e-3)
    # reproducible with the same seed, different with another
    again = cd.decode_cpp(model, features, options, seed=2024)
    assert [r.tokens for r in again] == [r.tokens for r in results]
    other = cd.decode_cpp(model, features, options, seed=7)
    assert [r.tokens for r in other] != [r.tokens for r in results]


def test_detect_language_matches_whisper(features):
    multi = random_model(TINY_MULTI, seed=3)
    tokenizer = whisper.tokenizer.get_tokenizer(True, num_languages=multi.num_languages)
    expected_tokens, expected_probs = multi.detect_language(features, tokenizer)
    session = cd.decoder_session(multi.decoder)
    session.set_audio(features, 2)  # groups do not change the answer
    ids = torch.tensor(tokenizer.all_language_tokens)
    tokens, probs = session.detect_language(tokenizer.sot, ids)
    assert tokens.tolist() == expected_tokens.tolist()
    expected = torch.tensor([[p[c] for c in tokenizer.all_language_codes] for p in expected_probs])
    assert (probs - expected).abs().max().item() <= 1e-6
    assert session.offset() == 0
    with pytest.raises(RuntimeError, match="language_tokens must be a non-empty 1-D int64 tensor"):
        session.detect_language(tokenizer.sot, ids.int())
    with pytest.raises(RuntimeError, match=r"language token ids must be in \[0, 51865\)"):
        session.detect_language(tokenizer.sot, ids + 2000)
    with pytest.raises(RuntimeError, match="sot must be a token id"):
        session.detect_language(-3, ids)
    english_only = random_model()
    with pytest.raises(ValueError, match="can't perform lang id"):
        cd.decode_cpp(english_only, features, whisper.DecodingOptions(task="lang_id", fp16=False))


def test_temperature_fallback_matches_whisper():
    """Random weights decode degenerate text: the compression-ratio / log-prob thresholds send every
    window through the temperature schedule, with sampling from torch's global generator."""
    model = random_model(seed=4)
    reference = copy.deepcopy(model)
    audio = torch.randn(12 * 16000, generator=torch.Generator().manual_seed(9)).numpy() * 0.1
    options = dict(language="en", fp16=False, temperature=(0.0, 0.4, 0.8), condition_on_previous_text=False)
    torch.manual_seed(5)
    theirs = whisper.transcribe(reference, audio, **options)
    torch.manual_seed(5)
    ours = fastwhisper.transcribe(model, audio, decoder="cpp", **options)
    temperatures = [s["temperature"] for s in theirs["segments"]]
    assert temperatures and max(temperatures) > 0, "the case must trigger the fallback"
    assert ours["text"] == theirs["text"]
    assert len(ours["segments"]) == len(theirs["segments"])
    for a, b in zip(ours["segments"], theirs["segments"]):
        for field in ("seek", "start", "end", "text", "tokens", "temperature"):
            assert a[field] == b[field], field
        assert a["avg_logprob"] == pytest.approx(b["avg_logprob"], abs=1e-3)

"""The models a random-weight row times, all with the same seeded weights of one model size: openai-whisper,
fastwhisper and Hugging Face transformers (SDPA), and the decoding calls that decode a fixed token count."""

from typing import Dict, List, Optional

import torch
import whisper
from whisper.decoding import DecodingOptions, DecodingTask, SuppressBlank, SuppressTokens
from whisper.model import ModelDimensions, Whisper

import fastwhisper
from common import free_device_memory, is_cuda, random_whisper
from sections.rows import Floors


class Context:
    """One model size on one device: dims, precision, the seeded random weights (on the CPU), inputs."""

    def __init__(self, name: str, device: str, args, ceilings: Optional[Dict]):
        self.name, self.device, self.args = name, device, args
        self.gpu = is_cuda(device)
        self.act = torch.float16 if self.gpu else torch.float32
        source = random_whisper(name, device)
        self.dims: ModelDimensions = source.dims
        self.multilingual, self.num_languages = source.is_multilingual, source.num_languages
        self.state = {k: v.detach().cpu() for k, v in source.state_dict().items()}
        del source
        free_device_memory(device)
        self.floors = Floors(self.dims, self.state, ceilings, device)
        self.eot = whisper.tokenizer.get_tokenizer(self.multilingual, num_languages=self.num_languages).eot
        generator = torch.Generator().manual_seed(4321)
        self.features = torch.randn(1, self.dims.n_audio_ctx, self.dims.n_audio_state, generator=generator) * 0.5
        self._options = {}

    def options(self, tokens: int, beam: int = 1, fp16: Optional[bool] = None) -> DecodingOptions:
        """Fixed-count decoding: EOT (and whisper's non-speech tokens) suppressed, no timestamps."""
        fp16 = self.gpu if fp16 is None else fp16
        key = (tokens, beam, fp16)
        if key not in self._options:
            self._options[key] = DecodingOptions(
                language="en", without_timestamps=True, suppress_tokens=[-1, self.eot], sample_len=tokens,
                beam_size=beam if beam > 1 else None, fp16=fp16)
        return self._options[key]


def build_openai(ctx: Context) -> Whisper:
    with torch.device(ctx.device):
        model = Whisper(ctx.dims)
    model.load_state_dict(ctx.state)
    return model.eval()


def build_fastwhisper(ctx: Context) -> fastwhisper.FastWhisper:
    with torch.device(ctx.device):
        model = fastwhisper.FastWhisper(ctx.dims)
    model.load_state_dict(ctx.state)
    return model.eval()


def _hf_pairs(dims: ModelDimensions):
    from fastwhisper.models.huggingface import _global_map, _layer_map

    return _global_map() + [p for side, n in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer))
                            for i in range(n) for p in _layer_map(side, i)]


def build_hf(ctx: Context):
    """WhisperForConditionalGeneration with SDPA attention and ctx's weights, fp32 (half() it to time)."""
    import transformers
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    transformers.logging.set_verbosity_error()
    d = ctx.dims
    config = WhisperConfig(
        vocab_size=d.n_vocab, num_mel_bins=d.n_mels, d_model=d.n_audio_state,
        encoder_layers=d.n_audio_layer, encoder_attention_heads=d.n_audio_head, encoder_ffn_dim=4 * d.n_audio_state,
        decoder_layers=d.n_text_layer, decoder_attention_heads=d.n_text_head, decoder_ffn_dim=4 * d.n_text_state,
        max_source_positions=d.n_audio_ctx, max_target_positions=d.n_text_ctx, activation_function="gelu",
        scale_embedding=False, tie_word_embeddings=True)
    try:
        with torch.device(ctx.device):
            model = WhisperForConditionalGeneration._from_config(config, attn_implementation="sdpa")
    except (TypeError, AttributeError):  # an older transformers: set the attention on the config
        config._attn_implementation = "sdpa"
        model = WhisperForConditionalGeneration(config).to(ctx.device)
    model = model.to(ctx.device)
    weights = {h: ctx.state[o] for h, o in _hf_pairs(d)}
    weights["proj_out.weight"] = ctx.state["decoder.token_embedding.weight"]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"HF weights do not map: missing {missing[:3]}, unexpected {unexpected[:3]}")
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "sdpa":
        raise RuntimeError(f"transformers {transformers.__version__} built the model with attention {attn!r}, not sdpa")
    return model.eval()


def decode_plan(model: Whisper, options: DecodingOptions) -> Dict:
    """openai-whisper's initial tokens and suppressed tokens for ``options`` (given to HF's generate)."""
    task = DecodingTask(model, options)
    plan = {"initial_tokens": list(task.initial_tokens), "suppress_tokens": [], "begin_suppress_tokens": [],
            "sot": task.tokenizer.sot, "eot": task.tokenizer.eot}
    for f in task.logit_filters:
        if isinstance(f, SuppressTokens):
            plan["suppress_tokens"] = sorted(int(t) for t in f.suppress_tokens)
        elif isinstance(f, SuppressBlank):
            plan["begin_suppress_tokens"] = list(task.tokenizer.encode(" ")) + [task.tokenizer.eot]
    return plan


class HFDecoder:
    """HF decoding of a fixed token count through GenerationMixin.generate on given encoder outputs."""

    def __init__(self, model, plan: Dict):
        from transformers.generation.utils import GenerationMixin
        from transformers.modeling_outputs import BaseModelOutput

        self.model, self.plan, self.configs = model, plan, {}
        self.generate, self.wrap = GenerationMixin.generate, BaseModelOutput

    def config(self, tokens: int, beam: int):
        from transformers import GenerationConfig

        if (tokens, beam) not in self.configs:
            p = self.plan
            self.configs[tokens, beam] = GenerationConfig(
                max_new_tokens=tokens, min_new_tokens=tokens, num_beams=beam, do_sample=False, use_cache=True,
                decoder_start_token_id=p["sot"], bos_token_id=p["sot"], eos_token_id=p["eot"], pad_token_id=p["eot"],
                suppress_tokens=p["suppress_tokens"], begin_suppress_tokens=p["begin_suppress_tokens"],
                length_penalty=1.0, num_return_sequences=1)
        return self.configs[tokens, beam]

    def __call__(self, features: torch.Tensor, tokens: int, beam: int = 1) -> List[List[int]]:
        init = self.plan["initial_tokens"]
        ids = torch.tensor([init] * features.shape[0], device=features.device)
        out = self.generate(self.model, encoder_outputs=self.wrap(last_hidden_state=features), decoder_input_ids=ids,
                            generation_config=self.config(tokens, beam))
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        return [row[len(init):].tolist() for row in sequences]

    def logits(self, features: torch.Tensor, tokens: List[int]) -> torch.Tensor:
        ids = torch.tensor([tokens], device=features.device)
        return self.model(encoder_outputs=(features,), decoder_input_ids=ids, use_cache=False).logits


def whisper_decoder(model, decoder: Optional[str] = None):
    """Fixed-count decoding with whisper.decode (decoder None) or fastwhisper.decode(decoder=...)."""
    def decode(features: torch.Tensor, options: DecodingOptions) -> List[List[int]]:
        if decoder is None:
            results = whisper.decode(model, features, options)
        else:
            results = fastwhisper.decode(model, features, options, decoder=decoder)
        return [r.tokens for r in results]
    return decode

// torch.classes.fastwhisper.DecoderSession and torch.classes.fastwhisper.DecodeOptions.
#include <torch/custom_class.h>
#include <torch/library.h>

#include "decoder/decoding.h"
#include "decoder/options.h"
#include "decoder/session.h"

namespace fastwhisper::decoder {
namespace {

using Session = c10::intrusive_ptr<DecoderSession>;
using Options = c10::intrusive_ptr<DecodeOptions>;

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastwhisper, m) {
  m.class_<DecodeOptions>("DecodeOptions")
      .def(torch::init<>())
      .def_readwrite("sample_begin", &DecodeOptions::sample_begin)
      .def_readwrite("sot_index", &DecodeOptions::sot_index)
      .def_readwrite("sample_len", &DecodeOptions::sample_len)
      .def_readwrite("eot", &DecodeOptions::eot)
      .def_readwrite("no_speech", &DecodeOptions::no_speech)
      .def_readwrite("suppress_blank", &DecodeOptions::suppress_blank)
      .def_readwrite("blank_tokens", &DecodeOptions::blank_tokens)
      .def_readwrite("suppress_tokens", &DecodeOptions::suppress_tokens)
      .def_readwrite("timestamp_rules", &DecodeOptions::timestamp_rules)
      .def_readwrite("timestamp_begin", &DecodeOptions::timestamp_begin)
      .def_readwrite("no_timestamps", &DecodeOptions::no_timestamps)
      .def_readwrite("max_initial_timestamp_index", &DecodeOptions::max_initial_timestamp_index)
      .def_readwrite("temperature", &DecodeOptions::temperature)
      .def_readwrite("seed", &DecodeOptions::seed)
      .def_readwrite("beam_size", &DecodeOptions::beam_size)
      .def_readwrite("patience", &DecodeOptions::patience);

  // weights: kDecoderBeforeBlocks, kDecoderBlock per layer, kDecoderAfterBlocks (decoder/layout.h; in Python
  // fastwhisper.decoder.weights.decoder_weight_names)
  m.class_<DecoderSession>("DecoderSession")
      .def(torch::init<std::vector<at::Tensor>, int64_t, int64_t>())
      // audio_features [B, T_a, d], group -> cross-attention K/V of every layer; N = B * group rows
      .def("set_audio", [](const Session& s, const at::Tensor& audio_features, int64_t group) {
        s->set_audio(audio_features, group);
      })
      // tokens [N, t] int64 -> logits [N, t, n_vocab] float32; appends t positions to the cache
      .def("step", [](const Session& s, const at::Tensor& tokens) { return s->step(tokens); })
      // tokens [N, t] int64 -> logits [N, 1, n_vocab] of the last position
      .def("step_last", [](const Session& s, const at::Tensor& tokens) { return s->step_last(tokens); })
      // source_indices [N] int64: cache row i <- row source_indices[i]
      .def("reorder", [](const Session& s, const at::Tensor& source_indices) { s->reorder(source_indices); })
      .def("reset", [](const Session& s) { s->reset(); })
      // from any thread: a decode() in flight stops before its next step and raises; cleared by clear_interrupt
      .def("interrupt", [](const Session& s) { s->interrupt(); })
      .def("clear_interrupt", [](const Session& s) { s->clear_interrupt(); })
      .def("offset", [](const Session& s) { return s->offset(); })
      .def("n_rows", [](const Session& s) { return s->n_rows(); })
      .def("weights", [](const Session& s) { return s->weights(); })
      // sot, language_tokens [n_lang] int64 -> (language token [n_audio], probabilities [n_audio, n_lang])
      .def("detect_language", [](const Session& s, int64_t sot, const at::Tensor& language_tokens) {
        return s->detect_language(sot, language_tokens);
      })
      // CUDA graphs for one-token steps on CUDA (default on)
      .def("set_cuda_graphs", [](const Session& s, bool enabled) { s->set_cuda_graphs(enabled); })
      .def("cuda_graphs", [](const Session& s) { return s->cuda_graphs(); })
      .def("cuda_graph_count", [](const Session& s) { return s->cuda_graph_count(); })
      // one-token steps: 0 auto (step ops for fp16/bf16 on CUDA), 1 step ops, 2 ATen ops
      .def("set_step_kernels", [](const Session& s, int64_t mode) { s->set_step_kernels(mode); })
      .def("step_kernels", [](const Session& s) { return s->step_kernels(); })
      .def("uses_step_ops", [](const Session& s) { return s->uses_step_ops(); })
      // initial_tokens [N, sample_begin] int64 -> (tokens [N, L], sum_logprobs [N], no_speech_probs [N],
      // finished_tokens, finished_sum_logprobs, finished_audio)
      .def("decode", [](const Session& s, const at::Tensor& initial_tokens, const Options& options) {
        return decode(*s, initial_tokens, *options);
      });
}

}  // namespace fastwhisper::decoder

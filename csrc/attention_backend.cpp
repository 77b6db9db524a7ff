// Reads FASTWHISPER_ENCODER_ATTENTION once (see attention_backend.h).
#include "attention_backend.h"

#include <c10/util/Exception.h>
#include <c10/util/env.h>

#include <string>

namespace fastwhisper {
namespace {

AttentionBackend parse_attention_backend() {
  const std::string value = c10::utils::get_env("FASTWHISPER_ENCODER_ATTENTION").value_or("");
  if (value.empty() || value == "auto") return AttentionBackend::kAuto;
  if (value == "flash") return AttentionBackend::kFlash;
  TORCH_CHECK(value == "cudnn",
              "fastwhisper: FASTWHISPER_ENCODER_ATTENTION must be flash, cudnn or auto (or unset), got '",
              value, "'");
  return AttentionBackend::kCudnn;
}

}  // namespace

AttentionBackend encoder_attention_backend() {
  static const AttentionBackend backend = parse_attention_backend();  // a throw leaves it unset: read again
  return backend;
}

const char* attention_backend_name(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::kFlash:
      return "flash";
    case AttentionBackend::kCudnn:
      return "cudnn";
    case AttentionBackend::kAuto:
      break;
  }
  return "auto";
}

}  // namespace fastwhisper

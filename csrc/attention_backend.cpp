// Reads FASTWHISPER_ENCODER_ATTENTION once (see attention_backend.h).
#include "attention_backend.h"

#include <string>

#include "env_choice.h"

namespace fastwhisper {
namespace {

AttentionBackend parse_attention_backend() {
  const std::string value = env_choice("FASTWHISPER_ENCODER_ATTENTION", {"flash", "cudnn", "auto"}, "auto");
  if (value == "flash") return AttentionBackend::kFlash;
  if (value == "cudnn") return AttentionBackend::kCudnn;
  return AttentionBackend::kAuto;
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

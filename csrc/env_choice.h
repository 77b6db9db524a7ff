// Run-time switches read from the environment: a variable that must hold one of a few words.
#pragma once
#include <c10/util/Exception.h>
#include <c10/util/env.h>

#include <string>
#include <vector>

namespace fastwhisper {

// The value of environment variable `name` (unset or empty: `fallback`); anything not in `allowed`
// fails with a message that lists the allowed words.
inline std::string env_choice(const char* name, const std::vector<std::string>& allowed, const std::string& fallback) {
  std::string value = c10::utils::get_env(name).value_or("");
  if (value.empty()) value = fallback;
  for (const auto& word : allowed) {
    if (value == word) return value;
  }
  std::string words;
  for (size_t i = 0; i < allowed.size(); ++i) {
    words += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + allowed[i];
  }
  TORCH_CHECK(false, "fastwhisper: ", name, " must be ", words, " (or unset), got '", value, "'");
  return fallback;
}

}  // namespace fastwhisper

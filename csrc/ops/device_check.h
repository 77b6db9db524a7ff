// The device check every fastwhisper op makes before the dispatcher chooses a device's kernel.
#pragma once
#include <torch/library.h>

namespace fastwhisper {

// Defines the op `schema` in library m and registers the device check for it (see device_check.cpp).
void def_op(torch::Library& m, const char* schema);

}  // namespace fastwhisper

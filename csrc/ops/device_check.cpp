// Before any fastwhisper op reaches a device's kernel, every tensor argument must be on one device.
//
// The dispatcher chooses the kernel from the union of the arguments' devices: without this check a meta
// tensor among CPU tensors sends the whole call to the fake (meta) kernel, which checks nothing and returns
// uninitialised memory, and the in-place ops then silently do nothing. ATen's own ops refuse such a mix, and
// so do these. The check runs at the BackendSelect key, which every call on real tensors passes through after
// autograd and before the device kernels, inference mode included. (FakeTensorMode, for torch.compile, takes a
// call at its Python key, above this one; the fakes in python/fastwhisper/ops make the same check there.)
#include "ops/device_check.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <optional>
#include <string>

namespace fastwhisper {
namespace {

// An argument's name for the error message, built only when the check fails: "weights[3]".
struct ArgumentName {
  const std::string* name = nullptr;
  int64_t index = -1;  // the position in a tensor list, -1 for a tensor argument
  std::string str() const { return index < 0 ? *name : *name + "[" + std::to_string(index) + "]"; }
};

struct FirstDevice {
  std::optional<c10::Device> device;
  ArgumentName name;
};

void check_tensor(const c10::OperatorHandle& op, FirstDevice& first, const at::Tensor& t, ArgumentName name) {
  if (!t.defined()) return;
  if (!first.device) {
    first.device = t.device();
    first.name = name;
    return;
  }
  TORCH_CHECK(t.device() == *first.device, "fastwhisper.", op.schema().name().substr(sizeof("fastwhisper::") - 1),
              ": all inputs must be on one device; ", first.name.str(), " is on ", *first.device, " but ", name.str(),
              " is on ", t.device());
}

// Boxed kernel at BackendSelect: the stack holds the op's arguments (tensors, tensor lists, optional tensors).
void check_one_device(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& arguments = op.schema().arguments();
  const auto values = torch::jit::last(*stack, arguments.size());
  FirstDevice first;
  for (size_t i = 0; i < arguments.size(); ++i) {
    const c10::IValue& v = values[i];
    const std::string* name = &arguments[i].name();
    if (v.isTensor()) {
      check_tensor(op, first, v.toTensor(), {name});
    } else if (v.isTensorList()) {
      const auto list = v.toTensorList();
      for (size_t j = 0; j < list.size(); ++j) check_tensor(op, first, list.get(j), {name, static_cast<int64_t>(j)});
    } else if (v.isList()) {  // Tensor?[]
      const auto& list = v.toListRef();
      for (size_t j = 0; j < list.size(); ++j) {
        if (list[j].isTensor()) check_tensor(op, first, list[j].toTensor(), {name, static_cast<int64_t>(j)});
      }
    }
  }
  op.redispatchBoxed(keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, c10::DispatchKey::BackendSelect),
                     stack);
}

}  // namespace

void def_op(torch::Library& m, const char* schema) {
  m.def(schema);
  const std::string name(schema, std::string(schema).find('('));
  m.impl(name.c_str(), torch::dispatch(c10::DispatchKey::BackendSelect,
                                       torch::CppFunction::makeFromBoxedFunction<&check_one_device>()));
}

}  // namespace fastwhisper

// The Python module fastwhisper._C. Importing it runs the TORCH_LIBRARY registrations of every op.
#include <pybind11/pybind11.h>

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastwhisper C++/CUDA ops (registered under torch.ops.fastwhisper)";
#ifdef FASTWHISPER_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}

// The Python module fastwhisper._C. Importing it loads this library, whose static initializers run
// the TORCH_LIBRARY registrations of every op. Plain CPython (no pybind11): nothing here can clash
// with the pybind11 internals of torch or of other extensions.
#include <Python.h>

namespace {
PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "fastwhisper C++/CUDA ops (registered under torch.ops.fastwhisper)", -1, nullptr};
}

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
#ifdef FASTWHISPER_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddObject(m, "with_cuda", PyBool_FromLong(with_cuda)) != 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}

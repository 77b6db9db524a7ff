// The Python module fastwhisper._C. Importing it loads this library, whose static initializers run
// the TORCH_LIBRARY registrations of every op. Plain CPython (no pybind11): nothing here can clash
// with the pybind11 internals of torch or of other extensions.
#include <Python.h>

#include <c10/util/Exception.h>

#include "attention_backend.h"

namespace {

// _C.encoder_attention_backend() -> "auto" | "flash" | "cudnn" (FASTWHISPER_ENCODER_ATTENTION, read once);
// ValueError for any other value of the variable.
PyObject* encoder_attention_backend(PyObject*, PyObject*) {
  try {
    return PyUnicode_FromString(fastwhisper::attention_backend_name(fastwhisper::encoder_attention_backend()));
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    return nullptr;
  }
}

PyMethodDef methods[] = {
    {"encoder_attention_backend", encoder_attention_backend, METH_NOARGS,
     "The CUDA encoder's fp16/bf16 attention backend: FASTWHISPER_ENCODER_ATTENTION (auto, flash or cudnn)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "fastwhisper C++/CUDA ops (registered under torch.ops.fastwhisper)", -1, methods};
}  // namespace

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

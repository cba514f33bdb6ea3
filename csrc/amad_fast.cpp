// The op registry of amad_fast._C: defines the `amad_fast` op namespace and the Python module.
// Kernels register their ops from their own files with TORCH_LIBRARY_FRAGMENT(amad_fast, m).
#include <Python.h>
#include <torch/library.h>

#include <string>

namespace amad_fast {

// What this build contains, so Python can tell a CPU-only build from one with CUDA kernels.
std::string build_info() {
#ifdef AMAD_FAST_WITH_CUDA
  return "cpu+cuda";
#else
  return "cpu";
#endif
}

}  // namespace amad_fast

TORCH_LIBRARY(amad_fast, m) { m.def("build_info() -> str", &amad_fast::build_info); }

// An empty Python module: importing amad_fast._C loads this library, whose static
// initialisers register the ops above with the dispatcher.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

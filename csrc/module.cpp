// The extension module hcam_ops._C. Importing it loads this library, whose
// static initialisers register the hcam_ops operators with the dispatcher
// (and, in a build without CUDA, PyInit__C gives each a CUDA kernel that says
// so); its Python functions report the CPU kernels' instruction set and
// whether the CUDA kernels were built (the Python face of the ops is hcam_ops.ops).
#include <Python.h>

#include "ops/common.h"
#include "ops/cpu/isa.h"

namespace {

PyObject* cpu_capability(PyObject*, PyObject*) {
  return PyUnicode_FromString(hcam_ops::cpu::isa_name(hcam_ops::cpu::active_isa()));
}

// Whether this library holds the CUDA kernels (setup.py and CMakeLists.txt
// define HCAM_OPS_WITH_CUDA when they build them): in a build without them,
// every operator still has a CUDA kernel, the one that raises.
PyObject* cuda_built(PyObject*, PyObject*) {
#ifdef HCAM_OPS_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The instruction set the CPU kernels run at: DEFAULT, AVX2 or AVX512."},
    {"cuda_built", cuda_built, METH_NOARGS, "Whether this build holds the CUDA kernels."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
PyObject* PyInit__C(void) {
  // Every operator is registered by now (the library's static initialisers ran when it was loaded).
  hcam_ops::register_missing_cuda_kernels();
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

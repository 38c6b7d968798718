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

// Whether this library holds the CUDA kernels, compiled by nvcc or for the
// emulator (setup.py and CMakeLists.txt define HCAM_OPS_WITH_CUDA when they
// build them): in a build without them,
// every operator still has a CUDA kernel, the one that raises.
PyObject* cuda_built(PyObject*, PyObject*) {
#ifdef HCAM_OPS_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

// Whether the CUDA kernels of this build run on the emulator (HCAM_OPS_CUDA=emulate).
PyObject* cuda_emulated(PyObject*, PyObject*) {
#ifdef HCAM_OPS_EMULATED_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

// set_cuda_emulation(on) -> the previous setting: while on, this thread's
// hcam_ops calls on host tensors run the (emulated) CUDA kernels.
PyObject* set_cuda_emulation(PyObject*, PyObject* arg) {
  const int on = PyObject_IsTrue(arg);
  if (on < 0) return nullptr;
#ifdef HCAM_OPS_EMULATED_CUDA
  const bool was = hcam_ops::emulation::active();
  hcam_ops::emulation::set_active(on != 0);
  return PyBool_FromLong(was);
#else
  if (on) {
    PyErr_SetString(PyExc_RuntimeError,
                    "this build of hcam_ops does not emulate CUDA (build it with HCAM_OPS_CUDA=emulate)");
    return nullptr;
  }
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The instruction set the CPU kernels run at: DEFAULT, AVX2 or AVX512."},
    {"cuda_built", cuda_built, METH_NOARGS, "Whether this build holds the CUDA kernels."},
    {"cuda_emulated", cuda_emulated, METH_NOARGS, "Whether this build's CUDA kernels run on the emulator."},
    {"set_cuda_emulation", set_cuda_emulation, METH_O,
     "set_cuda_emulation(on) -> previous: run this thread's hcam_ops calls on host tensors on the emulated CUDA "
     "kernels."},
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

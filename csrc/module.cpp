// The extension module hcam_ops._C. Importing it loads this library, whose
// static initialisers register the hcam_ops operators with the dispatcher; its
// one Python function reports the CPU kernels' instruction set (the Python
// face of the ops is hcam_ops.ops).
#include <Python.h>

#include "ops/cpu/isa.h"

namespace {

PyObject* cpu_capability(PyObject*, PyObject*) {
  return PyUnicode_FromString(hcam_ops::cpu::isa_name(hcam_ops::cpu::active_isa()));
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The instruction set the CPU kernels run at: DEFAULT, AVX2 or AVX512."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

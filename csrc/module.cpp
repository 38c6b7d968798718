// The extension module hcam_ops._C. Importing it loads this library, whose
// static initialisers register the hcam_ops operators with the dispatcher; it
// defines no Python functions of its own (the Python face is hcam_ops.ops).
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

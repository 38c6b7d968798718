// The extension module hcam_ops._C. Importing it loads this library, whose
// static initialisers register the hcam_ops operators with the dispatcher
// (and, in a build without CUDA, PyInit__C gives each a CUDA kernel that says
// so); its Python functions report the CPU kernels' instruction set and
// whether the CUDA kernels were built (the Python face of the ops is hcam_ops.ops).
#include <Python.h>

#include "ops/common.h"
#include "ops/cpu/isa.h"

#ifdef HCAM_OPS_EMULATED_CUDA
#include "emulator/torch/recording_allocator.h"
#include "emulator/traffic.h"
#endif

namespace {

constexpr const char* kNotEmulated =
    "this build of hcam_ops does not emulate CUDA (build it with HCAM_OPS_CUDA=emulate)";

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
    PyErr_SetString(PyExc_RuntimeError, kNotEmulated);
    return nullptr;
  }
  Py_RETURN_FALSE;
#endif
}

#ifdef HCAM_OPS_EMULATED_CUDA
// One launch's counters as a dict (hcam_ops.testing.traffic documents the keys).
PyObject* launch_dict(const hcam_emu::traffic::LaunchCount& c) {
  using hcam_emu::traffic::BufferCount;
  auto triple = [](const uint64_t (&v)[3]) {
    return Py_BuildValue("{s:K,s:K,s:K}", "load", (unsigned long long)v[0], "store", (unsigned long long)v[1],
                         "atomic", (unsigned long long)v[2]);
  };
  PyObject* buffers = PyList_New(0);
  if (buffers == nullptr) return nullptr;
  for (const BufferCount& b : c.buffers) {
    PyObject* d = Py_BuildValue("{s:K,s:K,s:N,s:N,s:N,s:K,s:K}", "base", (unsigned long long)b.base, "bytes",
                                (unsigned long long)b.bytes, "requests", triple(b.requests), "requested_bytes",
                                triple(b.requested_bytes), "sectors", triple(b.sectors), "unique_sectors_read",
                                (unsigned long long)b.unique_sectors_read, "unique_sectors_written",
                                (unsigned long long)b.unique_sectors_written);
    if (d == nullptr || PyList_Append(buffers, d) < 0) {
      Py_XDECREF(d);
      Py_DECREF(buffers);
      return nullptr;
    }
    Py_DECREF(d);
  }
  return Py_BuildValue("{s:s,s:(III),s:(III),s:N,s:N,s:N,s:K,s:K,s:K,s:K,s:N}", "kernel", c.kernel.c_str(), "grid",
                       c.grid.x, c.grid.y, c.grid.z, "block", c.block.x, c.block.y, c.block.z, "requests",
                       triple(c.requests), "requested_bytes", triple(c.requested_bytes), "sectors", triple(c.sectors),
                       "unique_sectors_read", (unsigned long long)c.unique_sectors_read, "unique_sectors_written",
                       (unsigned long long)c.unique_sectors_written, "dram_read_bytes",
                       (unsigned long long)c.dram_read_bytes, "dram_write_bytes",
                       (unsigned long long)c.dram_write_bytes, "buffers", buffers);
}
#endif

// Whether this build's emulated kernels report their memory accesses (docs/traffic.md).
PyObject* traffic_traced(PyObject*, PyObject*) {
#ifdef HCAM_OPS_EMULATED_CUDA
  if (hcam_emu::traffic::traced()) Py_RETURN_TRUE;
#endif
  Py_RETURN_FALSE;
}

// traffic_begin(l2_bytes): opens a traffic session.
PyObject* traffic_begin(PyObject*, PyObject* arg) {
#ifdef HCAM_OPS_EMULATED_CUDA
  const unsigned long long l2 = PyLong_AsUnsignedLongLong(arg);
  if (PyErr_Occurred()) return nullptr;
  try {
    hcam_emu::traffic::set_l2_bytes(l2);
    hcam_emu::traffic::install_recording_allocator();
    hcam_emu::traffic::begin();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
#else
  (void)arg;
  PyErr_SetString(PyExc_RuntimeError, kNotEmulated);
  return nullptr;
#endif
}

// traffic_end() -> [launch dict, ...]: closes the session.
PyObject* traffic_end(PyObject*, PyObject*) {
#ifdef HCAM_OPS_EMULATED_CUDA
  const auto launches = hcam_emu::traffic::end();
  PyObject* out = PyList_New(0);
  if (out == nullptr) return nullptr;
  for (const auto& c : launches) {
    PyObject* d = launch_dict(c);
    if (d == nullptr || PyList_Append(out, d) < 0) {
      Py_XDECREF(d);
      Py_DECREF(out);
      return nullptr;
    }
    Py_DECREF(d);
  }
  return out;
#else
  PyErr_SetString(PyExc_RuntimeError, kNotEmulated);
  return nullptr;
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
    {"traffic_traced", traffic_traced, METH_NOARGS,
     "Whether this build's emulated kernels report their loads and stores (docs/traffic.md)."},
    {"traffic_begin", traffic_begin, METH_O, "traffic_begin(l2_bytes): opens a traffic session (docs/traffic.md)."},
    {"traffic_end", traffic_end, METH_NOARGS, "traffic_end() -> the session's launches, each a dict of counters."},
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

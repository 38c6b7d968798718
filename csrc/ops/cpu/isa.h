// Runtime choice of the CPU kernels' instruction set, after ATen's DispatchStub
// (aten/src/ATen/native/DispatchStub.h). Every csrc/ops/cpu/*_kernel.cpp is
// compiled once per level: baseline x86-64 (CPU_CAPABILITY=DEFAULT, the flags
// of the whole extension), AVX2+FMA and AVX-512 (setup.py's BuildExt, the
// per-source properties of CMakeLists.txt). A kernel's entry point is a
// function template over Isa, declared once in a header and specialised once
// per compilation of its source (CPU_CAPABILITY names the level there), so the
// variants are distinct symbols; HCAM_CPU_DISPATCH picks the one for this CPU.
// Wheels stay portable: nothing is built for the build machine (-march=native).
#pragma once

namespace hcam_ops::cpu {

enum class Isa : int { DEFAULT = 0, AVX2 = 1, AVX512 = 2 };

// The level the kernels run at: the highest one that was compiled, that the
// CPU supports and that the environment allows. The CPU's level is torch's
// (at::get_cpu_capability(): cpuinfo, capped by ATEN_CPU_CAPABILITY);
// HCAM_OPS_CPU_CAPABILITY=default|avx2|avx512 caps it further (tests force
// each level this way). Read once, when the library is loaded.
Isa active_isa();
const char* isa_name(Isa isa);

}  // namespace hcam_ops::cpu

// Which variants this build holds: defined for the baseline sources by the
// build when it compiles them (x86-64 with GCC or Clang).
#if defined(HCAM_OPS_CPU_AVX512)
#define HCAM_CPU_AVX512_FN(fn) fn<::hcam_ops::cpu::Isa::AVX512>
#else
#define HCAM_CPU_AVX512_FN(fn) fn<::hcam_ops::cpu::Isa::DEFAULT>
#endif
#if defined(HCAM_OPS_CPU_AVX2)
#define HCAM_CPU_AVX2_FN(fn) fn<::hcam_ops::cpu::Isa::AVX2>
#else
#define HCAM_CPU_AVX2_FN(fn) fn<::hcam_ops::cpu::Isa::DEFAULT>
#endif

// The variant of the entry point `fn` (a function template over Isa) for the
// active level, as a function pointer: HCAM_CPU_DISPATCH(cpu::fgd_forward)(args).
#define HCAM_CPU_DISPATCH(fn)                                                              \
  (::hcam_ops::cpu::active_isa() == ::hcam_ops::cpu::Isa::AVX512 ? &HCAM_CPU_AVX512_FN(fn) \
   : ::hcam_ops::cpu::active_isa() == ::hcam_ops::cpu::Isa::AVX2 ? &HCAM_CPU_AVX2_FN(fn)   \
                                                                 : &fn<::hcam_ops::cpu::Isa::DEFAULT>)

// A CPU kernel source (cpu/<op>_kernel.cpp) registers its op from its
// baseline compilation only (#if defined(CPU_CAPABILITY_DEFAULT)), with the
// kernels HCAM_CPU_DISPATCH picks: torch's registration templates then exist
// in baseline code alone, never in a variant's (test_cpu_isa.py checks that no
// function outside the variants holds AVX instructions).

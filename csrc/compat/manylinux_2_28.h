// Forced into every translation unit of the wheel build (scripts/build_wheel.sh,
// HCAM_OPS_MANYLINUX=1 in setup.py; docs/wheels.md), never into a source build.
//
// The wheel is tagged manylinux_2_28: it must load on glibc 2.28. This
// toolchain (Debian bookworm: glibc 2.36, GCC 12) binds a few references to
// symbol versions newer than that; each is pinned here to a version glibc 2.28
// has, or kept out of the binary. Found with `objdump -T` on _C and checked by
// auditwheel; the list is what our sources reach, not every glibc change.
#pragma once

#if defined(__linux__) && defined(__x86_64__)
#include <features.h>  // __GLIBC__: nothing is included before this header
#endif
#if defined(__linux__) && defined(__x86_64__) && defined(__GLIBC__) && !defined(__CUDA_ARCH__)

// exp, log, pow, exp2, log2: glibc 2.29 added new versions without the errno
// wrapper (we build with -fno-math-errno); the GLIBC_2.2.5 ones compute the
// same values and also set errno.
__asm__(".symver exp,exp@GLIBC_2.2.5");
__asm__(".symver log,log@GLIBC_2.2.5");
__asm__(".symver pow,pow@GLIBC_2.2.5");
__asm__(".symver exp2,exp2@GLIBC_2.2.5");
__asm__(".symver log2,log2@GLIBC_2.2.5");

// pthread_once (std::call_once, static locals of libstdc++ inline code): glibc
// 2.34 moved libpthread into libc and gave the libc copy version GLIBC_2.34;
// the GLIBC_2.2.5 version is the same function (libpthread.so.0 before 2.34,
// still exported by libc since).
__asm__(".symver pthread_once,pthread_once@GLIBC_2.2.5");

// __libc_single_threaded (glibc 2.32): GCC 12's <ext/atomicity.h> reads it to
// skip the atomic reference-count updates of shared_ptr, std::string, ... in a
// single-threaded process. glibc 2.28 has no such variable, so the headers see
// ours instead, always 0 ("may be multi-threaded": the atomic path, as GCC 8's
// headers of the manylinux_2_28 toolchain take).
#define __libc_single_threaded hcam_ops_libc_single_threaded
#ifdef __cplusplus
extern "C" {
#endif
__attribute__((weak, visibility("hidden"))) char hcam_ops_libc_single_threaded = 0;
#ifdef __cplusplus
}
#endif

#endif

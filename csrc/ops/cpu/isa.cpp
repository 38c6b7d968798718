// The active CPU level (isa.h). Compiled for baseline x86-64 only: it runs
// before any variant is chosen.
#include "isa.h"

#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

namespace hcam_ops::cpu {

namespace {

constexpr Isa kCompiled =
#if defined(HCAM_OPS_CPU_AVX512)
    Isa::AVX512;
#elif defined(HCAM_OPS_CPU_AVX2)
    Isa::AVX2;
#else
    Isa::DEFAULT;
#endif

// torch's names ("DEFAULT", "AVX2", "AVX512"; other architectures' levels
// have no variant here and run the baseline), case-insensitive.
bool parse(std::string s, Isa* out) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  if (s == "DEFAULT") {
    *out = Isa::DEFAULT;
  } else if (s == "AVX2") {
    *out = Isa::AVX2;
  } else if (s == "AVX512") {
    *out = Isa::AVX512;
  } else {
    return false;
  }
  return true;
}

Isa detect() {
  Isa cpu = Isa::DEFAULT;
  parse(at::get_cpu_capability(), &cpu);
  Isa isa = std::min(cpu, kCompiled);
  if (const char* env = std::getenv("HCAM_OPS_CPU_CAPABILITY"); env != nullptr && *env != '\0') {
    Isa wanted;
    if (!parse(env, &wanted)) {
      // A warning, not an error: this runs while the library registers its
      // kernels, where an exception would make `import hcam_ops` fail.
      TORCH_WARN("hcam_ops: HCAM_OPS_CPU_CAPABILITY=", env, " is not one of default, avx2, avx512; ignored");
    } else {
      // Only ever lower: a level the CPU lacks would fault on the first kernel.
      isa = std::min(isa, wanted);
    }
  }
  return isa;
}

}  // namespace

Isa active_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::AVX512:
      return "AVX512";
    case Isa::AVX2:
      return "AVX2";
    default:
      return "DEFAULT";
  }
}

}  // namespace hcam_ops::cpu

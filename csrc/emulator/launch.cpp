// An emulated launch: the launch configuration checked against the device's
// limits, then the blocks spread over OS threads (HCAM_OPS_EMULATOR_THREADS,
// default: the machine's cores), each running one block at a time.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "func_attributes.h"
#include "runtime.h"
#include "scheduler.h"
#include "traffic.h"

namespace hcam_emu {

namespace {

// The dynamic shared memory of the block running on this OS thread.
thread_local void* tls_dynamic_smem = nullptr;

std::string dims(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

void check_config(const char* kernel, const void* func, dim3 grid, dim3 block, size_t smem) {
  const std::string k = std::string("hcam_ops emulator: kernel ") + kernel + ": ";
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || static_cast<uint64_t>(grid.x) * grid.y * grid.z == 0) {
    throw std::invalid_argument(k + "empty launch: grid " + dims(grid) + ", block " + dims(block));
  }
  if (threads > Limits::kThreadsPerBlock || block.x > 1024 || block.y > 1024 || block.z > Limits::kBlockDimZ) {
    throw std::invalid_argument(k + "block " + dims(block) + " is beyond the device's limit of " +
                                std::to_string(Limits::kThreadsPerBlock) + " threads (x, y <= 1024, z <= 64)");
  }
  if (grid.x > Limits::kGridDimX || grid.y > Limits::kGridDimYZ || grid.z > Limits::kGridDimYZ) {
    throw std::invalid_argument(k + "grid " + dims(grid) + " is beyond the device's limits (x < 2^31, y, z <= 65535)");
  }
  const int allowed = max_dynamic_shared(func);
  if (smem > static_cast<size_t>(allowed)) {
    throw std::invalid_argument(k + std::to_string(smem) + " bytes of dynamic shared memory, above the " +
                                std::to_string(allowed) +
                                " this kernel may use (48 KiB unless cudaFuncSetAttribute raised it, at most 227 KiB)");
  }
}

int worker_count(uint64_t blocks) {
  int n = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("HCAM_OPS_EMULATOR_THREADS"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (*end != '\0' || v < 1) {
      throw std::invalid_argument(std::string("HCAM_OPS_EMULATOR_THREADS must be a positive whole number, got '") +
                                  env + "'");
    }
    n = static_cast<int>(v);
  }
  if (n < 1) n = 1;
  return static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(n), blocks));
}

}  // namespace

void* dynamic_shared_memory() {
  return tls_dynamic_smem;
}

void launch(const char* kernel, const void* func, dim3 grid, dim3 block, size_t dynamic_smem,
            void (*body)(void* closure), void* closure) {
  check_config(kernel, func, grid, block, dynamic_smem);
  const ScheduleChoice schedule = schedule_from_env();
  const uint64_t blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
  const BlockLaunch bl{grid, block, body, closure};

  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::string error;
  uint3 error_block{0, 0, 0};

  // A traffic session (traffic.h) counts the launch: its blocks run in order
  // on this thread, each block's accesses accounted when it ends.
  const bool counted = traffic::active();
  if (counted) traffic::launch_begin(kernel, grid, block);
  const unsigned block_threads = block.x * block.y * block.z;

  auto work = [&] {
    thread_local StackPool stacks;
    std::vector<std::max_align_t> smem((dynamic_smem + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t));
    void* const outer = tls_dynamic_smem;
    tls_dynamic_smem = smem.data();
    try {
      for (uint64_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < blocks;) {
        const uint3 idx{static_cast<unsigned>(i % grid.x), static_cast<unsigned>(i / grid.x % grid.y),
                        static_cast<unsigned>(i / grid.x / grid.y)};
        // Shared memory starts as garbage on a GPU: 0xff bytes read as NaN.
        if (dynamic_smem) std::memset(smem.data(), 0xff, dynamic_smem);
        if (counted) traffic::block_begin(block_threads);
        std::string e = run_block(bl, idx, schedule, stacks);
        if (counted) traffic::block_end();
        if (!e.empty()) {
          const std::lock_guard<std::mutex> lock(mutex);
          if (!failed.exchange(true)) {
            error = std::move(e);
            error_block = idx;
          }
        }
      }
    } catch (const std::exception& e) {
      if (counted) traffic::block_end();
      const std::lock_guard<std::mutex> lock(mutex);
      if (!failed.exchange(true)) error = e.what();
    }
    tls_dynamic_smem = outer;
  };

  const int workers = counted ? 1 : worker_count(blocks);
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (counted) traffic::launch_end();
  if (failed) {
    throw std::runtime_error(std::string("hcam_ops emulator: kernel ") + kernel + ", block " +
                             dims(dim3(error_block.x, error_block.y, error_block.z)) + " of grid " + dims(grid) +
                             ", block size " + dims(block) + ": " + error);
  }
}

}  // namespace hcam_emu

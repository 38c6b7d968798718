#include "scheduler.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace hcam_emu {

namespace {

enum class Wait : uint8_t { kRunnable, kBarrier, kWarp, kDone };

enum class Collective : uint8_t { kNone, kShflXor, kBallot };

const char* collective_name(Collective c) {
  return c == Collective::kShflXor ? "__shfl_xor_sync" : c == Collective::kBallot ? "__ballot_sync" : "none";
}

struct Site {
  const char* file = nullptr;
  int line = 0;
  bool operator==(const Site& o) const { return line == o.line && std::strcmp(file, o.file) == 0; }
};

std::string where(const Site& s) {
  const char* slash = std::strrchr(s.file, '/');
  return std::string(slash ? slash + 1 : s.file) + ":" + std::to_string(s.line);
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

// A warp collective in progress: what the first lane to arrive asked for,
// and each arrived lane's operand.
struct WarpOp {
  Collective kind = Collective::kNone;
  unsigned mask = 0, arrived = 0;
  int width = 32;
  Site site;
  uint64_t value[32];
  int lane_mask[32];
  uint64_t result[32];
};

struct Thread {
  Fiber fiber;
  ThreadCoords coords;
  Wait wait = Wait::kRunnable;
  Site site;  // the barrier it waits at
};

class Block;
thread_local Block* tls_block = nullptr;

class Block {
 public:
  Block(const BlockLaunch& launch, uint3 index, const ScheduleChoice& schedule, StackPool& stacks)
      : launch_(launch), schedule_(schedule.kind) {
    const dim3 b = launch.block;
    const int n = static_cast<int>(b.x * b.y * b.z);
    threads_.resize(n);
    warps_.resize((n + 31) / 32);
    words_.assign((n + 63) / 64, 0);
    for (int i = 0; i < n; ++i) {
      Thread& t = threads_[i];
      t.coords.thread_idx = {i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
      t.coords.block_idx = index;
      t.coords.block_dim = b;
      t.coords.grid_dim = launch.grid;
      t.fiber.start(&thread_main, stacks.stack(i));
      set_runnable(i);
    }
    const uint64_t linear = index.x + static_cast<uint64_t>(launch.grid.x) * (index.y + launch.grid.y * index.z);
    rng_.seed(schedule.seed * 0x9e3779b97f4a7c15ull + linear);
  }

  std::string run() {
    Block* outer = tls_block;
    tls_block = this;
    const int n = static_cast<int>(threads_.size());
    while (error_.empty()) {
      const int next = pick();
      if (next < 0) {
        if (done_ == n) break;
        release_or_report();
        continue;
      }
      current_ = last_ = next;
      tls_coords = &threads_[next].coords;
      switch_to(scheduler_, threads_[next].fiber.context);
    }
    tls_coords = nullptr;
    tls_block = outer;
    return error_;
  }

  void barrier(Site site) {
    threads_[current_].site = site;
    wait_as(Wait::kBarrier);
  }

  uint64_t collective(Collective kind, unsigned mask, uint64_t value, int lane_mask, int width, Site site) {
    const int tid = current_, lane = tid % 32, w = tid / 32;
    const int lanes = std::min(32, static_cast<int>(threads_.size()) - 32 * w);
    const unsigned present = lanes == 32 ? ~0u : (1u << lanes) - 1u;
    // Built only for an error: collectives are the emulator's hottest path.
    auto what = [&] {
      return std::string(collective_name(kind)) + " at " + where(site) + " by thread " + std::to_string(tid) +
             " (warp " + std::to_string(w) + ", lane " + std::to_string(lane) + ")";
    };
    if (!(mask >> lane & 1u)) fail(what() + ": its mask " + hex(mask) + " leaves out the calling lane");
    if (mask & ~present) {
      fail(what() + ": mask " + hex(mask) + " names lanes the warp does not have (a partial warp of " +
           std::to_string(lanes) + " threads)");
    }
    for (int l = 0; l < 32; ++l) {
      if ((mask >> l & 1u) && threads_[32 * w + l].wait == Wait::kDone) {
        fail(what() + ": mask " + hex(mask) + " names lane " + std::to_string(l) + ", which has exited");
      }
    }
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
      fail(what() + ": width " + std::to_string(width) + " is not a power of two up to 32");
    }
    WarpOp& op = warps_[w];
    if (op.arrived == 0) {
      op.kind = kind;
      op.mask = mask;
      op.width = width;
      op.site = site;
    } else if (op.kind != kind || op.mask != mask || op.width != width) {
      fail("lanes of warp " + std::to_string(w) + " at different warp collectives: " + collective_name(op.kind) +
           " at " + where(op.site) + " with mask " + hex(op.mask) + ", and " + what() + " with mask " + hex(mask));
    }
    op.value[lane] = value;
    op.lane_mask[lane] = lane_mask;
    op.arrived |= 1u << lane;
    if (op.arrived != mask) {
      wait_as(Wait::kWarp);
      return op.result[lane];
    }
    complete(op, w);
    const uint64_t mine = op.result[lane];
    switch_to(threads_[tid].fiber.context, scheduler_);  // still runnable: the schedule picks who goes on
    return mine;
  }

  [[noreturn]] void fail(const std::string& message) {
    if (error_.empty()) error_ = message;
    exit_current();
  }

  static void thread_main() {
    Block* b = tls_block;
    try {
      b->launch_.body(b->launch_.closure);
    } catch (const std::exception& e) {
      b->fail(std::string("thread ") + std::to_string(b->current_) + " raised: " + e.what());
    }
    b->exit_current();
  }

 private:
  // The running thread waits (at a barrier or a collective) until released.
  void wait_as(Wait wait) {
    threads_[current_].wait = wait;
    clear_runnable(current_);
    switch_to(threads_[current_].fiber.context, scheduler_);
  }

  // The running thread is done: its fiber is never resumed.
  [[noreturn]] void exit_current() {
    Thread& t = threads_[current_];
    if (t.wait != Wait::kDone) {
      t.wait = Wait::kDone;
      ++done_;
    }
    clear_runnable(current_);
    switch_to(t.fiber.context, scheduler_);
    std::abort();
  }

  void set_runnable(int i) {
    words_[i >> 6] |= 1ull << (i & 63);
    ++runnable_;
  }
  void clear_runnable(int i) {
    const uint64_t bit = 1ull << (i & 63);
    if (words_[i >> 6] & bit) {
      words_[i >> 6] &= ~bit;
      --runnable_;
    }
  }

  // The first runnable thread at or after `from`, wrapping around; -1 if none.
  int next_from(int from) const {
    const int words = static_cast<int>(words_.size());
    for (int k = 0; k <= words; ++k) {
      const int wi = ((from >> 6) + k) % words;
      uint64_t w = words_[wi];
      if (k == 0) w &= ~0ull << (from & 63);
      if (w) return wi * 64 + __builtin_ctzll(w);
    }
    return -1;
  }

  int pick() {
    if (runnable_ == 0) return -1;
    const int n = static_cast<int>(threads_.size());
    switch (schedule_) {
      case Schedule::kRoundRobin:
        return next_from((last_ + 1) % n);
      case Schedule::kWarpGreedy:
        return next_from(0);
      case Schedule::kWarpGreedyReversed:
        for (int wi = static_cast<int>(words_.size()) - 1; wi >= 0; --wi) {
          if (words_[wi]) return wi * 64 + 63 - __builtin_clzll(words_[wi]);
        }
        return -1;
      case Schedule::kRandom: {
        int k = static_cast<int>(rng_() % static_cast<uint64_t>(runnable_));
        for (size_t wi = 0; wi < words_.size(); ++wi) {
          const int c = __builtin_popcountll(words_[wi]);
          if (k < c) {
            uint64_t w = words_[wi];
            for (int j = 0; j < k; ++j) w &= w - 1;
            return static_cast<int>(wi) * 64 + __builtin_ctzll(w);
          }
          k -= c;
        }
        return -1;
      }
    }
    return -1;
  }

  void complete(WarpOp& op, int w) {
    const unsigned mask = op.mask;
    if (op.kind == Collective::kBallot) {
      unsigned bits = 0;
      for (int l = 0; l < 32; ++l) {
        if ((mask >> l & 1u) && op.value[l] != 0) bits |= 1u << l;
      }
      for (int l = 0; l < 32; ++l) op.result[l] = bits;
    } else {
      for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        int src = l ^ op.lane_mask[l];
        if (src >= (l / op.width + 1) * op.width) src = l;  // CUDA: a later segment gives one's own value
        if (!(mask >> src & 1u)) {
          fail(std::string("__shfl_xor_sync at ") + where(op.site) + ": lane " + std::to_string(l) + " of warp " +
               std::to_string(w) + " reads lane " + std::to_string(src) + ", which mask " + hex(mask) + " leaves out");
        }
        op.result[l] = op.value[src];
      }
    }
    for (int l = 0; l < 32; ++l) {
      const int tid = 32 * w + l;
      if ((mask >> l & 1u) && threads_[tid].wait == Wait::kWarp) {
        threads_[tid].wait = Wait::kRunnable;
        set_runnable(tid);
      }
    }
    op.arrived = 0;
    op.kind = Collective::kNone;
  }

  // "threads 0-31, 64" or "thread 5".
  static std::string ranges(const std::vector<int>& ids) {
    std::string s = ids.size() == 1 ? "thread " : "threads ";
    for (size_t i = 0; i < ids.size();) {
      size_t j = i;
      while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
      if (i > 0) s += ", ";
      s += std::to_string(ids[i]);
      if (j > i) s += "-" + std::to_string(ids[j]);
      i = j + 1;
    }
    return s;
  }

  // Nobody can run: every live thread waits at a barrier (release them, or
  // report that they wait at different ones, or for a thread that exited), or
  // some wait at a warp collective that cannot complete (report it).
  void release_or_report() {
    const int n = static_cast<int>(threads_.size());
    for (size_t w = 0; w < warps_.size(); ++w) {
      const WarpOp& op = warps_[w];
      if (op.arrived == 0) continue;
      std::string missing;
      for (int l = 0; l < 32; ++l) {
        if (!(op.mask >> l & 1u) || (op.arrived >> l & 1u)) continue;
        const Thread& t = threads_[32 * w + l];
        missing += missing.empty() ? "" : "; ";
        missing += "lane " + std::to_string(l) +
                   (t.wait == Wait::kDone ? " has exited" : " waits at the barrier at " + where(t.site));
      }
      error_ = "deadlock: warp " + std::to_string(w) + " waits at " + collective_name(op.kind) + " at " +
               where(op.site) + " (mask " + hex(op.mask) + ") for lanes that cannot arrive: " + missing;
      return;
    }
    std::vector<int> exited, first_site, other_site;
    Site site;
    bool have_site = false;
    for (int i = 0; i < n; ++i) {
      const Thread& t = threads_[i];
      if (t.wait == Wait::kDone) {
        exited.push_back(i);
      } else if (!have_site || t.site == site) {
        site = t.site;
        have_site = true;
        first_site.push_back(i);
      } else {
        other_site.push_back(i);
      }
    }
    if (!other_site.empty()) {
      const Site other = threads_[other_site[0]].site;
      std::vector<int> at_other;
      for (int i : other_site) {
        if (threads_[i].site == other) at_other.push_back(i);
      }
      error_ = "threads of one block at different barriers: " + ranges(first_site) + " at " + where(site) + ", " +
               ranges(at_other) + " at " + where(other);
      return;
    }
    if (!exited.empty()) {
      error_ = ranges(exited) + " exited while " + ranges(first_site) + " wait at the barrier at " + where(site);
      return;
    }
    for (int i = 0; i < n; ++i) {
      threads_[i].wait = Wait::kRunnable;
      set_runnable(i);
    }
  }

  const BlockLaunch& launch_;
  Schedule schedule_;
  std::vector<Thread> threads_;
  std::vector<WarpOp> warps_;
  std::vector<uint64_t> words_;  // runnable threads, a bit each
  int runnable_ = 0, done_ = 0, current_ = -1, last_ = -1;
  Context scheduler_;
  std::string error_;
  std::mt19937_64 rng_;
};

Block& running_block(const char* what) {
  if (tls_block == nullptr) {
    throw std::logic_error(std::string("hcam_ops emulator: ") + what + " called outside an emulated kernel");
  }
  return *tls_block;
}

}  // namespace

ScheduleChoice schedule_from_env() {
  ScheduleChoice s;
  if (const char* name = std::getenv("HCAM_OPS_EMULATOR_SCHEDULE"); name != nullptr && *name != '\0') {
    const std::string v(name);
    if (v == "round-robin") {
      s.kind = Schedule::kRoundRobin;
    } else if (v == "warp-greedy") {
      s.kind = Schedule::kWarpGreedy;
    } else if (v == "warp-greedy-reversed") {
      s.kind = Schedule::kWarpGreedyReversed;
    } else if (v == "random") {
      s.kind = Schedule::kRandom;
    } else {
      throw std::invalid_argument(
          "HCAM_OPS_EMULATOR_SCHEDULE must be round-robin, warp-greedy, "
          "warp-greedy-reversed or random, got '" +
          v + "'");
    }
  }
  if (const char* seed = std::getenv("HCAM_OPS_EMULATOR_SEED"); seed != nullptr && *seed != '\0') {
    char* end = nullptr;
    s.seed = std::strtoull(seed, &end, 10);
    if (*end != '\0') {
      throw std::invalid_argument(std::string("HCAM_OPS_EMULATOR_SEED must be a whole number, got '") + seed + "'");
    }
  }
  return s;
}

std::string run_block(const BlockLaunch& launch, uint3 index, const ScheduleChoice& schedule, StackPool& stacks) {
  Block block(launch, index, schedule, stacks);
  return block.run();
}

void syncthreads(const char* file, int line) {
  running_block("__syncthreads").barrier(Site{file, line});
}

uint64_t shfl_xor(unsigned mask, uint64_t bits, int lane_mask, int width, const char* file, int line) {
  return running_block("__shfl_xor_sync")
      .collective(Collective::kShflXor, mask, bits, lane_mask, width, Site{file, line});
}

unsigned ballot(unsigned mask, bool predicate, const char* file, int line) {
  return static_cast<unsigned>(
      running_block("__ballot_sync").collective(Collective::kBallot, mask, predicate ? 1 : 0, 0, 32, Site{file, line}));
}

}  // namespace hcam_emu

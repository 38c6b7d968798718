// The traffic counters of traffic.h: the registry of global memory, the
// per-thread access logs of a block, their
// grouping into warp-level requests and sectors, the unique sectors and the
// L2 model. docs/traffic.md says what each counter means and what the model
// leaves out.
#include "traffic.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "runtime.h"

namespace hcam_emu::traffic {

namespace {

constexpr int kSectorShift = 5;  // 32-byte sectors
constexpr int kLineShift = 7;    // 128-byte L2 lines: 4 sectors

// --- Which memory is global memory: the registered buffers -------------------

struct Allocation {
  uintptr_t base = 0, end = 0;
};

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

std::map<uintptr_t, uintptr_t>& registry() {  // base -> end, every live buffer
  static auto* r = new std::map<uintptr_t, uintptr_t>();
  return *r;
}

// --- The L2 model ------------------------------------------------------------

// An LRU cache of 128-byte lines, filled and written back by 32-byte sector.
class L2Model {
 public:
  explicit L2Model(uint64_t bytes) : capacity_(std::max<uint64_t>(1, bytes >> kLineShift)) {
    lines_.reserve(static_cast<size_t>(std::min<uint64_t>(capacity_, 1u << 20)));
    index_.reserve(static_cast<size_t>(std::min<uint64_t>(capacity_, 1u << 20)));
  }

  void access(uint64_t sector, Kind kind) {
    const uint64_t tag = sector >> (kLineShift - kSectorShift);
    const uint8_t bit = static_cast<uint8_t>(1u << (sector & 3));
    Line& line = lines_[touch(tag)];
    if (kind != kStore && !(line.valid & bit)) {
      read_bytes += 32;
      line.valid |= bit;
    }
    if (kind != kLoad) {
      line.valid |= bit;
      line.dirty |= bit;
    }
  }

  // Writes back every dirty sector (the end of the launch).
  void flush() {
    for (Line& l : lines_) {
      write_bytes += 32u * static_cast<uint64_t>(__builtin_popcount(l.dirty));
      l.dirty = 0;
    }
  }

  uint64_t read_bytes = 0, write_bytes = 0;

 private:
  static constexpr uint32_t kNone = 0xffffffffu;
  struct Line {
    uint64_t tag;
    uint32_t prev, next;
    uint8_t valid, dirty;
  };

  // The slot of line `tag`, made the most recently used (allocated, evicting
  // the least recently used line, when absent).
  uint32_t touch(uint64_t tag) {
    auto it = index_.find(tag);
    uint32_t slot;
    if (it != index_.end()) {
      slot = it->second;
      unlink(slot);
    } else if (lines_.size() < capacity_) {
      slot = static_cast<uint32_t>(lines_.size());
      lines_.push_back(Line{tag, kNone, kNone, 0, 0});
      index_.emplace(tag, slot);
    } else {
      slot = tail_;
      unlink(slot);
      Line& victim = lines_[slot];
      write_bytes += 32u * static_cast<uint64_t>(__builtin_popcount(victim.dirty));
      index_.erase(victim.tag);
      victim = Line{tag, kNone, kNone, 0, 0};
      index_.emplace(tag, slot);
    }
    // Most recently used at the head.
    Line& l = lines_[slot];
    l.prev = kNone;
    l.next = head_;
    if (head_ != kNone) lines_[head_].prev = slot;
    head_ = slot;
    if (tail_ == kNone) tail_ = slot;
    return slot;
  }

  void unlink(uint32_t slot) {
    Line& l = lines_[slot];
    if (l.prev != kNone) lines_[l.prev].next = l.next;
    else head_ = l.next;
    if (l.next != kNone) lines_[l.next].prev = l.prev;
    else tail_ = l.prev;
    l.prev = l.next = kNone;
  }

  uint64_t capacity_;
  std::vector<Line> lines_;
  std::unordered_map<uint64_t, uint32_t> index_;
  uint32_t head_ = kNone, tail_ = kNone;
};

// --- A session, a launch, a block ---------------------------------------------

struct Event {
  uintptr_t pc;
  uintptr_t addr;
  uint32_t bytes;
  uint32_t buffer;
  Kind kind;
};

// One warp-level request: the accesses of a warp's lanes at one code
// location, each lane's n-th execution there.
struct Request {
  uint32_t order;  // the earliest position among its lanes' logs
  uint32_t buffer;
  Kind kind;
  uint32_t requested = 0;                       // distinct bytes the lanes asked for (a broadcast counts once)
  uint32_t first_sector = 0, sector_count = 0;  // into the block's sector list
};

// A finished block's requests in issue order, with their sectors.
struct BlockStream {
  std::vector<Request> requests;
  std::vector<uint64_t> sectors;
  size_t next = 0;
};

struct LaunchState {
  LaunchCount count;
  std::vector<Allocation> buffers;             // the allocations live at the launch, by base
  std::vector<std::vector<uint64_t>> read_;    // per buffer: a bit per sector read first
  std::vector<std::vector<uint64_t>> written;  // per buffer: a bit per sector written
  L2Model l2;
  std::vector<BlockStream> resident;  // the blocks issuing together
  size_t max_resident = 1;

  explicit LaunchState(uint64_t l2_bytes) : l2(l2_bytes) {}

  int find(uintptr_t addr) const {
    auto it = std::upper_bound(buffers.begin(), buffers.end(), addr,
                               [](uintptr_t a, const Allocation& b) { return a < b.base; });
    if (it == buffers.begin()) return -1;
    --it;
    return addr < it->end ? static_cast<int>(it - buffers.begin()) : -1;
  }
};

struct BlockTrace {
  LaunchState* launch = nullptr;
  std::vector<std::vector<Event>> threads;
  int last_buffer = -1;
};

std::atomic<bool> g_active{false};
std::mutex g_session_mutex;
std::vector<LaunchCount> g_launches;
uint64_t g_l2_bytes = 50ull << 20;
LaunchState* g_launch = nullptr;

thread_local BlockTrace* tls_trace = nullptr;
thread_local BlockTrace tls_block;

bool test_and_set(std::vector<uint64_t>& bits, uint64_t i) {
  const uint64_t word = i >> 6, mask = 1ull << (i & 63);
  const bool was = bits[word] & mask;
  bits[word] |= mask;
  return was;
}

bool test(const std::vector<uint64_t>& bits, uint64_t i) {
  return bits[i >> 6] >> (i & 63) & 1ull;
}

struct PairHash {
  size_t operator()(const std::pair<uintptr_t, uint32_t>& k) const {
    return std::hash<uintptr_t>()(k.first * 0x9e3779b97f4a7c15ull ^ k.second);
  }
};

// The requests of one warp: lists of (request, lane event) by request.
// Lanes in lock-step (the same code locations in the same order, the common
// case) pair up by position; otherwise by (location, n-th execution there).
void group_warp(const BlockTrace& t, size_t lo, size_t hi, std::vector<Request>& requests,
                std::vector<std::vector<const Event*>>& members) {
  const size_t first = requests.size();
  size_t len = t.threads[lo].size();
  bool lockstep = true;
  for (size_t lane = lo + 1; lane < hi && lockstep; ++lane) {
    const auto& a = t.threads[lo];
    const auto& b = t.threads[lane];
    if (b.size() != len) {
      lockstep = false;
      break;
    }
    for (size_t i = 0; i < len; ++i) {
      if (a[i].pc != b[i].pc) {
        lockstep = false;
        break;
      }
    }
  }
  if (lockstep) {
    for (size_t i = 0; i < len; ++i) {
      const Event& e = t.threads[lo][i];
      requests.push_back(Request{static_cast<uint32_t>(i), e.buffer, e.kind});
      members.emplace_back();
      for (size_t lane = lo; lane < hi; ++lane) members.back().push_back(&t.threads[lane][i]);
    }
    return;
  }
  std::unordered_map<std::pair<uintptr_t, uint32_t>, uint32_t, PairHash> by_key;
  std::unordered_map<uintptr_t, uint32_t> executions;
  for (size_t lane = lo; lane < hi; ++lane) {
    executions.clear();
    const std::vector<Event>& log = t.threads[lane];
    for (size_t pos = 0; pos < log.size(); ++pos) {
      const Event& e = log[pos];
      const uint32_t nth = executions[e.pc]++;
      auto [it, fresh] = by_key.try_emplace({e.pc, nth}, static_cast<uint32_t>(requests.size()));
      if (fresh) {
        requests.push_back(Request{static_cast<uint32_t>(pos), e.buffer, e.kind});
        members.emplace_back();
      }
      Request& r = requests[it->second];
      r.order = std::min<uint32_t>(r.order, static_cast<uint32_t>(pos));
      members[it->second].push_back(&e);
    }
  }
  // In the order the lanes issue them.
  std::vector<uint32_t> idx(requests.size() - first);
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<uint32_t>(first + i);
  std::stable_sort(idx.begin(), idx.end(), [&](uint32_t x, uint32_t y) { return requests[x].order < requests[y].order; });
  std::vector<Request> r2;
  std::vector<std::vector<const Event*>> m2;
  for (uint32_t i : idx) {
    r2.push_back(requests[i]);
    m2.push_back(std::move(members[i]));
  }
  std::copy(r2.begin(), r2.end(), requests.begin() + first);
  std::move(m2.begin(), m2.end(), members.begin() + first);
}

// A finished block's logs as a stream of requests, warps interleaved one
// request each (warps advance together, as on an SM).
BlockStream block_stream(const BlockTrace& t) {
  const size_t n_threads = t.threads.size();
  const size_t n_warps = (n_threads + 31) / 32;
  std::vector<std::vector<Request>> warp_requests(n_warps);
  std::vector<std::vector<std::vector<const Event*>>> warp_members(n_warps);
  for (size_t w = 0; w < n_warps; ++w) {
    group_warp(t, w * 32, std::min(n_threads, w * 32 + 32), warp_requests[w], warp_members[w]);
  }
  BlockStream out;
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;
  for (size_t step = 0;; ++step) {
    bool any = false;
    for (size_t w = 0; w < n_warps; ++w) {
      if (step >= warp_requests[w].size()) continue;
      any = true;
      Request r = warp_requests[w][step];
      const auto& lanes = warp_members[w][step];
      spans.clear();
      for (const Event* e : lanes) spans.emplace_back(e->addr, e->addr + e->bytes);
      std::sort(spans.begin(), spans.end());
      // Distinct bytes, and the distinct sectors in address order.
      uint64_t bytes = 0, last_end = 0, last_sector = ~0ull;
      r.first_sector = static_cast<uint32_t>(out.sectors.size());
      for (const auto& [lo, hi] : spans) {
        const uint64_t from = std::max<uint64_t>(lo, last_end);
        if (hi > from) bytes += hi - from;
        last_end = std::max<uint64_t>(last_end, hi);
        for (uint64_t sct = lo >> kSectorShift; sct <= (hi - 1) >> kSectorShift; ++sct) {
          if (last_sector == ~0ull || sct > last_sector) {
            out.sectors.push_back(sct);
            last_sector = sct;
          }
        }
      }
      r.requested = static_cast<uint32_t>(bytes);
      r.sector_count = static_cast<uint32_t>(out.sectors.size() - r.first_sector);
      out.requests.push_back(r);
    }
    if (!any) break;
  }
  return out;
}

// Counts one request and runs its sectors through the unique sets and the L2 model.
// The unique-sector bitmaps of buffer i, made on first use.
void ensure_bits(LaunchState& L, int i) {
  if (!L.read_[i].empty()) return;
  const uint64_t first = L.buffers[i].base >> kSectorShift;
  const uint64_t last = (L.buffers[i].end + 31) >> kSectorShift;
  L.read_[i].assign((last - first + 64) / 64, 0);
  L.written[i].assign((last - first + 64) / 64, 0);
}

// Counts one request and runs its sectors through the unique sets and the L2 model.
void issue(LaunchState& L, const BlockStream& b, const Request& r) {
  LaunchCount& c = L.count;
  BufferCount& bc = c.buffers[r.buffer];
  c.requests[r.kind] += 1;
  c.requested_bytes[r.kind] += r.requested;
  c.sectors[r.kind] += r.sector_count;
  bc.requests[r.kind] += 1;
  bc.requested_bytes[r.kind] += r.requested;
  bc.sectors[r.kind] += r.sector_count;
  for (uint32_t k = 0; k < r.sector_count; ++k) {
    const uint64_t s = b.sectors[r.first_sector + k];
    // The sector's own buffer: a request is filed under its first lane's,
    // but other lanes (or a pack's second sector) may lie in another.
    int bi = static_cast<int>(r.buffer);
    const uint64_t addr = s << kSectorShift;
    if (addr >= L.buffers[bi].end || addr + (1u << kSectorShift) <= L.buffers[bi].base) {
      bi = L.find(addr);
      if (bi < 0) bi = L.find(addr + (1u << kSectorShift) - 1);
    }
    L.l2.access(s, r.kind);
    if (bi < 0) continue;
    ensure_bits(L, bi);
    const uint64_t i = s - (L.buffers[bi].base >> kSectorShift);
    BufferCount& owner = c.buffers[bi];
    // Unique: what an L2 that kept everything would move. A sector read
    // after the launch wrote it is no DRAM read.
    if (r.kind != kStore && !test(L.written[bi], i) && !test_and_set(L.read_[bi], i)) {
      ++c.unique_sectors_read;
      ++owner.unique_sectors_read;
    }
    if (r.kind != kLoad && !test_and_set(L.written[bi], i)) {
      ++c.unique_sectors_written;
      ++owner.unique_sectors_written;
    }
  }
}

// Resident blocks issue together, one request each in turn, until one of
// them ends; then the next block in the emulator's order takes its place.
// `drain`: the launch has ended, run every resident block to its end.
void advance(LaunchState& L, bool drain) {
  auto& res = L.resident;
  while (!res.empty() && (drain || res.size() >= L.max_resident)) {
    bool ended = false;
    for (size_t i = 0; i < res.size(); ++i) {
      BlockStream& b = res[i];
      if (b.next < b.requests.size()) issue(L, b, b.requests[b.next++]);
      if (b.next >= b.requests.size()) ended = true;
    }
    if (ended) {
      res.erase(std::remove_if(res.begin(), res.end(),
                               [](const BlockStream& b) { return b.next >= b.requests.size(); }),
                res.end());
    }
  }
}

void account_block(BlockTrace& t) {
  LaunchState& L = *t.launch;
  L.resident.push_back(block_stream(t));
  advance(L, false);
}

}  // namespace

#ifdef HCAM_OPS_EMULATOR_TRACED
bool traced() {
  return true;
}
#else
bool traced() {
  return false;
}
#endif

void add_buffer(const void* base, size_t bytes) {
  if (base == nullptr || bytes == 0) return;
  const auto b = reinterpret_cast<uintptr_t>(base);
  const std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[b] = b + bytes;
}

void remove_buffer(const void* base) {
  const std::lock_guard<std::mutex> lock(registry_mutex());
  registry().erase(reinterpret_cast<uintptr_t>(base));
}

void begin() {
  const std::lock_guard<std::mutex> lock(g_session_mutex);
  if (g_active.load()) throw std::runtime_error("hcam_ops emulator: a traffic session is open already");
  g_launches.clear();
  g_active.store(true);
}

std::vector<LaunchCount> end() {
  const std::lock_guard<std::mutex> lock(g_session_mutex);
  g_active.store(false);
  return std::exchange(g_launches, {});
}

bool active() {
  return g_active.load(std::memory_order_relaxed);
}

void set_l2_bytes(uint64_t bytes) {
  if (bytes < 128) throw std::invalid_argument("hcam_ops emulator: the L2 model needs at least one 128-byte line");
  g_l2_bytes = bytes;
}

void launch_begin(const char* kernel, dim3 grid, dim3 block) {
  auto* L = new LaunchState(g_l2_bytes);
  L->count.kernel = kernel;
  L->count.grid = grid;
  L->count.block = block;
  // Blocks resident at once: an H100's or H200's 132 SMs, each up to 2048
  // threads and 32 blocks (shared memory and registers, which may allow
  // fewer, are not modelled).
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  L->max_resident = static_cast<size_t>(Limits::kSms) *
                    static_cast<size_t>(std::max<uint64_t>(1, std::min<uint64_t>(32, 2048 / std::max<uint64_t>(1, threads))));
  {
    const std::lock_guard<std::mutex> lock(registry_mutex());
    for (const auto& [base, end] : registry()) L->buffers.push_back(Allocation{base, end});
  }
  const size_t n = L->buffers.size();
  L->count.buffers.resize(n);
  L->read_.resize(n);
  L->written.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const Allocation& a = L->buffers[i];
    L->count.buffers[i].base = a.base;
    L->count.buffers[i].bytes = a.end - a.base;
  }
  g_launch = L;
}

void block_begin(unsigned threads) {
  BlockTrace& t = tls_block;
  t.launch = g_launch;
  t.last_buffer = -1;  // an index into this launch's buffers
  t.threads.resize(threads);
  for (auto& log : t.threads) log.clear();
  tls_trace = &t;
}

void block_end() {
  BlockTrace* t = tls_trace;
  tls_trace = nullptr;
  if (t != nullptr) account_block(*t);
}

void launch_end() {
  LaunchState* L = std::exchange(g_launch, nullptr);
  if (L == nullptr) return;
  advance(*L, true);
  L->l2.flush();
  L->count.dram_read_bytes = L->l2.read_bytes;
  L->count.dram_write_bytes = L->l2.write_bytes;
  // Only the buffers the kernel touched.
  auto& bufs = L->count.buffers;
  bufs.erase(std::remove_if(bufs.begin(), bufs.end(),
                            [](const BufferCount& b) { return b.requests[0] + b.requests[1] + b.requests[2] == 0; }),
             bufs.end());
  {
    const std::lock_guard<std::mutex> lock(g_session_mutex);
    g_launches.push_back(std::move(L->count));
  }
  delete L;
}

void record(const void* addr, uint32_t bytes, Kind kind, const void* pc) {
  BlockTrace* t = tls_trace;
  const ThreadCoords* c = tls_coords;
  if (t == nullptr || c == nullptr || bytes == 0) return;
  const auto a = reinterpret_cast<uintptr_t>(addr);
  LaunchState& L = *t->launch;
  int buf = t->last_buffer;
  if (buf < 0 || a < L.buffers[buf].base || a >= L.buffers[buf].end) {
    buf = L.find(a);
    if (buf < 0) return;  // a stack, shared memory, the emulator's own data
    t->last_buffer = buf;
  }
  const dim3 b = c->block_dim;
  const size_t idx = c->thread_idx.x + static_cast<size_t>(b.x) * (c->thread_idx.y + static_cast<size_t>(b.y) * c->thread_idx.z);
  t->threads[idx].push_back(Event{reinterpret_cast<uintptr_t>(pc), a, bytes, static_cast<uint32_t>(buf), kind});
}

void load_bytes(void* dst, const void* src, size_t bytes) {
  record(src, static_cast<uint32_t>(bytes), kLoad, __builtin_return_address(0));
  std::memcpy(dst, src, bytes);
}

void store_bytes(void* dst, const void* src, size_t bytes) {
  record(dst, static_cast<uint32_t>(bytes), kStore, __builtin_return_address(0));
  std::memcpy(dst, src, bytes);
}

void atomic(const void* addr, uint32_t bytes) {
  record(addr, bytes, kAtomic, __builtin_return_address(0));
}

}  // namespace hcam_emu::traffic

// clang's load/store tracing (-fsanitize-coverage=trace-loads,trace-stores in
// the emulated kernels' objects): called before each load and store with its
// address. inline-8bit-counters, which the tracing needs beside it, calls
// the counters' init once per object.
extern "C" {
#define HCAM_EMU_TRACE(n)                                                                                         \
  void __sanitizer_cov_load##n(void* a) {                                                                         \
    ::hcam_emu::traffic::record(a, n, ::hcam_emu::traffic::kLoad, __builtin_return_address(0));                  \
  }                                                                                                               \
  void __sanitizer_cov_store##n(void* a) {                                                                        \
    ::hcam_emu::traffic::record(a, n, ::hcam_emu::traffic::kStore, __builtin_return_address(0));                 \
  }
HCAM_EMU_TRACE(1)
HCAM_EMU_TRACE(2)
HCAM_EMU_TRACE(4)
HCAM_EMU_TRACE(8)
HCAM_EMU_TRACE(16)
#undef HCAM_EMU_TRACE
void __sanitizer_cov_8bit_counters_init(char*, char*) {}
}

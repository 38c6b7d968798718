#include "recording_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <mutex>
#include <unordered_map>
#include <utility>

#include "../traffic.h"

namespace hcam_emu::traffic {

namespace {

// Each allocation of the wrapped allocator registered as a buffer while it
// lives. Its DataPtr keeps data == context, as raw_allocate's users (oneDNN's
// scratch buffers) require; the wrapped allocator's own DataPtr waits in a
// table until the deleter, given the data pointer, releases it.
class RecordingAllocator final : public c10::Allocator {
 public:
  explicit RecordingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = inner_->allocate(n);
    void* data = inner.get();
    if (data == nullptr || n == 0) return inner;
    const c10::Device device = inner.device();
    {
      const std::lock_guard<std::mutex> lock(mutex());
      held().emplace(data, std::move(inner));
    }
    add_buffer(data, n);
    return c10::DataPtr(data, data, &release, device);
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return &release;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }

  static std::unordered_map<void*, c10::DataPtr>& held() {
    static auto* h = new std::unordered_map<void*, c10::DataPtr>();
    return *h;
  }

  static void release(void* data) {
    remove_buffer(data);
    c10::DataPtr inner;
    {
      const std::lock_guard<std::mutex> lock(mutex());
      auto it = held().find(data);
      if (it == held().end()) return;
      inner = std::move(it->second);
      held().erase(it);
    }
    // `inner` frees the memory through the wrapped allocator's deleter here.
  }

  c10::Allocator* inner_;
};

}  // namespace

void install_recording_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    static RecordingAllocator recording(c10::GetCPUAllocator());
    // The highest priority, so that no later registration replaces it.
    c10::SetCPUAllocator(&recording, /*priority=*/255);
  });
}

}  // namespace hcam_emu::traffic

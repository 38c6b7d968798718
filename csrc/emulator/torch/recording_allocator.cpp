#include "recording_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <mutex>
#include <utility>

#include "../traffic.h"

namespace hcam_emu::traffic {

namespace {

// Each allocation of the wrapped allocator registered as a buffer while it lives.
class RecordingAllocator final : public c10::Allocator {
 public:
  explicit RecordingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = inner_->allocate(n);
    void* data = inner.get();
    if (data == nullptr || n == 0) return inner;
    add_buffer(data, n);
    const c10::Device device = inner.device();
    return c10::DataPtr(data, new Held{std::move(inner), data}, &release, device);
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  struct Held {
    c10::DataPtr inner;
    void* data;
  };

  static void release(void* ctx) {
    auto* held = static_cast<Held*>(ctx);
    remove_buffer(held->data);
    delete held;  // frees the memory through the inner allocator's deleter
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

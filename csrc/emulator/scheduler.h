// One block of an emulated launch: its threads as fibers on the calling OS
// thread, switched at barriers, warp collectives and exit in the order a
// schedule picks (HCAM_OPS_EMULATOR_SCHEDULE), with the faults of its threads
// reported rather than hung on.
#pragma once

#include <cstdint>
#include <string>

#include "fiber.h"
#include "runtime.h"

namespace hcam_emu {

// Which runnable thread goes next whenever the running one waits:
//   round-robin          the next one after it, in thread order;
//   warp-greedy          the lowest-numbered (warp 0 runs ahead of warp 1 and
//                        re-enters a barrier's protected region first);
//   warp-greedy-reversed the highest-numbered;
//   random               a seeded random one (HCAM_OPS_EMULATOR_SEED).
enum class Schedule { kRoundRobin, kWarpGreedy, kWarpGreedyReversed, kRandom };

struct ScheduleChoice {
  Schedule kind = Schedule::kWarpGreedy;
  uint64_t seed = 0;
};

// HCAM_OPS_EMULATOR_SCHEDULE and HCAM_OPS_EMULATOR_SEED; raises for an unknown name.
ScheduleChoice schedule_from_env();

struct BlockLaunch {
  dim3 grid, block;
  void (*body)(void* closure);
  void* closure;
};

// Runs block `index` to the end; returns "" or what went wrong.
std::string run_block(const BlockLaunch& launch, uint3 index, const ScheduleChoice& schedule, StackPool& stacks);

}  // namespace hcam_emu

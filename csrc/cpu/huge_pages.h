// Huge pages for a kernel's large fresh outputs (Linux, CPU), opt-in: CPRL_FAST_HUGE_PAGES=1.
//
// A fresh output of tens of MB comes straight from mmap: every 4 KiB page faults on its first
// write, ~25 ms per 100 MB on the project's CPU, more than the kernel's own memory pass. Where
// transparent huge pages are in "madvise" mode (the common default), advising the output's
// 2 MiB-aligned interior before the first write makes it fault once per 2 MiB instead. The hint
// covers this buffer only: no allocator or process setting changes, nothing else in the process
// is affected, and it is a no-op where THP is "never" or "always", on other systems, and for
// memory that was already touched.
//
// It is off unless CPRL_FAST_HUGE_PAGES=1 (read once): on the project's VM (a virtual machine
// whose balloon device takes back free memory from the guest) a huge-page fault now and then
// stalls for hundreds of milliseconds, so the hint made the typical call faster but a loop of
// calls slower on average (docs/benchmarks.md, bench/huge_pages.py).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace cprl_fast::cpu {

// Outputs below this size are left alone (their faults are cheap next to the call).
constexpr uint64_t kHugePageMinBytes = uint64_t(8) << 20;

inline bool huge_pages_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("CPRL_FAST_HUGE_PAGES");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return enabled;
}

// Advises [ptr, ptr + bytes) for huge pages before it is first written.
inline void advise_huge_pages(void* ptr, uint64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (bytes < kHugePageMinBytes || !huge_pages_enabled()) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)ptr;
  (void)bytes;
#endif
}

}  // namespace cprl_fast::cpu

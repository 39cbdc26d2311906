/* mlx-rs seeds RandomState::new() with mach_approximate_time(), a Darwin
 * call. On Linux the monotonic clock in nanoseconds serves the same purpose. */
#include <stdint.h>
#include <time.h>

uint64_t mach_approximate_time(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

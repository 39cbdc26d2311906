/* mlx-c's half.h only declares float16_t/bfloat16_t on aarch64, but mlx-rs
 * uses both on every target. They only cross the C boundary by pointer, so a
 * 16-bit storage type is enough. Force-included before every mlx-c header. */
#ifndef HEARTH_HALF_X86_H
#define HEARTH_HALF_X86_H
#if !defined(__aarch64__)
#include <stdint.h>
#define HAS_FLOAT16
#define HAS_BFLOAT16
#if defined(__clang__) && !defined(__cplusplus)
/* bindgen: __fp16 becomes the __BindgenFloat16(u16) newtype mlx-rs expects. */
typedef __fp16 float16_t;
#else
typedef uint16_t float16_t;
#endif
typedef uint16_t bfloat16_t;
#endif
#endif

/* Hearth's macOS check: the one thing mlx-c's headers take from <stdio.h>. Apple's
 * FILE is `struct __sFILE`, used only through pointers, so an opaque one binds alike. */
#pragma once
#include <stddef.h>
typedef struct __sFILE FILE;

/* Hearth's macOS check: mlx-c's headers need only size_t from <stdlib.h>. */
#pragma once
#include <stddef.h>

/* Hearth's macOS check: mlx-c writes `float _Complex` itself; nothing else is used. */
#pragma once
#define complex _Complex

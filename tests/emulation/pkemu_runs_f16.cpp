// The emulated persistent launches for __half (pkemu_runs.h).
#include "pkemu_runs_impl.h"

PKEMU_INSTANTIATE(__half)

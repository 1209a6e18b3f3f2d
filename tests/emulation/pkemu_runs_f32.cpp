// The emulated persistent launches for float (pkemu_runs.h).
#include "pkemu_runs_impl.h"

PKEMU_INSTANTIATE(float)

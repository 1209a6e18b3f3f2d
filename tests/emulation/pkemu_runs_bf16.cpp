// The emulated persistent launches for __nv_bfloat16 (pkemu_runs.h).
#include "pkemu_runs_impl.h"

PKEMU_INSTANTIATE(__nv_bfloat16)

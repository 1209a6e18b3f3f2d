"""Host emulation kit of the CUDA kernels (both families), shared by the CPU emulation tests and
the sanitizer tier: cuda_emu.h (the emulated primitives), kernels/persistent/primitives.cuh (the
persistent kernels' primitives, in place of csrc's), shim/ (c10/cuda stand-ins), the
harnesses, and builder.py (the builds)."""

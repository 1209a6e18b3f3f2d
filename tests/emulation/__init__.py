"""Host emulation kit of the CUDA kernels (both families), shared by the CPU emulation tests and
the sanitizer tier: cuda_emu.h (the emulated primitives), shim/ (c10/cuda stand-ins), the
harnesses, and builder.py (the builds)."""

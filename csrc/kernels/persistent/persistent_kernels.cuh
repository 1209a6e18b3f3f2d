// The persistent GRU kernels (docs/persistent.md): one launch per recurrence, U on chip.
//
// Work split. CTA c owns units [c·J, c·J + J) (rank c within a cluster on the cluster path) for
// all three gates, and keeps in shared memory, for the whole sequence,
//   forward:  Wf[(g·J + jj)·kp + k] = U[k, g·H + c·J + jj]    (columns of U)
//   backward: Wb[(g·J + jj)·kp + m] = U[c·J + jj, g·H + m]    (rows of U, i.e. columns of Uᵀ)
// zero-padded to J units x kp (H rounded up to 64). Each step, every CTA stages the rows it
// needs of the exchanged operand (h_{s-1} ⊙ q_g, r ⊙ hd_h, or the previous step's gate
// gradients) as fp32 in shared memory, computes its (rows x 3J) slice of the recurrent product,
// and runs the pointwise part for its units, which writes the outputs/states/workspace (or gate
// gradients) exactly as the stepwise kernels do (csrc/kernels/step/gru_step_kernels.cuh).
//
// The product: each warp takes register tiles of RB batch rows x 4 units of one gate; its 32
// lanes split the reduction (2 consecutive k per lane per 64-wide slab, so shared-memory reads
// are conflict-free), accumulate in fp32 with FMA, then one warp reduce-scatter sums the RB·4
// partials across lanes. Summation order depends only on the geometry: results are bitwise
// reproducible run to run.
//
// Exchange. Grid path: through global memory (L2), read with ld.global.cg. The exchanged
// buffer is the one the contract writes anyway (states[s], or the gate gradients by input
// time) or a ping-pong scratch; a grid barrier separates the write of step s from the reads
// of step s+1, which is what makes a second buffer unnecessary where states[] is kept.
// Cluster path: each CTA pushes its values into every cluster CTA's shared memory (DSMEM),
// double-buffered by step parity, and cluster.sync() (release/acquire at cluster scope)
// publishes them.
#pragma once

// The kernels, split along their sections: device.cuh (constants, activation pair), barrier.cuh
// (grid barrier), operand.cuh (shared memory, staging), product.cuh (recurrent product),
// pointwise.cuh (the cell's loads and stores), grid.cuh, cluster.cuh (the two paths) and
// launch.cuh (launch, entry points). primitives.cuh holds the CUDA primitives the host
// emulation replaces.
#include "kernels/persistent/launch.cuh"

#undef GRU_PK_FOR_UNITS

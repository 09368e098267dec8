/*
 * emu_abi.h — the C interface between Rust (src/backends/emulated/runtime.rs) and the host
 * emulator's kernel entry points.
 *
 * Every kernel file ends with FMOE_EMU_ENTRY(name, Params) (kernels/common/entry.cuh); under
 * emulation that defines
 *
 *     extern "C" int32_t fmoe_emu_<name>(const FmoeEmuLaunch* launch, FmoeEmuReport* report);
 *
 * which runs the kernel over launch->grid x launch->block on the CPU and returns
 * report->status (FMOE_EMU_OK = 0 on success). The structs are mirrored field for field in
 * runtime.rs; both sides assert sizes and offsets, so keep them in sync.
 */
#ifndef FMOE_EMU_ABI_H
#define FMOE_EMU_ABI_H

#include <stdint.h>

/* Bumped whenever a struct below changes; the entry rejects a launch with another value. */
#define FMOE_EMU_ABI_VERSION 1

/* report->status */
#define FMOE_EMU_OK 0
#define FMOE_EMU_BAD_LAUNCH 1 /* invalid grid/block/shared memory/params (nothing ran) */
#define FMOE_EMU_DEADLOCK 2   /* a barrier or warp collective can never complete */
#define FMOE_EMU_STRICT 3     /* strict mode: exited thread at a barrier, inactive lane read */
#define FMOE_EMU_MISUSE 4     /* always an error: caller not in mask, bad width, mismatched collective, __trap */
#define FMOE_EMU_INTERNAL 5   /* the emulator itself failed (out of memory, thread spawn) */

#define FMOE_EMU_MESSAGE_BYTES 1024

typedef struct FmoeEmuDim3 {
    uint32_t x, y, z;
} FmoeEmuDim3;

typedef struct FmoeEmuOptions {
    uint32_t workers; /* OS threads running blocks; 0 = available parallelism (capped by blocks) */
    uint32_t strict;  /* 1 = flag exited threads at barriers/collectives and reads of inactive lanes */
    uint32_t shuffle; /* 1 = randomized scheduling (warps run ahead of each other), seeded by `seed` */
    uint32_t reserved;
    uint64_t seed;
} FmoeEmuOptions;

typedef struct FmoeEmuLaunch {
    uint32_t abi_version; /* FMOE_EMU_ABI_VERSION */
    uint32_t dynamic_smem_bytes;
    FmoeEmuDim3 grid;
    FmoeEmuDim3 block;
    const void* params;   /* the kernel's params struct */
    uint64_t params_size; /* must equal sizeof(Params) of the entry */
    FmoeEmuOptions options;
} FmoeEmuLaunch;

typedef struct FmoeEmuStats {
    uint64_t blocks;           /* blocks run */
    uint64_t threads;          /* CUDA threads run */
    uint64_t barriers;         /* completed __syncthreads*, summed over blocks */
    uint64_t warp_collectives; /* completed warp collectives (shuffle, vote, syncwarp, mma, ...), summed over warps */
    uint64_t context_switches; /* fiber switches */
} FmoeEmuStats;

typedef struct FmoeEmuReport {
    int32_t status;           /* FMOE_EMU_* */
    int32_t warp;             /* failing warp within the block, -1 when not warp-specific */
    FmoeEmuDim3 block;        /* failing block (valid when status != OK and != BAD_LAUNCH) */
    int32_t thread;           /* failing thread (linear index in the block), -1 when none */
    uint32_t arrived;         /* threads (or lanes) that reached the barrier/collective */
    uint32_t expected;        /* threads (or lanes) that had to reach it */
    uint32_t mask;            /* the warp collective's member mask (0 for a barrier) */
    uint32_t reserved;
    FmoeEmuStats stats;
    char message[FMOE_EMU_MESSAGE_BYTES]; /* NUL-terminated, human-readable */
} FmoeEmuReport;

#ifdef __cplusplus
static_assert(sizeof(FmoeEmuDim3) == 12, "FmoeEmuDim3 layout");
static_assert(sizeof(FmoeEmuOptions) == 24, "FmoeEmuOptions layout");
static_assert(sizeof(FmoeEmuLaunch) == 72, "FmoeEmuLaunch layout");
static_assert(sizeof(FmoeEmuStats) == 40, "FmoeEmuStats layout");
static_assert(sizeof(FmoeEmuReport) == 80 + FMOE_EMU_MESSAGE_BYTES, "FmoeEmuReport layout");
#endif

#endif /* FMOE_EMU_ABI_H */

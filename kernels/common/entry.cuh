// entry.cuh — how a kernel file exports an entry point to both executors.
//
//   extern "C" __global__ void fmoe_foo(const FooParams p) { ... }
//   FMOE_EMU_ENTRY(fmoe_foo, FooParams)
//
// Under nvcc FMOE_EMU_ENTRY expands to nothing (the PTX entry is the kernel itself). Under the
// host emulator (kernels/emu/cuda_emu.h, force-included) it defines
//   extern "C" int32_t fmoe_emu_fmoe_foo(const FmoeEmuLaunch*, FmoeEmuReport*)
// which runs the kernel over the launch's grid and block on the CPU.
#pragma once
#ifndef FMOE_EMU_ENTRY
#define FMOE_EMU_ENTRY(name, Params)
#endif

// The cuda_bf16.h pitfall: with the emulation header force-included, a later
// #include <cuda_bf16.h> from the real toolkit must not replace the emulator's __shared__
// (thread_local: one copy per block) with the toolkit's host definition (an ignored
// attribute: one copy for everything). Exits non-zero if it does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdio.h>
#include <thread>

__shared__ int probe_tile[4];

int main() {
    const void* here = &probe_tile[0];
    const void* there = nullptr;
    std::thread([&] { there = &probe_tile[0]; }).join();
    if (here == there) {
        fprintf(stderr, "FAIL: __shared__ is one object for all threads after #include <cuda_bf16.h>\n");
        return 1;
    }
    const __nv_bfloat16 h = __float2bfloat16_rn(1.5f);
    if (__bfloat162float(h) != 1.5f) {
        fprintf(stderr, "FAIL: bf16 stand-in broken after #include <cuda_bf16.h>\n");
        return 1;
    }
    printf("ok: __shared__ stays per-thread storage with the toolkit's cuda_bf16.h included\n");
    return 0;
}

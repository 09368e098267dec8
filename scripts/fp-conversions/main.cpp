// Compares the emulator's bf16/f16 conversions with the toolkit's host code over every f32
// bit pattern (2^32) and every 16-bit pattern, on all cores. Prints the first mismatches.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

extern "C" {
uint16_t tk_float2bfloat16_rn(float);
uint16_t tk_float2bfloat16(float);
uint16_t tk_float2half_rn(float);
uint16_t tk_float2half(float);
float tk_bfloat162float(uint16_t);
float tk_half2float(uint16_t);
uint32_t tk_floats2bfloat162_rn(float, float);
uint16_t emu_float2bfloat16_rn(float);
uint16_t emu_float2bfloat16(float);
uint16_t emu_float2half_rn(float);
uint16_t emu_float2half(float);
float emu_bfloat162float(uint16_t);
float emu_half2float(uint16_t);
uint32_t emu_floats2bfloat162_rn(float, float);
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main() {
    std::atomic<uint64_t> mismatches{0};
    std::atomic<int> printed{0};
    auto report = [&](const char* what, uint32_t in, uint32_t tk, uint32_t emu) {
        mismatches.fetch_add(1);
        if (printed.fetch_add(1) < 20) fprintf(stderr, "%s(0x%08x): toolkit 0x%08x, emulator 0x%08x\n", what, in, tk, emu);
    };
    const unsigned nthreads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < nthreads; ++t) {
        threads.emplace_back([&, t] {
            const uint64_t begin = (uint64_t(1) << 32) * t / nthreads, end = (uint64_t(1) << 32) * (t + 1) / nthreads;
            for (uint64_t i = begin; i < end; ++i) {
                const float f = from_bits(uint32_t(i));
                uint32_t a = tk_float2bfloat16_rn(f), b = emu_float2bfloat16_rn(f);
                if (a != b) report("__float2bfloat16_rn", uint32_t(i), a, b);
                a = tk_float2bfloat16(f), b = emu_float2bfloat16(f);
                if (a != b) report("__float2bfloat16", uint32_t(i), a, b);
                a = tk_float2half_rn(f), b = emu_float2half_rn(f);
                if (a != b) report("__float2half_rn", uint32_t(i), a, b);
                a = tk_float2half(f), b = emu_float2half(f);
                if (a != b) report("__float2half", uint32_t(i), a, b);
                a = tk_floats2bfloat162_rn(f, -f), b = emu_floats2bfloat162_rn(f, -f);
                if (a != b) report("__floats2bfloat162_rn", uint32_t(i), a, b);
            }
        });
    }
    for (auto& th : threads) th.join();
    for (uint32_t u = 0; u < 65536; ++u) {
        uint32_t a = bits(tk_bfloat162float(uint16_t(u))), b = bits(emu_bfloat162float(uint16_t(u)));
        if (a != b) report("__bfloat162float", u, a, b);
        a = bits(tk_half2float(uint16_t(u))), b = bits(emu_half2float(uint16_t(u)));
        if (a != b) report("__half2float", u, a, b);
    }
    if (mismatches.load()) {
        fprintf(stderr, "FAIL: %llu mismatches between the emulator and the toolkit's host conversions\n",
                (unsigned long long)mismatches.load());
        return 1;
    }
    printf("ok: bf16/f16 conversions bit-identical to the toolkit over all 2^32 f32 inputs and all 2^16 "
           "bf16/f16 inputs\n");
    return 0;
}

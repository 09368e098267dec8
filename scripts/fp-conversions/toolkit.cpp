// The CUDA toolkit's own host-side conversions (cuda_bf16.h / cuda_fp16.h compiled by the host
// compiler, no GPU involved): the reference the emulator's stand-ins must match bit for bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>

extern "C" uint16_t tk_float2bfloat16_rn(float f) {
    const __nv_bfloat16 h = __float2bfloat16_rn(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
extern "C" uint16_t tk_float2bfloat16(float f) {
    const __nv_bfloat16 h = __float2bfloat16(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
extern "C" uint16_t tk_float2half_rn(float f) {
    const __half h = __float2half_rn(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
extern "C" uint16_t tk_float2half(float f) {
    const __half h = __float2half(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
extern "C" float tk_bfloat162float(uint16_t u) {
    __nv_bfloat16_raw raw;
    raw.x = u;
    return __bfloat162float(__nv_bfloat16(raw));
}
extern "C" float tk_half2float(uint16_t u) {
    __half_raw raw;
    raw.x = u;
    return __half2float(__half(raw));
}
extern "C" uint32_t tk_floats2bfloat162_rn(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}

// The emulator's stand-ins (kernels/emu/cuda_emu.h, force-included as for the kernels).
#include <stdint.h>
#include <string.h>

extern "C" uint16_t emu_float2bfloat16_rn(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
extern "C" uint16_t emu_float2bfloat16(float f) { return __bfloat16_as_ushort(__float2bfloat16(f)); }
extern "C" uint16_t emu_float2half_rn(float f) { return __half_as_ushort(__float2half_rn(f)); }
extern "C" uint16_t emu_float2half(float f) { return __half_as_ushort(__float2half(f)); }
extern "C" float emu_bfloat162float(uint16_t u) { return __bfloat162float(__ushort_as_bfloat16(u)); }
extern "C" float emu_half2float(uint16_t u) { return __half2float(__ushort_as_half(u)); }
extern "C" uint32_t emu_floats2bfloat162_rn(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

/// <summary>Fast f16 → f32 widening (scalar twin of the vector versions) and round trips through the 16-bit formats, for the
/// kernels; the plain conversions live in <see cref="Squeeze.Tensors.HalfConversions"/>.</summary>
internal static class Fp16
{
    private const float TwoPowMinus24 = 5.9604645e-8f; // 2^-24: the value of a binary16 subnormal's mantissa unit
    private const uint Rebias = 112u << 23;              // 127 − 15: a binary16 exponent moved to binary32's bias
    private const float TwoPow112 = 5.192296858534828e33f; // 2^112: the same rebias as a product

    // A subnormal binary16 (|x| < 2^-14) is a normal f32. The scalar version, which converts the kernels' block scales,
    // widens it as its integer mantissa times 2^-24, never by computing with an f32 subnormal: each such operation costs
    // x86 cores a microcode assist of about a hundred cycles, and k-quant super-block scales are subnormal binary16 more
    // often than not (a Q5_K block's is below 2^-14 whenever its largest weight is below about 0.12), which made those
    // kernels three times slower.

    /// <summary>The binary16 value with bits <paramref name="h"/> as f32 (exact, including subnormals, ±inf and NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort h)
    {
        uint em = h & 0x7fffu;
        // a branch, not a select: where the kind of value is steady (a native model's group scales are normal) it costs
        // nothing, and the kernels convert a scale or two per block in a loop that is short of instructions
        uint bits = em >= 0x400u
            ? (em << 13) + Rebias
            : BitConverter.SingleToUInt32Bits((int)em * TwoPowMinus24);
        if (em >= 0x7c00u)
            bits |= 0x7f800000u; // inf / NaN keep their mantissa
        return BitConverter.UInt32BitsToSingle(bits | ((uint)(h & 0x8000) << 16));
    }

    // The vector versions scale by 2^112, which is exact for subnormals too but slow on a lane that holds one; they run
    // where subnormals are rare (f16 weights, the f16 KV cache) and every instruction counts (a long context's attention
    // converts each cached value once per query head), and a select per lane measured 8 % slower decode at depth 512.

    /// <summary>Eight binary16 values (zero-extended to 32 bits each) as f32, exactly like <see cref="ToSingle(ushort)"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToSingle(Vector256<uint> h)
    {
        Vector256<uint> em = h & Vector256.Create(0x7fffu);
        Vector256<uint> bits = (Vector256.ShiftLeft(em, 13).AsSingle() * Vector256.Create(TwoPow112)).AsUInt32();
        bits |= Vector256.GreaterThanOrEqual(em, Vector256.Create(0x7c00u)) & Vector256.Create(0x7f800000u);
        return (bits | Vector256.ShiftLeft(h & Vector256.Create(0x8000u), 16)).AsSingle();
    }

    /// <summary>Sixteen binary16 values (zero-extended to 32 bits each) as f32, exactly like <see cref="ToSingle(ushort)"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingle(Vector512<uint> h)
    {
        Vector512<uint> em = h & Vector512.Create(0x7fffu);
        Vector512<uint> bits = (Vector512.ShiftLeft(em, 13).AsSingle() * Vector512.Create(TwoPow112)).AsUInt32();
        bits |= Vector512.GreaterThanOrEqual(em, Vector512.Create(0x7c00u)) & Vector512.Create(0x7f800000u);
        return (bits | Vector512.ShiftLeft(h & Vector512.Create(0x8000u), 16)).AsSingle();
    }

    /// <summary><paramref name="value"/> rounded to binary16 and back (round to nearest, ties to even).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float RoundToHalf(float value) => (float)(Half)value;

    /// <summary><paramref name="value"/> rounded to bfloat16 and back.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float RoundToBFloat16(float value) => Squeeze.Tensors.HalfConversions.Bf16ToF32(Squeeze.Tensors.HalfConversions.F32ToBf16(value));
}

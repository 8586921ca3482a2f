using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

/// <summary>Fast f16 → f32 widening (scalar twin of the vector versions) and round trips through the 16-bit formats, for the
/// kernels; the plain conversions live in <see cref="Squeeze.Tensors.HalfConversions"/>.</summary>
internal static class Fp16
{
    private const float TwoPow112 = 5.192296858534828e33f; // 2^112: rebias a binary16 exponent (15) to binary32 (127)

    /// <summary>The binary16 value with bits <paramref name="h"/> as f32 (exact, including subnormals, ±inf and NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort h)
    {
        uint em = h & 0x7fffu;
        // exponent and mantissa moved into f32 position, then scaled by 2^112: exact for normals and subnormals
        uint bits = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(em << 13) * TwoPow112);
        if (em >= 0x7c00u)
            bits |= 0x7f800000u; // inf / NaN keep their mantissa
        return BitConverter.UInt32BitsToSingle(bits | ((uint)(h & 0x8000) << 16));
    }

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

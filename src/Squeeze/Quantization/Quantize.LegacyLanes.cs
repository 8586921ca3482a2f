using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Squeeze.Tensors.Blocks;
using static Squeeze.Tensors.HalfConversions;

namespace Squeeze.Quantization;

// The unweighted legacy quantizers' vector forms (four Vector256 per 32-value block), each giving its scalar
// definition's bytes (Quantize.Legacy.cs): the same f32 operations on every value in the same order (no fused
// multiply-add), the same first-of-ties choice of the signed maximum, minimum and maximum (a horizontal reduction finds
// the extreme value, then the first position holding it gives the value with the sign the scalar loop kept), and
// truncating conversions where the definition truncates. Where an inverse scale or a range is not finite the vector and
// scalar conversions could disagree, so such a block returns false and is encoded by the scalar definition.
public static partial class Quantize
{
    private readonly ref struct Block32
    {
        public readonly Vector256<float> V0, V1, V2, V3;

        public Block32(ReadOnlySpan<float> xb)
        {
            ref float x = ref MemoryMarshal.GetReference(xb);
            V0 = Vector256.LoadUnsafe(ref x);
            V1 = Vector256.LoadUnsafe(ref x, 8);
            V2 = Vector256.LoadUnsafe(ref x, 16);
            V3 = Vector256.LoadUnsafe(ref x, 24);
        }

        private Block32(Vector256<float> v0, Vector256<float> v1, Vector256<float> v2, Vector256<float> v3) => (V0, V1, V2, V3) = (v0, v1, v2, v3);

        // The 32 magnitudes |x|.
        public Block32 Abs() => new(Vector256.Abs(V0), Vector256.Abs(V1), Vector256.Abs(V2), Vector256.Abs(V3));

        public float Max() => HorizontalMax(Vector256.Max(Vector256.Max(V0, V1), Vector256.Max(V2, V3)));

        public float Min() => HorizontalMin(Vector256.Min(Vector256.Min(V0, V1), Vector256.Min(V2, V3)));

        // Bit j set where value j equals value (±0 compare equal, as in the scalar comparisons).
        public uint Where(Vector256<float> value)
            => Vector256.Equals(V0, value).ExtractMostSignificantBits()
                | Vector256.Equals(V1, value).ExtractMostSignificantBits() << 8
                | Vector256.Equals(V2, value).ExtractMostSignificantBits() << 16
                | Vector256.Equals(V3, value).ExtractMostSignificantBits() << 24;

        // Codes min(top, trunc((x − sub)·mul + add)) of the 32 values, in order, as bytes (0 ≤ code ≤ 255 here).
        public Vector256<byte> Codes(float sub, float mul, float add, int top)
        {
            var s = Vector256.Create(sub);
            var m = Vector256.Create(mul);
            var a = Vector256.Create(add);
            var t = Vector256.Create(top);
            var c0 = Vector256.Min(Vector256.ConvertToInt32((V0 - s) * m + a), t);
            var c1 = Vector256.Min(Vector256.ConvertToInt32((V1 - s) * m + a), t);
            var c2 = Vector256.Min(Vector256.ConvertToInt32((V2 - s) * m + a), t);
            var c3 = Vector256.Min(Vector256.ConvertToInt32((V3 - s) * m + a), t);
            return Vector256.Narrow(Vector256.Narrow(c0, c1).AsUInt16(), Vector256.Narrow(c2, c3).AsUInt16());
        }
    }

    private static float HorizontalMax(Vector256<float> v)
    {
        var m = Vector128.Max(v.GetLower(), v.GetUpper());
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        return MathF.Max(m.GetElement(0), m.GetElement(1));
    }

    private static float HorizontalMin(Vector256<float> v)
    {
        var m = Vector128.Min(v.GetLower(), v.GetUpper());
        m = Vector128.Min(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        return MathF.Min(m.GetElement(0), m.GetElement(1));
    }

    // SignedAbsMax's value: the first value of largest magnitude, or +0 when every value is ±0.
    private static float SignedAbsMaxLanes(in Block32 x, ReadOnlySpan<float> xb)
    {
        var magnitudes = x.Abs();
        float amax = magnitudes.Max();
        return amax == 0 ? 0 : xb[BitOperations.TrailingZeroCount(magnitudes.Where(Vector256.Create(amax)))];
    }

    // MinMax's values: the first value equal to the minimum and the first equal to the maximum.
    private static (float Min, float Max) MinMaxLanes(in Block32 x, ReadOnlySpan<float> xb)
    {
        float min = x.Min(), max = x.Max();
        return (xb[BitOperations.TrailingZeroCount(x.Where(Vector256.Create(min)))],
            xb[BitOperations.TrailingZeroCount(x.Where(Vector256.Create(max)))]);
    }

    // Low nibbles of codes j and j + 16 in byte j.
    private static Vector128<byte> Nibbles(Vector256<byte> codes)
    {
        var low = Vector128.Create((byte)0x0F);
        return (codes.GetLower() & low) | Vector128.ShiftLeft(codes.GetUpper() & low, 4);
    }

    // Bit 4 of code j in bit j.
    private static uint FifthBits(Vector256<byte> codes) => Vector256.ShiftLeft(codes, 3).ExtractMostSignificantBits();

    private static bool Q8_0Lanes(ReadOnlySpan<float> xb, ref BlockQ8_0 b)
    {
        var x = new Block32(xb);
        float d = x.Abs().Max() / ((1 << 7) - 1);
        float id = d != 0 ? 1.0f / d : 0.0f;
        if (!float.IsFinite(id))
            return false;
        var scale = Vector256.Create(id);
        var s01 = Vector256.Narrow(RoundAway(x.V0 * scale), RoundAway(x.V1 * scale));
        var s23 = Vector256.Narrow(RoundAway(x.V2 * scale), RoundAway(x.V3 * scale));
        b.D = F32ToF16(d);
        Vector256.Narrow(s01, s23).CopyTo((Span<sbyte>)b.Qs);
        return true;
    }

    // MathF.Round(v, MidpointRounding.AwayFromZero) converted to int: trunc(|v|), plus one where the exact fraction
    // |v| − trunc(|v|) is at least one half, with v's sign.
    private static Vector256<int> RoundAway(Vector256<float> v)
    {
        var a = Vector256.Abs(v);
        var t = Vector256.Truncate(a);
        var r = t + (Vector256.GreaterThanOrEqual(a - t, Vector256.Create(0.5f)) & Vector256<float>.One);
        return Vector256.ConvertToInt32(Vector256.CopySign(r, v));
    }

    // Q4_0, Q5_0: d = max / divisor (max the signed value of largest magnitude), codes min(top, trunc(x / d + add)).
    private static bool SymmetricCodes(ReadOnlySpan<float> xb, float divisor, float add, int top, out float d, out Vector256<byte> codes)
    {
        var x = new Block32(xb);
        d = SignedAbsMaxLanes(x, xb) / divisor;
        float id = d != 0 ? 1.0f / d : 0.0f;
        codes = x.Codes(0f, id, add, top);
        return float.IsFinite(id);
    }

    // Q4_1, Q5_1: d = (max − min) / levels, codes min(top, trunc((x − min) / d + 0.5)).
    private static bool AsymmetricCodes(ReadOnlySpan<float> xb, int levels, int top, out float d, out float min, out Vector256<byte> codes)
    {
        var x = new Block32(xb);
        (min, float max) = MinMaxLanes(x, xb);
        d = (max - min) / levels;
        float id = d != 0 ? 1.0f / d : 0.0f;
        codes = x.Codes(min, id, 0.5f, top);
        return float.IsFinite(max - min) && float.IsFinite(id);
    }

    private static bool Q4_0Lanes(ReadOnlySpan<float> xb, ref BlockQ4_0 b)
    {
        if (!SymmetricCodes(xb, -8, 8.5f, 15, out float d, out var codes))
            return false;
        b.D = F32ToF16(d);
        Nibbles(codes).CopyTo((Span<byte>)b.Qs);
        return true;
    }

    private static bool Q5_0Lanes(ReadOnlySpan<float> xb, ref BlockQ5_0 b)
    {
        if (!SymmetricCodes(xb, -16, 16.5f, 31, out float d, out var codes))
            return false;
        b.D = F32ToF16(d);
        Nibbles(codes).CopyTo((Span<byte>)b.Qs);
        BinaryPrimitives.WriteUInt32LittleEndian(b.Qh, FifthBits(codes));
        return true;
    }

    private static bool Q4_1Lanes(ReadOnlySpan<float> xb, ref BlockQ4_1 b)
    {
        if (!AsymmetricCodes(xb, (1 << 4) - 1, 15, out float d, out float min, out var codes))
            return false;
        b.D = F32ToF16(d);
        b.M = F32ToF16(min);
        Nibbles(codes).CopyTo((Span<byte>)b.Qs);
        return true;
    }

    private static bool Q5_1Lanes(ReadOnlySpan<float> xb, ref BlockQ5_1 b)
    {
        if (!AsymmetricCodes(xb, (1 << 5) - 1, 255, out float d, out float min, out var codes))
            return false;
        b.D = F32ToF16(d);
        b.M = F32ToF16(min);
        Nibbles(codes).CopyTo((Span<byte>)b.Qs);
        BinaryPrimitives.WriteUInt32LittleEndian(b.Qh, FifthBits(codes));
        return true;
    }
}

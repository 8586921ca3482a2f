using Squeeze.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

internal static unsafe partial class QuantizeActivations
{
    /// <summary>Vector256 version of <see cref="Q8_0Scalar"/> (bit-identical output).</summary>
    public static void Q8_0Vector256(float* x, int n, byte* y)
    {
        for (int b = 0; b < n / QK; b++, x += QK, y += Q8_0Bytes)
            QuantizeBlock32Vector256(x, y, (sbyte*)(y + Q8_0Qs));
    }

    /// <summary>Vector256 version of <see cref="Q8_1Scalar"/> (bit-identical output).</summary>
    public static void Q8_1Vector256(float* x, int n, byte* y)
    {
        for (int b = 0; b < n / QK; b++, x += QK, y += Q8_1Bytes)
        {
            Vector256<int> sum = QuantizeBlock32Vector256(x, y, (sbyte*)(y + Q8_1Qs), out float d);
            Unsafe.WriteUnaligned(y + Q8_1S, HalfConversions.F32ToF16(d * Vector256.Sum(sum)));
        }
    }

    private static void QuantizeBlock32Vector256(float* x, byte* d16, sbyte* q) => QuantizeBlock32Vector256(x, d16, q, out _);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> QuantizeBlock32Vector256(float* x, byte* d16, sbyte* q, out float d)
    {
        Vector256<float> v0 = Vector256.Load(x), v1 = Vector256.Load(x + 8), v2 = Vector256.Load(x + 16), v3 = Vector256.Load(x + 24);
        Vector256<float> m = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
        Vector128<float> m4 = Vector128.Max(m.GetLower(), m.GetUpper());
        float amax = MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
        d = amax / 127f;
        Unsafe.WriteUnaligned(d16, HalfConversions.F32ToF16(d));
        var id = Vector256.Create(amax != 0 ? 127f / amax : 0f);
        Vector256<int> i0 = Vector256.ConvertToInt32(Vector256.Round(v0 * id));
        Vector256<int> i1 = Vector256.ConvertToInt32(Vector256.Round(v1 * id));
        Vector256<int> i2 = Vector256.ConvertToInt32(Vector256.Round(v2 * id));
        Vector256<int> i3 = Vector256.ConvertToInt32(Vector256.Round(v3 * id));
        Vector256.Narrow(Vector256.Narrow(i0, i1), Vector256.Narrow(i2, i3)).Store(q);
        return (i0 + i1) + (i2 + i3);
    }

    /// <summary>Vector256 version of <see cref="Q8_KScalar"/> (bit-identical output).</summary>
    public static void Q8_KVector256(float* x, int n, byte* y)
    {
        for (int b = 0; b < n / QK_K; b++, x += QK_K, y += Q8_KBytes)
        {
            Vector256<float> m = Vector256<float>.Zero;
            for (int j = 0; j < QK_K; j += 8)
                m = Vector256.Max(m, Vector256.Abs(Vector256.Load(x + j)));
            Vector128<float> m4 = Vector128.Max(m.GetLower(), m.GetUpper());
            float amax = MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
            sbyte* q = (sbyte*)(y + Q8_KQs);
            short* bsums = (short*)(y + Q8_KBsums);
            if (amax == 0)
            {
                *(float*)y = 0;
                new Span<byte>(q, QK_K).Clear();
                new Span<short>(bsums, 16).Clear();
                continue;
            }
            int first = 0;
            while (MathF.Abs(x[first]) != amax)
                first++;
            float iscale = -127f / x[first];
            var s = Vector256.Create(iscale);
            var top = Vector256.Create(127);
            for (int j = 0; j < QK_K; j += 32)
            {
                Vector256<int> i0 = Vector256.Min(top, Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j) * s)));
                Vector256<int> i1 = Vector256.Min(top, Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j + 8) * s)));
                Vector256<int> i2 = Vector256.Min(top, Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j + 16) * s)));
                Vector256<int> i3 = Vector256.Min(top, Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j + 24) * s)));
                Vector256.Narrow(Vector256.Narrow(i0, i1), Vector256.Narrow(i2, i3)).Store(q + j);
                bsums[j / 16] = (short)Vector256.Sum(i0 + i1);
                bsums[j / 16 + 1] = (short)Vector256.Sum(i2 + i3);
            }
            *(float*)y = 1 / iscale;
        }
    }
}

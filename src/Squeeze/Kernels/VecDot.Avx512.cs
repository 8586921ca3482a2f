using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

// 512-bit versions of the float kernels (the integer kernels run 256-bit: a 32-value block fills one 256-bit register,
// and AVX-VNNI already does the byte products). Callers check Avx512F.IsSupported (VecDot.For does).
internal static unsafe partial class VecDot
{
    /// <summary>AVX-512 version of <see cref="F32Scalar"/> (four 16-lane FMA accumulators).</summary>
    public static float F32Avx512(byte* w, byte* x, int n)
    {
        float* a = (float*)w, b = (float*)x;
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
        int i = 0;
        for (; i + 64 <= n; i += 64)
        {
            s0 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i + 16), Vector512.Load(b + i + 16), s1);
            s2 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i + 32), Vector512.Load(b + i + 32), s2);
            s3 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i + 48), Vector512.Load(b + i + 48), s3);
        }
        for (; i + 16 <= n; i += 16)
            s0 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
        float sum = Vector512.Sum((s0 + s1) + (s2 + s3));
        for (; i < n; i++)
            sum += a[i] * b[i];
        return sum;
    }

    /// <summary>AVX-512 version of <see cref="F16Scalar"/>.</summary>
    public static float F16Avx512(byte* w, byte* x, int n)
    {
        ushort* a = (ushort*)w;
        float* b = (float*)x;
        Vector512<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            s0 = Avx512F.FusedMultiplyAdd(Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(a + i))), Vector512.Load(b + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(a + i + 16))), Vector512.Load(b + i + 16), s1);
        }
        float sum = Vector512.Sum(s0 + s1);
        for (; i < n; i++)
            sum += Fp16.ToSingle(a[i]) * b[i];
        return sum;
    }

    /// <summary>AVX-512 version of <see cref="BF16Scalar"/>.</summary>
    public static float BF16Avx512(byte* w, byte* x, int n)
    {
        ushort* a = (ushort*)w;
        float* b = (float*)x;
        Vector512<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            s0 = Avx512F.FusedMultiplyAdd(Vector512.ShiftLeft(Avx512F.ConvertToVector512UInt32(Vector256.Load(a + i)), 16).AsSingle(), Vector512.Load(b + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(Vector512.ShiftLeft(Avx512F.ConvertToVector512UInt32(Vector256.Load(a + i + 16)), 16).AsSingle(), Vector512.Load(b + i + 16), s1);
        }
        float sum = Vector512.Sum(s0 + s1);
        for (; i < n; i++)
            sum += Fp16.FromBFloat16(a[i]) * b[i];
        return sum;
    }
}

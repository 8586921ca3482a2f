using System.Runtime.Intrinsics;
using Squeeze.Tensors;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

// The dot products of the deterministic mode (ComputeContext.Deterministic): the same bits on every machine, at every
// SIMD level and for one, four or eight tokens at a time.
// - F32: DeterministicMath.Dot's order (16 partial sums by fma, fixed tree), scalar, Vector256 or Vector512.
// - Q8_0, Q4_0, Q5_0, IQ4_NL: the scalar reference's order (exact integer block sums, then sum += d_w · d_x · sumi block
//   after block); at AVX2 the integer block sums are computed with vector instructions, which changes nothing.
// - every other type: the scalar reference itself (fixed order, no vector code; slower).
internal static unsafe partial class VecDot
{
    /// <summary>The one-token deterministic kernel for <paramref name="type"/>.</summary>
    public static delegate*<byte*, byte*, int, float> ForDeterministic(GgmlType type)
    {
        bool vector = DeterministicMath.UseVector && Best >= SimdLevel.Avx2;
        return type switch
        {
            GgmlType.F32 => DeterministicMath.UseVector512 ? &F32DeterministicVector512 : vector ? &F32DeterministicVector : &F32DeterministicScalar,
            GgmlType.Q8_0 when vector => &Q8_0Deterministic,
            GgmlType.Q4_0 when vector => &Q4_0Deterministic,
            GgmlType.Q5_0 when vector => &Q5_0Deterministic,
            GgmlType.IQ4_NL when vector => &IQ4_NLDeterministic,
            _ => For(type, SimdLevel.Scalar),
        };
    }

    /// <summary>The four-token deterministic kernel for <paramref name="type"/> (bit for bit four calls of
    /// <see cref="ForDeterministic"/>), or null.</summary>
    public static delegate*<byte*, byte*, long, int, float*, long, void> For4Deterministic(GgmlType type)
        => type != GgmlType.F32 ? null
            : DeterministicMath.UseVector512 ? &F32x4DeterministicVector512
            : DeterministicMath.UseVector ? &F32x4DeterministicVector : null;

    /// <summary>The eight-token deterministic kernel for <paramref name="type"/> (bit for bit eight calls of
    /// <see cref="ForDeterministic"/>), or null.</summary>
    public static delegate*<byte*, byte*, long, int, float*, long, void> For8Deterministic(GgmlType type)
        => type == GgmlType.F32 && DeterministicMath.UseVector512 ? &F32x8DeterministicVector512 : null;

    public static float F32DeterministicScalar(byte* w, byte* x, int n) => DeterministicMath.DotScalar((float*)w, (float*)x, n);

    public static float F32DeterministicVector(byte* w, byte* x, int n) => DeterministicMath.DotVector((float*)w, (float*)x, n);

    public static void F32x4DeterministicVector(byte* w, byte* x, long xStride, int n, float* y, long yStride)
        => DeterministicMath.Dot4Vector((float*)w, (float*)x, xStride / sizeof(float), n, y, yStride);

    public static float F32DeterministicVector512(byte* w, byte* x, int n) => DeterministicMath.DotVector512((float*)w, (float*)x, n);

    public static void F32x8DeterministicVector512(byte* w, byte* x, long xStride, int n, float* y, long yStride)
        => DeterministicMath.Dot8Vector512((float*)w, (float*)x, xStride / sizeof(float), n, y, yStride);

    public static void F32x4DeterministicVector512(byte* w, byte* x, long xStride, int n, float* y, long yStride)
        => DeterministicMath.Dot4Vector512((float*)w, (float*)x, xStride / sizeof(float), n, y, yStride);

    /// <summary><see cref="Q8_0Scalar"/>, bit for bit, with the block sums in vector instructions.</summary>
    public static float Q8_0Deterministic(byte* w, byte* x, int n) => Signed32Deterministic<Q8_0Block>(w, x, n);

    /// <summary><see cref="Q4_0Scalar"/>, bit for bit, with the block sums in vector instructions.</summary>
    public static float Q4_0Deterministic(byte* w, byte* x, int n) => Signed32Deterministic<Q4_0Block>(w, x, n);

    /// <summary><see cref="Q5_0Scalar"/>, bit for bit, with the block sums in vector instructions.</summary>
    public static float Q5_0Deterministic(byte* w, byte* x, int n) => Signed32Deterministic<Q5_0Block>(w, x, n);

    /// <summary><see cref="IQ4_NLScalar"/>, bit for bit, with the block sums in vector instructions.</summary>
    public static float IQ4_NLDeterministic(byte* w, byte* x, int n) => Signed32Deterministic<IQ4_NLBlock>(w, x, n);

    private static float Signed32Deterministic<T>(byte* w, byte* x, int n) where T : ISignedBlock32
    {
        float sum = 0;
        for (int b = 0; b < n / QK; b++, w += T.Bytes, x += Q8_0Bytes)
        {
            int sumi = Vector256.Sum(DotI8(T.Values(w), Vector256.Load((sbyte*)(x + Q8_0Qs))));
            sum += H(w) * H(x) * sumi;
        }
        return sum;
    }
}

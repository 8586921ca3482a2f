using System.Numerics;
using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

/// <summary>
/// The fast Walsh–Hadamard transform: <c>v ← H_n · v</c> for the Sylvester Hadamard matrix of order n = 2^k
/// (H_1 = [1], H_2m = [[H_m, H_m], [H_m, −H_m]]), unnormalized. <see cref="TransformReference{T}"/> is the definition:
/// stages h = 1, 2, 4 … n/2 in that order, each replacing every pair (v[j], v[j+h]) with j mod 2h &lt; h by
/// (v[j] + v[j+h], v[j] − v[j+h]). <see cref="Transform"/> does the same additions in the same order with Vector256
/// shuffles for h &lt; 8 and whole vectors for h ≥ 8, so its results are bit-identical to the reference at every SIMD
/// level (each output is the same sequence of IEEE additions; multiplying by ±1 is exact).
/// </summary>
public static class Hadamard
{
    /// <summary>Reference: <c>values ← H_n · values</c>, n = values.Length a power of two (or 0).</summary>
    public static void TransformReference<T>(Span<T> values)
        where T : IFloatingPointIeee754<T>
    {
        CheckLength(values.Length);
        int n = values.Length;
        for (int h = 1; h < n; h <<= 1)
        {
            for (int i = 0; i < n; i += 2 * h)
            {
                for (int j = i; j < i + h; j++)
                {
                    T a = values[j], b = values[j + h];
                    values[j] = a + b;
                    values[j + h] = a - b;
                }
            }
        }
    }

    /// <summary><c>values ← H_n · values</c> as <see cref="TransformReference{T}"/>, bit for bit, vectorized.</summary>
    public static void Transform(Span<float> values)
    {
        CheckLength(values.Length);
        int n = values.Length;
        if (n < 8 || !Vector256.IsHardwareAccelerated)
        {
            TransformReference(values);
            return;
        }
        // Stages h = 1, 2, 4 inside each vector of 8: the partner of lane l is lane l ^ h; the lower lane of a pair
        // gets partner + self, the upper gets partner − self, i.e. partner + self · (±1) (exact).
        var swap1 = Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6);
        var swap2 = Vector256.Create(2, 3, 0, 1, 6, 7, 4, 5);
        var swap4 = Vector256.Create(4, 5, 6, 7, 0, 1, 2, 3);
        var sign1 = Vector256.Create(1f, -1f, 1f, -1f, 1f, -1f, 1f, -1f);
        var sign2 = Vector256.Create(1f, 1f, -1f, -1f, 1f, 1f, -1f, -1f);
        var sign4 = Vector256.Create(1f, 1f, 1f, 1f, -1f, -1f, -1f, -1f);
        ref float start = ref values[0];
        for (int i = 0; i < n; i += 8)
        {
            var v = Vector256.LoadUnsafe(ref start, (nuint)i);
            v = Vector256.Shuffle(v, swap1) + v * sign1;
            v = Vector256.Shuffle(v, swap2) + v * sign2;
            v = Vector256.Shuffle(v, swap4) + v * sign4;
            v.StoreUnsafe(ref start, (nuint)i);
        }
        for (int h = 8; h < n; h <<= 1)
        {
            for (int i = 0; i < n; i += 2 * h)
            {
                for (int j = i; j < i + h; j += 8)
                {
                    var a = Vector256.LoadUnsafe(ref start, (nuint)j);
                    var b = Vector256.LoadUnsafe(ref start, (nuint)(j + h));
                    (a + b).StoreUnsafe(ref start, (nuint)j);
                    (a - b).StoreUnsafe(ref start, (nuint)(j + h));
                }
            }
        }
    }

    /// <summary>The largest power of two that divides <paramref name="columns"/> (288 → 32, 768 → 256).</summary>
    public static int LargestPowerOfTwoDivisor(int columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        return columns & -columns;
    }

    private static void CheckLength(int length)
    {
        if (!BitOperations.IsPow2(length) && length != 0)
            throw new ArgumentException($"the Walsh–Hadamard transform needs a power-of-two length, not {length}", nameof(length));
    }
}

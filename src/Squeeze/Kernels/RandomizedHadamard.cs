using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Squeeze.Kernels;

/// <summary>
/// A seeded random orthogonal transform of vectors of <see cref="Columns"/> values (QuIP-style incoherence processing):
/// <c>F = B · P · D</c>, where D = diag(s) holds random signs, P is a random permutation (identity unless
/// <see cref="Permute"/>) and B is block-diagonal with blocks H_b / √b, b = <see cref="BlockSize"/> = the largest power of
/// two dividing <see cref="Columns"/> (288 → 32, 768 → 256) and H_b the Sylvester Hadamard matrix
/// (<see cref="Hadamard"/>). F is orthogonal, so <c>F⁻¹ = Fᵀ = D · Pᵀ · B</c>.
/// <para>Definition, bit for bit (docs/FORMAT.md, scheme "rotation"): a <see cref="SplitMix64"/> seeded with
/// <see cref="Seed"/> first gives the signs, s[i] = −1 when bit 63 of its i-th output is set, else +1, for i = 0 … n−1;
/// then, when permuting, π starts as the identity and for i = n−1 down to 1, π[i] and π[j] are swapped with
/// j = <see cref="SplitMix64.Below"/>(i + 1). <see cref="Forward{T}"/>: <c>u[j] = s[π(j)] · x[π(j)]</c>, then each block
/// of b consecutive values is transformed by <see cref="Hadamard.TransformReference{T}"/> and every value multiplied by
/// the scale <c>T(1 / √b)</c> (the square root and division in binary64, then rounded to T).</para>
/// </summary>
public sealed class RandomizedHadamard
{
    private readonly float[] signs; // [columns], ±1
    private readonly int[] permutation; // [columns]: u[j] takes x[permutation[j]]

    /// <summary>The transform for rows of <paramref name="columns"/> values drawn from <paramref name="seed"/>.</summary>
    public RandomizedHadamard(int columns, ulong seed, bool permute)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        Columns = columns;
        Seed = seed;
        Permute = permute;
        BlockSize = Hadamard.LargestPowerOfTwoDivisor(columns);
        var random = new SplitMix64(seed);
        signs = new float[columns];
        for (int i = 0; i < columns; i++)
            signs[i] = (random.Next() >> 63) != 0 ? -1f : 1f;
        permutation = new int[columns];
        for (int i = 0; i < columns; i++)
            permutation[i] = i;
        if (permute)
        {
            for (int i = columns - 1; i >= 1; i--)
            {
                int j = (int)random.Below((ulong)i + 1);
                (permutation[i], permutation[j]) = (permutation[j], permutation[i]);
            }
        }
    }

    /// <summary>Values per vector.</summary>
    public int Columns { get; }

    /// <summary>The generator's seed.</summary>
    public ulong Seed { get; }

    /// <summary>Whether a random permutation runs between the signs and the Hadamard blocks (so blocks mix columns from
    /// all over the row instead of neighbours).</summary>
    public bool Permute { get; }

    /// <summary>Hadamard block length b: the largest power of two dividing <see cref="Columns"/>.</summary>
    public int BlockSize { get; }

    /// <summary><c>destination = F · source</c>; the spans must not overlap.</summary>
    public void Forward<T>(ReadOnlySpan<T> source, Span<T> destination)
        where T : IFloatingPointIeee754<T>
    {
        CheckLengths(source.Length, destination.Length);
        for (int j = 0; j < Columns; j++)
        {
            int i = permutation[j];
            destination[j] = signs[i] < 0 ? -source[i] : source[i];
        }
        TransformBlocks(destination);
    }

    /// <summary><c>destination = F⁻¹ · source = Fᵀ · source</c>; <paramref name="source"/> is overwritten (it is the
    /// workspace of the Hadamard blocks); the spans must not overlap.</summary>
    public void Inverse<T>(Span<T> source, Span<T> destination)
        where T : IFloatingPointIeee754<T>
    {
        CheckLengths(source.Length, destination.Length);
        TransformBlocks(source);
        for (int j = 0; j < Columns; j++)
        {
            int i = permutation[j];
            destination[i] = signs[i] < 0 ? -source[j] : source[j];
        }
    }

    private void TransformBlocks<T>(Span<T> values)
        where T : IFloatingPointIeee754<T>
    {
        int b = BlockSize;
        if (typeof(T) == typeof(float))
        {
            var floats = MemoryMarshal.CreateSpan(ref Unsafe.As<T, float>(ref MemoryMarshal.GetReference(values)), values.Length);
            for (int k = 0; k < Columns; k += b)
                Hadamard.Transform(floats.Slice(k, b));
            TensorPrimitives.Multiply(floats, (float)(1.0 / Math.Sqrt(b)), floats);
            return;
        }
        for (int k = 0; k < Columns; k += b)
            Hadamard.TransformReference(values.Slice(k, b));
        T scale = T.CreateChecked(1.0 / Math.Sqrt(b));
        for (int i = 0; i < values.Length; i++)
            values[i] *= scale;
    }

    private void CheckLengths(int source, int destination)
    {
        if (source != Columns || destination != Columns)
            throw new ArgumentException($"the rotation works on vectors of {Columns} values; got {source} in and {destination} out");
    }
}

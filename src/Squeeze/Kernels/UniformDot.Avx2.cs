using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

// 256-bit fused kernel (AVX2 + FMA + BMI2, AVX-VNNI where present): 64 codes per step. Callers check (For does).
internal static unsafe partial class UniformDot
{
    /// <summary>
    /// <see cref="DotScalar"/> for rows [r0, r1), one step of 64 codes at a time: each run of 8 codes (bits bytes, one
    /// 64-bit load) is spread to 8 bytes by BMI2 <c>pdep</c>, runs 0, 2, 4, 6 into one vector and 1, 3, 5, 7 into another
    /// as the prepared activations are laid out; each meets its 32 activation bytes in <c>vpdpbusd</c> (AVX-VNNI) or
    /// <c>vpmaddubsw</c> + <c>vpmaddwd</c> (8-bit codes split in their low 7 bits and top bit so no pair of products
    /// saturates), the two adding up into 8 lanes of 8 values (less z·Σ a when symmetric), scaled by their blocks' d and
    /// summed in f32. Rows whose last step would load past the codes run from a padded copy (<see cref="PaddedRows"/>).
    /// </summary>
    public static void RowsAvx2(in UniformRows w, int r0, int r1, byte* x, float* y)
    {
        if (w.Mins == null)
            RowsAvx2<SymmetricCodes>(w, r0, r1, x, y);
        else
            RowsAvx2<AsymmetricCodes>(w, r0, r1, x, y);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    private static void RowsAvx2<TCodes>(in UniformRows w, int r0, int r1, byte* x, float* y) where TCodes : struct, ICodeKind
    {
        var prepared = new PreparedRow(w, x);
        var step = new PdepStep(w.Bits);
        int vectorRows = Math.Min(r1, SafeRows(w, Step));
        for (int row = r0; row < vectorRows; row++)
            y[row] = OneRow<TCodes, PdepStep>(w, prepared, step, row);
        PaddedRows(w, Math.Max(r0, vectorRows), r1, x, y, &RowsAvx2);
    }

    /// <summary>How a vector kernel turns one step of 64 codes into its 8 lanes against the prepared activations
    /// (low: runs 0, 2, 4, 6; high: runs 1, 3, 5, 7): lane k = Σ q·a over 4 codes
    /// of run 2⌊k/2⌋ and the same 4 of run 2⌊k/2⌋ + 1.</summary>
    private interface IStepDot
    {
        Vector256<int> Dot(byte* step, Vector256<sbyte> low, Vector256<sbyte> high);
    }

    /// <summary>AVX2 steps: BMI2 <c>pdep</c> spreads each run of 8 codes to bytes.</summary>
    private readonly struct PdepStep(int bits) : IStepDot
    {
        private readonly ulong spread = ((1ul << bits) - 1) * 0x0101010101010101ul;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<int> Dot(byte* step, Vector256<sbyte> low, Vector256<sbyte> high)
            => Dot32(Runs(step, 2 * bits, spread), low, bits) + Dot32(Runs(step + bits, 2 * bits, spread), high, bits);
    }

    /// <summary>One row of <paramref name="w"/> whose every step is inside the codes, step by step through
    /// <typeparamref name="TStep"/>: per group, <c>s · Σ_lanes d · dot + m · Σ_lanes d · Σ a</c> (the symmetric zero point
    /// taken off the integer dots).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static float OneRow<TCodes, TStep>(in UniformRows w, in PreparedRow x, in TStep step, int row)
        where TCodes : struct, ICodeKind where TStep : struct, IStepDot
    {
        int bits = w.Bits, group = w.Group, groups = w.Groups, steps = x.Steps;
        sbyte* a = x.Activations;
        byte* codes = w.Codes + row * w.RowBytes;
        ushort* rowScales = w.Scales + (long)row * groups;
        ushort* rowMins = w.Mins + (long)row * groups;
        Vector256<float> acc = default;
        for (int g = 0, t = 0; g < groups; g++)
        {
            Vector256<float> products = default, sums = default;
            for (int c = g * group, end = t + steps; t < end; t++, c += Step)
            {
                Vector256<int> dot = step.Dot(codes + (c >> 3) * bits, Vector256.Load(a + t * Step), Vector256.Load(a + t * Step + 32));
                if (TCodes.Symmetric)
                    dot -= Vector256.ShiftLeft(Vector256.Load(x.LaneCounts + t * StepLanes), bits - 1);
                else
                    sums += Vector256.Load(x.LaneSums + t * StepLanes);
                products = Fma.MultiplyAdd(Vector256.ConvertToSingle(dot), Vector256.Load(x.LaneScales + t * StepLanes), products);
            }
            acc = Fma.MultiplyAdd(Vector256.Create(Fp16.ToSingle(rowScales[g])), products, acc);
            if (!TCodes.Symmetric)
                acc = Fma.MultiplyAdd(Vector256.Create(Fp16.ToSingle(rowMins[g])), sums, acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>Four runs of 8 codes, <paramref name="stride"/> bytes apart from <paramref name="p"/> (each bits bytes,
    /// read as one 64-bit word), spread to bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Runs(byte* p, int stride, ulong spread)
        => Vector256.Create(Bmi2.X64.ParallelBitDeposit(*(ulong*)p, spread), Bmi2.X64.ParallelBitDeposit(*(ulong*)(p + stride), spread),
            Bmi2.X64.ParallelBitDeposit(*(ulong*)(p + 2 * stride), spread), Bmi2.X64.ParallelBitDeposit(*(ulong*)(p + 3 * stride), spread)).AsByte();

    /// <summary>Lane i = Σ of bytes 4i..4i+3 of q·a (q unsigned codes of <paramref name="bits"/> bits, a signed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Dot32(Vector256<byte> q, Vector256<sbyte> a, int bits)
    {
        if (AvxVnni.IsSupported)
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, q, a);
        var ones = Vector256.Create((short)1);
        if (bits <= 7)
            return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, a), ones);
        Vector256<int> low = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q & Vector256.Create((byte)0x7F), a), ones);
        Vector256<int> high = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Vector256.ShiftRightLogical(q.AsUInt16(), 7).AsByte() & Vector256.Create((byte)1), a), ones);
        return low + Vector256.ShiftLeft(high, 7);
    }
}

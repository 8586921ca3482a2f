using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

// 512-bit fused kernel (AVX-512 BW + VBMI, AVX-VNNI): 64 codes per step. Callers check Avx512Vbmi and AvxVnni (For does).
internal static unsafe partial class UniformDot
{
    /// <summary>
    /// <see cref="DotScalar"/> for rows [r0, r1), one step of 64 codes at a time: the step's 8·bits bytes are loaded at
    /// once, <c>vpermb</c> moves each run of 8 codes (bits bytes) into its own 64-bit lane, runs 0, 2, 4, 6 in the low
    /// half and 1, 3, 5, 7 in the high half as the prepared activations are laid out, and <c>vpmultishiftqb</c> shifts
    /// every code to its own byte; each half meets its 32 activation bytes in one <c>vpdpbusd</c>, the two adding up lane by
    /// lane into 8 lanes of 8 values (less z·Σ a when symmetric), which are scaled by their blocks' d and summed in f32.
    /// Four rows at a time share the activation loads and prefetch the next four. Rows whose last step would load past the
    /// codes run from a padded copy (<see cref="PaddedRows"/>).
    /// </summary>
    public static void RowsAvx512(in UniformRows w, int r0, int r1, byte* x, float* y)
    {
        if (w.Mins == null)
            RowsAvx512<SymmetricCodes>(w, r0, r1, x, y);
        else
            RowsAvx512<AsymmetricCodes>(w, r0, r1, x, y);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    private static void RowsAvx512<TCodes>(in UniformRows w, int r0, int r1, byte* x, float* y) where TCodes : struct, ICodeKind
    {
        var prepared = new PreparedRow(w, x);
        var step = new VbmiStep(w.Bits);
        int vectorRows = Math.Min(r1, SafeRows(w, Step));
        int row = r0;
        for (; row + 4 <= vectorRows; row += 4)
            FourRows<TCodes>(w, prepared, step, row, y);
        for (; row < vectorRows; row++)
            y[row] = OneRow<TCodes, VbmiStep>(w, prepared, step, row);
        PaddedRows(w, Math.Max(r0, vectorRows), r1, x, y, &RowsAvx512);
    }

    /// <summary>AVX-512 steps: <c>vpermb</c> + <c>vpmultishiftqb</c> unpack the step, each half meets its activations in
    /// one <c>vpdpbusd</c>.</summary>
    private readonly struct VbmiStep(int bits) : IStepDot
    {
        public Vector512<byte> Permute { get; } = PairedPermutes[bits];
        public Vector512<byte> Shifts { get; } = UniformDot.Shifts[bits];
        public Vector512<byte> Mask { get; } = Vector512.Create((byte)((1 << bits) - 1));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<int> Dot(byte* step, Vector256<sbyte> low, Vector256<sbyte> high) => StepDot(step, low, high, Permute, Shifts, Mask);
    }

    /// <summary>Rows [row, row + 4) (every step inside the codes): the activations (and their sums) are loaded once for all
    /// four, four independent chains, the next four rows prefetched. A method of its own, so that its vectors stay in
    /// registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void FourRows<TCodes>(in UniformRows w, in PreparedRow x, in VbmiStep step, int row, float* y) where TCodes : struct, ICodeKind
    {
        int bits = w.Bits, group = w.Group, groups = w.Groups, steps = x.Steps;
        sbyte* a = x.Activations;
        float* laneScales = x.LaneScales, laneSums = x.LaneSums;
        int* laneCounts = x.LaneCounts;
        Vector512<byte> permute = step.Permute, shifts = step.Shifts, mask = step.Mask;
        // the next four rows follow these in memory, one stream of 4 · RowBytes: at each step the four rows' 32 · bits
        // bytes of it whose position is four times this step's (each line once, 1–4 per step), fetched while these rows are
        // computed (a matrix larger than the caches streams from memory, and the hardware prefetcher alone leaves the kernel
        // waiting: 1.2–1.5× the speed of prefetching each row's own next four rows at this step, decode-kernels). Prefetches
        // never fault, so the matrix's last rows may reach past its end.
        byte* next = w.Codes + (row + 4) * w.RowBytes;
        byte* codes0 = w.Codes + row * w.RowBytes, codes1 = codes0 + w.RowBytes, codes2 = codes1 + w.RowBytes, codes3 = codes2 + w.RowBytes;
        ushort* rowScales = w.Scales + (long)row * groups;
        ushort* rowMins = w.Mins + (long)row * groups;
        // the four rows' group scales and mins in f32 (converted in vectors, not one by one): eight groups at a time,
        // or the whole rows when they have at most eight; row r's group g at [r · stride + g mod stride], mins 32 later
        float* groupScales = stackalloc float[2 * 4 * 8];
        int stride = Math.Min(groups, 8);
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        for (int g = 0, t = 0, j = 0; g < groups; g++, j = j + 1 == stride ? 0 : j + 1)
        {
            if (j == 0)
                ConvertGroupScales<TCodes>(rowScales, rowMins, groups, g, groupScales);
            Vector256<float> products0 = default, products1 = default, products2 = default, products3 = default, sums = default;
            for (int c = g * group, end = t + steps; t < end; t++, c += Step)
            {
                Vector256<sbyte> low = Vector256.Load(a + t * Step), high = Vector256.Load(a + t * Step + 32);
                Vector256<int> zeros = default;
                if (TCodes.Symmetric)
                    zeros = Vector256.ShiftLeft(Vector256.Load(laneCounts + t * StepLanes), bits - 1);
                else
                    sums += Vector256.Load(laneSums + t * StepLanes);
                Vector256<float> d = Vector256.Load(laneScales + t * StepLanes);
                int at = (c >> 3) * bits;
                byte* fetch = next + 4 * at;
                Sse.Prefetch0(fetch);
                if (bits > 2)
                    Sse.Prefetch0(fetch + 64);
                if (bits > 4)
                {
                    Sse.Prefetch0(fetch + 128);
                    if (bits > 6)
                        Sse.Prefetch0(fetch + 192);
                }
                products0 = Fma.MultiplyAdd(Vector256.ConvertToSingle(StepDot(codes0 + at, low, high, permute, shifts, mask) - zeros), d, products0);
                products1 = Fma.MultiplyAdd(Vector256.ConvertToSingle(StepDot(codes1 + at, low, high, permute, shifts, mask) - zeros), d, products1);
                products2 = Fma.MultiplyAdd(Vector256.ConvertToSingle(StepDot(codes2 + at, low, high, permute, shifts, mask) - zeros), d, products2);
                products3 = Fma.MultiplyAdd(Vector256.ConvertToSingle(StepDot(codes3 + at, low, high, permute, shifts, mask) - zeros), d, products3);
            }
            acc0 = Fma.MultiplyAdd(Vector256.Create(groupScales[j]), products0, acc0);
            acc1 = Fma.MultiplyAdd(Vector256.Create(groupScales[stride + j]), products1, acc1);
            acc2 = Fma.MultiplyAdd(Vector256.Create(groupScales[2 * stride + j]), products2, acc2);
            acc3 = Fma.MultiplyAdd(Vector256.Create(groupScales[3 * stride + j]), products3, acc3);
            if (!TCodes.Symmetric)
            {
                acc0 = Fma.MultiplyAdd(Vector256.Create(groupScales[32 + j]), sums, acc0);
                acc1 = Fma.MultiplyAdd(Vector256.Create(groupScales[32 + stride + j]), sums, acc1);
                acc2 = Fma.MultiplyAdd(Vector256.Create(groupScales[32 + 2 * stride + j]), sums, acc2);
                acc3 = Fma.MultiplyAdd(Vector256.Create(groupScales[32 + 3 * stride + j]), sums, acc3);
            }
        }
        y[row] = Vector256.Sum(acc0);
        y[row + 1] = Vector256.Sum(acc1);
        y[row + 2] = Vector256.Sum(acc2);
        y[row + 3] = Vector256.Sum(acc3);
    }

    /// <summary>The group scales and mins of four rows (<paramref name="groups"/> apart) from group <paramref name="g"/> as
    /// f32, as <see cref="FourRows{TCodes}"/> reads them: rows of at most eight groups whole (contiguous, 4 · groups
    /// values), otherwise groups [g, g + 8) of each row at [8r + j]; mins 32 floats after the scales. Whole runs of 8 are
    /// widened in vectors (a subnormal scale costs its vector a microcode assist; group scales are normal but for
    /// all-but-constant groups), the rest one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ConvertGroupScales<TCodes>(ushort* scales, ushort* mins, int groups, int g, float* destination) where TCodes : struct, ICodeKind
    {
        if (groups <= 8)
        {
            Widen<TCodes>(scales, mins, 4 * groups, destination);
            return;
        }
        for (int r = 0; r < 4; r++)
            Widen<TCodes>(scales + r * groups + g, mins + r * groups + g, Math.Min(8, groups - g), destination + 8 * r);
    }

    /// <summary><paramref name="count"/> scales (and mins, 32 floats later) from f16 to f32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Widen<TCodes>(ushort* scales, ushort* mins, int count, float* destination) where TCodes : struct, ICodeKind
    {
        int i = 0;
        for (; i + 8 <= count; i += 8)
        {
            Vector256.Store(Fp16.ToSingle(Avx2.ConvertToVector256Int32(scales + i).AsUInt32()), destination + i);
            if (!TCodes.Symmetric)
                Vector256.Store(Fp16.ToSingle(Avx2.ConvertToVector256Int32(mins + i).AsUInt32()), destination + 32 + i);
        }
        for (; i < count; i++)
        {
            destination[i] = Fp16.ToSingle(scales[i]);
            if (!TCodes.Symmetric)
                destination[32 + i] = Fp16.ToSingle(mins[i]);
        }
    }

    /// <summary>The 8 lanes of one step of 64 codes at <paramref name="p"/> (8·bits bytes) against its prepared
    /// activations: lane k = Σ q·a over 4 codes of run 2⌊k/2⌋ (in <paramref name="low"/>) and the same 4 of run
    /// 2⌊k/2⌋ + 1 (in <paramref name="high"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> StepDot(byte* p, Vector256<sbyte> low, Vector256<sbyte> high, Vector512<byte> permute, Vector512<byte> shifts, Vector512<byte> mask)
    {
        Vector512<byte> q = Avx512Vbmi.MultiShift(shifts, Avx512Vbmi.PermuteVar64x8(Vector512.Load(p), permute).AsUInt64()) & mask;
        return AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, q.GetLower(), low), q.GetUpper(), high);
    }

    /// <summary>Per code width: the byte permute of <see cref="RowsAvx512"/>: runs 0, 2, 4, 6 to the low 64-bit lanes and
    /// 1, 3, 5, 7 to the high ones.</summary>
    private static readonly Vector512<byte>[] PairedPermutes = BuildUnpacking(permute: true, paired: true);

    /// <summary>Per code width: the byte permute that puts run j of a step in 64-bit lane j (the codebook kernel's).</summary>
    internal static readonly Vector512<byte>[] Permutes = BuildUnpacking(permute: true, paired: false);
    /// <summary>Per code width: the multishift counts of both permutes.</summary>
    internal static readonly Vector512<byte>[] Shifts = BuildUnpacking(permute: false, paired: false);

    /// <summary>Per width: byte 8j + i of the permute = byte r·bits + i of the step, r = j (in order) or the run lane j
    /// takes when paired (0, 2, 4, 6, 1, 3, 5, 7); byte 8j + k of the shifts = k·bits (code k of the run).</summary>
    private static Vector512<byte>[] BuildUnpacking(bool permute, bool paired)
    {
        var all = new Vector512<byte>[9];
        Span<byte> v = stackalloc byte[64];
        for (int bits = 1; bits <= 8; bits++)
        {
            for (int j = 0; j < 8; j++)
            {
                for (int i = 0; i < 8; i++)
                    v[8 * j + i] = permute ? (byte)Math.Min(63, (paired ? j % 4 * 2 + j / 4 : j) * bits + i) : (byte)(i * bits);
            }
            all[bits] = Vector512.Create((ReadOnlySpan<byte>)v);
        }
        return all;
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using Squeeze.Tensors;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

/// <summary>
/// One row of uniform codes (2..8 bits, any group that is a multiple of 8, an f16 scale and optionally an f16 min per
/// group, codes packed least-significant bit first: the native format's "uniform" scheme) as the fused kernels read it.
/// Decoded, value c of the row is <c>s · q + m</c> (asymmetric) or <c>s · (q − 2^(bits−1))</c> (symmetric).
/// </summary>
internal readonly unsafe struct UniformRows
{
    /// <summary>Rows of <paramref name="rowBytes"/> packed bytes ending at <paramref name="codesEnd"/> (the kernels never
    /// read past it), scales [rows, columns / group], mins likewise or null when symmetric.</summary>
    public UniformRows(byte* codes, byte* codesEnd, long rowBytes, ushort* scales, ushort* mins, int bits, int group, int columns)
    {
        Codes = codes;
        CodesEnd = codesEnd;
        RowBytes = rowBytes;
        Scales = scales;
        Mins = mins;
        Bits = bits;
        Group = group;
        Columns = columns;
    }

    public byte* Codes { get; }      // [rows, RowBytes]
    public byte* CodesEnd { get; }   // one past the last code byte of the matrix
    public long RowBytes { get; }
    public ushort* Scales { get; }   // [rows, Columns / Group] f16
    public ushort* Mins { get; }     // [rows, Columns / Group] f16, or null (symmetric)
    public int Bits { get; }
    public int Group { get; }
    public int Columns { get; }

    public int Groups => Columns / Group;
}

/// <summary>
/// Fused products of uniform codes (<see cref="UniformRows"/>) with activations quantized to 8 bits per block of 32 as
/// ggml's Q8_0 (<see cref="QuantizeActivations.Q8_0"/>, the same rounding the Q4_0 product runs on): the codes are unpacked
/// straight into integer dot products, no f32 row is written. With a = the activation codes, d their block scales,
/// q the weight codes and s, m a group's scale and min (m = −s·2^(bits−1) when symmetric):
/// <c>Σ_c (s·q_c + m) · d·a_c = Σ_groups s · Σ_lanes d·Σ_8 q·a + m · Σ_lanes d·Σ_8 a</c> over lanes of 8 values; symmetric
/// codes have their zero point z taken off in the integers, <c>Σ_groups s · Σ_lanes d·(Σ_8 q·a − z·Σ_8 a)</c>.
/// <para>The prepared activations (<see cref="PrepareActivations"/>) are laid out for the codes' steps: each group is
/// steps of 64 codes (the last one partial, padded with zero activations), and a step's 64 activation bytes hold its runs
/// of 8 in the order 0, 2, 4, 6 | 1, 3, 5, 7. A vector kernel unpacks a step's runs into that order, so its low and high
/// 32 bytes meet the activations in two 256-bit <c>vpdpbusd</c> whose 32-bit lanes add up as they are: lane k of both
/// halves holds 4 codes of runs 2⌊k/2⌋ and 2⌊k/2⌋ + 1, which lie in the same block of 32 when the group is whole runs of
/// 16 (<see cref="Supports"/>). One lane, 8 values, then takes one conversion and one multiply-add by its block's d.</para>
/// <see cref="DotScalar"/> is the reference; the vector kernels differ from it only in the order of the f32 sums.
/// </summary>
internal static unsafe partial class UniformDot
{
    /// <summary>Codes (and activation bytes) per step of a group.</summary>
    private const int Step = 64;

    /// <summary>Lanes of 8 values per step.</summary>
    private const int StepLanes = Step / 8;

    /// <summary>True when a weight of <paramref name="columns"/> values in groups of <paramref name="group"/> has a fused
    /// product: the row is whole blocks of 32 activations and the group whole pairs of runs of 8 codes (so a lane's two
    /// runs share their block).</summary>
    public static bool Supports(int group, int columns) => columns % QK == 0 && group % 16 == 0 && columns % group == 0;

    /// <summary>The kernel for <paramref name="bits"/>-bit codes at the best level of this machine.</summary>
    public static delegate*<in UniformRows, int, int, byte*, float*, void> For(int bits) => For(bits, VecDot.Best);

    /// <summary>The kernel for <paramref name="bits"/>-bit codes at <paramref name="level"/>: (weight, r0, r1, prepared
    /// activation row, y) → y[r] = Σ_c W[r, c] · x̃_c for r in [r0, r1). AVX-512 needs VBMI (byte permutes and
    /// multishifts) and AVX-VNNI; otherwise the AVX2 kernel (BMI2 <c>pdep</c>) runs.</summary>
    public static delegate*<in UniformRows, int, int, byte*, float*, void> For(int bits, SimdLevel level)
    {
        if (!VecDot.IsSupported(level))
            throw new PlatformNotSupportedException($"{level} kernels do not run on this machine");
        if (level == SimdLevel.Avx512 && Avx512Vbmi.IsSupported && AvxVnni.IsSupported)
            return &RowsAvx512;
        if (level >= SimdLevel.Avx2 && Bmi2.X64.IsSupported)
            return &RowsAvx2;
        return &RowsScalar;
    }

    /// <summary>Rows whose every load of <paramref name="span"/> bytes from one of their steps stays inside the codes.</summary>
    private static int SafeRows(in UniformRows w, int span)
    {
        long total = w.CodesEnd - w.Codes;
        return total < span ? 0 : (int)Math.Min(int.MaxValue, (total - span) / w.RowBytes);
    }

    /// <summary>Rows [r0, r1), whose last step would load past the end of the codes (a matrix's last rows), through
    /// <paramref name="kernel"/> from a copy of each row with a step's slack after it (the bytes past the row only meet zero
    /// activations or bits the unpacking drops).</summary>
    private static void PaddedRows(in UniformRows w, int r0, int r1, byte* x, float* y, delegate*<in UniformRows, int, int, byte*, float*, void> kernel)
    {
        if (r0 >= r1)
            return;
        long bytes = w.RowBytes + Step;
        byte* padded = stackalloc byte[(int)bytes];
        for (int row = r0; row < r1; row++)
        {
            Buffer.MemoryCopy(w.Codes + row * w.RowBytes, padded, bytes, w.RowBytes);
            long at = (long)row * w.Groups;
            var one = new UniformRows(padded, padded + bytes, w.RowBytes, w.Scales + at, w.Mins == null ? null : w.Mins + at, w.Bits, w.Group, w.Columns);
            kernel(in one, 0, 1, x, y + row);
        }
    }

    /// <summary>Steps of 64 codes in a group (the last one partial when the group is not a multiple of 64).</summary>
    private static int StepsPerGroup(int group) => (group + Step - 1) / Step;

    /// <summary>Steps in a row of <paramref name="columns"/> values.</summary>
    private static int RowSteps(int columns, int group) => columns / group * StepsPerGroup(group);

    /// <summary>Bytes of one prepared activation row of <paramref name="columns"/> values (a multiple of 32) in groups of
    /// <paramref name="group"/>: the codes, 64 bytes per step (runs in the kernels' order, zero past the group), then per
    /// lane of 8 values its block's scale d (f32), d · (the lane's sum of codes) (f32) and the lane's sum of codes (int32),
    /// each [steps · 8], 64-byte aligned.</summary>
    public static long ActivationRowBytes(int columns, int group) => LaneScalesOffset(columns, group) + 3L * LaneRegionBytes(columns, group);

    private static long LaneRegionBytes(int columns, int group) => (4L * StepLanes * RowSteps(columns, group) + 63) / 64 * 64;

    /// <summary>Where a prepared row's per-lane scales d (f32) start.</summary>
    public static long LaneScalesOffset(int columns, int group) => (long)Step * RowSteps(columns, group);

    /// <summary>Where a prepared row's per-lane d · Σ codes (f32) start.</summary>
    public static long LaneSumsOffset(int columns, int group) => LaneScalesOffset(columns, group) + LaneRegionBytes(columns, group);

    /// <summary>Where a prepared row's per-lane Σ codes (int32) start.</summary>
    public static long LaneCountsOffset(int columns, int group) => LaneSumsOffset(columns, group) + LaneRegionBytes(columns, group);

    /// <summary>Where value <paramref name="column"/>'s activation byte is in a prepared row, and its lane.</summary>
    private static (long Byte, long Lane) Place(int column, int group)
    {
        int g = column / group, within = column % group, run = within % Step / 8, i = column % 8;
        long step = (long)g * StepsPerGroup(group) + within / Step;
        return (step * Step + (run & 1) * 32 + (run >> 1) * 8 + i, step * StepLanes + (run >> 1) * 2 + (i >> 2));
    }

    /// <summary>The activation the kernels multiply value <paramref name="column"/> of a row with: its code times its
    /// block's scale, read from a prepared row (for checks against the decoded weights).</summary>
    public static float PreparedActivation(byte* prepared, int columns, int group, int column)
    {
        var (at, lane) = Place(column, group);
        return ((float*)(prepared + LaneScalesOffset(columns, group)))[lane] * ((sbyte*)prepared)[at];
    }

    /// <summary>Bytes of scratch <see cref="PrepareActivations"/> needs besides its destination (one Q8_0 row).</summary>
    public static long PrepareScratchBytes(int columns) => VecDot.ActivationRowBytes(GgmlType.Q8_0, columns);

    /// <summary>Quantizes <paramref name="tokens"/> rows of <paramref name="columns"/> activations as the Q8_0 product does
    /// (<see cref="VecDot.PrepareActivations"/>) and lays each out for the fused kernels of a weight in groups of
    /// <paramref name="group"/>: <paramref name="destination"/> holds tokens · <see cref="ActivationRowBytes"/> bytes
    /// (64-byte aligned), <paramref name="scratch"/> <see cref="PrepareScratchBytes"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    public static void PrepareActivations(float* x, int columns, int group, int tokens, byte* scratch, byte* destination)
    {
        long rowBytes = ActivationRowBytes(columns, group);
        int lanes = StepLanes * RowSteps(columns, group);
        for (int t = 0; t < tokens; t++)
        {
            VecDot.PrepareActivations(GgmlType.Q8_0, x + (long)t * columns, columns, 1, scratch);
            float* blockScales = (float*)(scratch + GgmlTypes.RowBytes(GgmlType.Q8_0, columns));
            byte* row = destination + t * rowBytes;
            new Span<byte>(row, (int)rowBytes).Clear();
            sbyte* q = (sbyte*)row;
            float* laneScales = (float*)(row + LaneScalesOffset(columns, group));
            float* laneSums = (float*)(row + LaneSumsOffset(columns, group));
            int* laneCounts = (int*)(row + LaneCountsOffset(columns, group));
            // runs of 8 values: a run's bytes stay together, and its two halves go to two lanes (as Place puts them)
            for (int c = 0, step = 0; c < columns; step += StepsPerGroup(group))
            {
                for (int within = 0; within < group; within += 8, c += 8)
                {
                    int run = within % Step >> 3;
                    long stepAt = step + within / Step;
                    long lane = stepAt * StepLanes + (run >> 1) * 2;
                    sbyte* codes = (sbyte*)(scratch + c / QK * Q8_0Bytes + Q8_0Qs) + c % QK;
                    *(ulong*)(q + stepAt * Step + (run & 1) * 32 + (run >> 1) * 8) = *(ulong*)codes;
                    float d = blockScales[c / QK];
                    laneScales[lane] = laneScales[lane + 1] = d;
                    laneCounts[lane] += codes[0] + codes[1] + codes[2] + codes[3];
                    laneCounts[lane + 1] += codes[4] + codes[5] + codes[6] + codes[7];
                }
            }
            for (int l = 0; l < lanes; l++)
                laneSums[l] = laneScales[l] * laneCounts[l];
        }
    }

    /// <summary><see cref="DotScalar"/> for rows [r0, r1).</summary>
    public static void RowsScalar(in UniformRows w, int r0, int r1, byte* x, float* y)
    {
        for (int row = r0; row < r1; row++)
            y[row] = DotScalar(w, row, x);
    }

    /// <summary>Reference: per group, asymmetric <c>s · Σ_lanes d · (Σ_8 q·a) + m · Σ_lanes d · Σ_8 a</c>, symmetric
    /// <c>s · Σ_lanes d · Σ_8 (q − 2^(bits−1))·a</c> (exact integers per lane, so no cancellation); lanes (the prepared
    /// layout's: 4 values of each of a pair of runs) and groups summed in order, codes read one at a time from the bit
    /// stream.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    public static float DotScalar(in UniformRows w, int row, byte* x)
    {
        int bits = w.Bits, group = w.Group, columns = w.Columns, groups = w.Groups, mask = (1 << bits) - 1;
        int zero = w.Mins == null ? 1 << (bits - 1) : 0;
        int steps = StepsPerGroup(group);
        byte* codes = w.Codes + row * w.RowBytes;
        sbyte* a = (sbyte*)x;
        float* laneScales = (float*)(x + LaneScalesOffset(columns, group));
        float* laneSums = (float*)(x + LaneSumsOffset(columns, group));
        float sum = 0;
        for (int g = 0; g < groups; g++)
        {
            (float s, float m) = ScaleAndMin(w, row, g);
            float products = 0, sums = 0;
            for (int step = 0; step < steps; step++)
            {
                for (int k = 0; k < StepLanes; k++)
                {
                    int dot = 0;
                    for (int run = 2 * (k >> 1); run <= 2 * (k >> 1) + 1; run++)
                    {
                        for (int i = 4 * (k & 1); i < 4 * (k & 1) + 4; i++)
                        {
                            int within = step * Step + 8 * run + i;
                            if (within >= group)
                                continue;
                            long bit = (long)(g * group + within) * bits;
                            int q = ((codes[bit >> 3] | (((bit & 7) + bits > 8 ? codes[(bit >> 3) + 1] : 0) << 8)) >> (int)(bit & 7)) & mask;
                            dot += (q - zero) * a[((long)g * steps + step) * Step + (run & 1) * 32 + (run >> 1) * 8 + i];
                        }
                    }
                    long lane = ((long)g * steps + step) * StepLanes + k;
                    products += dot * laneScales[lane];
                    sums += laneSums[lane];
                }
            }
            sum += s * products + m * sums;
        }
        return sum;
    }

    /// <summary>A prepared activation row's parts (<see cref="PrepareActivations"/>) for the weight a kernel runs.</summary>
    private readonly struct PreparedRow
    {
        public PreparedRow(in UniformRows w, byte* x)
        {
            Activations = (sbyte*)x;
            LaneScales = (float*)(x + LaneScalesOffset(w.Columns, w.Group));
            LaneSums = (float*)(x + LaneSumsOffset(w.Columns, w.Group));
            LaneCounts = (int*)(x + LaneCountsOffset(w.Columns, w.Group));
            Steps = StepsPerGroup(w.Group);
        }

        public sbyte* Activations { get; }
        public float* LaneScales { get; }
        public float* LaneSums { get; }
        public int* LaneCounts { get; }
        /// <summary>Steps of 64 codes per group.</summary>
        public int Steps { get; }
    }

    /// <summary>Whether a kernel's codes are symmetric (zero point taken off in the integers) or have a min per group: a
    /// type argument, so each kernel is compiled without the other's branch.</summary>
    private interface ICodeKind
    {
        static abstract bool Symmetric { get; }
    }

    private readonly struct SymmetricCodes : ICodeKind
    {
        public static bool Symmetric => true;
    }

    private readonly struct AsymmetricCodes : ICodeKind
    {
        public static bool Symmetric => false;
    }

    /// <summary>Group <paramref name="g"/>'s scale and min as f32 (0 for a symmetric group: its zero point is taken off the
    /// codes).</summary>
    private static (float Scale, float Min) ScaleAndMin(in UniformRows w, int row, int g)
    {
        long at = (long)row * w.Groups + g;
        return (Fp16.ToSingle(w.Scales[at]), w.Mins != null ? Fp16.ToSingle(w.Mins[at]) : 0);
    }
}

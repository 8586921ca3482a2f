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
/// <c>Σ_c (s·q_c + m) · d·a_c = Σ_groups s · Σ_lanes d·Σ_4 q·a + m · Σ_lanes d·Σ_4 a</c> over lanes of 4 values; symmetric
/// codes have their zero point z taken off in the integers, <c>Σ_groups s · Σ_lanes d·(Σ_4 q·a − z·Σ_4 a)</c>.
/// <see cref="DotScalar"/> is the reference; the vector kernels differ from it only in the order of the f32 sums.
/// </summary>
internal static unsafe partial class UniformDot
{
    /// <summary>True when a weight of <paramref name="columns"/> values in groups of <paramref name="group"/> has a fused
    /// product: the row is whole blocks of 32 activations and the group whole runs of 8 codes (whole bytes).</summary>
    public static bool Supports(int group, int columns) => columns % QK == 0 && group % 8 == 0 && columns % group == 0;

    /// <summary>The kernel for <paramref name="bits"/>-bit codes at the best level of this machine.</summary>
    public static delegate*<in UniformRows, int, int, byte*, float*, void> For(int bits) => For(bits, VecDot.Best);

    /// <summary>The kernel for <paramref name="bits"/>-bit codes at <paramref name="level"/>: (weight, r0, r1, prepared
    /// activation row, y) → y[r] = Σ_c W[r, c] · x̃_c for r in [r0, r1). AVX-512 needs VBMI (byte permutes and
    /// multishifts) and codes of at most 7 bits (pairs of products in 16 bits); otherwise the AVX2 kernel (BMI2
    /// <c>pdep</c>) runs.</summary>
    public static delegate*<in UniformRows, int, int, byte*, float*, void> For(int bits, SimdLevel level)
    {
        if (!VecDot.IsSupported(level))
            throw new PlatformNotSupportedException($"{level} kernels do not run on this machine");
        if (level == SimdLevel.Avx512 && Avx512Vbmi.IsSupported && bits <= 7)
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

    /// <summary>Bytes of one prepared activation row of <paramref name="columns"/> values (a multiple of 32): the codes
    /// [columns] and 64 bytes of zero padding, then per lane of 4 values its block's scale d (f32), d · (the lane's sum of
    /// codes) (f32) and the lane's sum of codes (int32), each [columns / 4 + 16], 64-byte aligned and zero-padded.</summary>
    public static long ActivationRowBytes(int columns) => LaneScalesOffset(columns) + 3L * LaneRegionBytes(columns);

    private static long LaneRegionBytes(int columns) => (4L * (columns / 4 + 16) + 63) / 64 * 64;

    /// <summary>Where a prepared row's per-lane scales d (f32) start.</summary>
    public static long LaneScalesOffset(int columns) => (columns + 64L + 63) / 64 * 64;

    /// <summary>Where a prepared row's per-lane d · Σ codes (f32) start.</summary>
    public static long LaneSumsOffset(int columns) => LaneScalesOffset(columns) + LaneRegionBytes(columns);

    /// <summary>Where a prepared row's per-lane Σ codes (int32) start.</summary>
    public static long LaneCountsOffset(int columns) => LaneSumsOffset(columns) + LaneRegionBytes(columns);

    /// <summary>Bytes of scratch <see cref="PrepareActivations"/> needs besides its destination (one Q8_0 row).</summary>
    public static long PrepareScratchBytes(int columns) => VecDot.ActivationRowBytes(GgmlType.Q8_0, columns);

    /// <summary>Quantizes <paramref name="tokens"/> rows of <paramref name="columns"/> activations as the Q8_0 product does
    /// (<see cref="VecDot.PrepareActivations"/>) and lays each out for the fused kernels: <paramref name="destination"/>
    /// holds tokens · <see cref="ActivationRowBytes"/> bytes (64-byte aligned), <paramref name="scratch"/>
    /// <see cref="PrepareScratchBytes"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    public static void PrepareActivations(float* x, int columns, int tokens, byte* scratch, byte* destination)
    {
        long rowBytes = ActivationRowBytes(columns);
        int lanes = columns / 4;
        for (int t = 0; t < tokens; t++)
        {
            VecDot.PrepareActivations(GgmlType.Q8_0, x + (long)t * columns, columns, 1, scratch);
            float* blockScales = (float*)(scratch + GgmlTypes.RowBytes(GgmlType.Q8_0, columns));
            byte* row = destination + t * rowBytes;
            new Span<byte>(row, (int)rowBytes).Clear();
            sbyte* q = (sbyte*)row;
            float* laneScales = (float*)(row + LaneScalesOffset(columns));
            float* laneSums = (float*)(row + LaneSumsOffset(columns));
            int* laneCounts = (int*)(row + LaneCountsOffset(columns));
            for (int b = 0; b < columns / QK; b++)
                Buffer.MemoryCopy(scratch + b * Q8_0Bytes + Q8_0Qs, q + b * QK, QK, QK);
            for (int l = 0; l < lanes; l++)
            {
                float d = blockScales[l * 4 / QK];
                int count = q[4 * l] + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3];
                laneScales[l] = d;
                laneSums[l] = d * count;
                laneCounts[l] = count;
            }
        }
    }

    /// <summary><see cref="DotScalar"/> for rows [r0, r1).</summary>
    public static void RowsScalar(in UniformRows w, int r0, int r1, byte* x, float* y)
    {
        for (int row = r0; row < r1; row++)
            y[row] = DotScalar(w, row, x);
    }

    /// <summary>Reference: per group, asymmetric <c>s · Σ_lanes d · (Σ_4 q·a) + m · Σ_lanes d · Σ_4 a</c>, symmetric
    /// <c>s · Σ_lanes d · Σ_4 (q − 2^(bits−1))·a</c> (exact integers per lane, so no cancellation); lanes and groups summed
    /// in order, codes read one at a time from the bit stream.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    public static float DotScalar(in UniformRows w, int row, byte* x)
    {
        int bits = w.Bits, group = w.Group, columns = w.Columns, groups = w.Groups, mask = (1 << bits) - 1;
        int zero = w.Mins == null ? 1 << (bits - 1) : 0;
        byte* codes = w.Codes + row * w.RowBytes;
        sbyte* a = (sbyte*)x;
        float* laneScales = (float*)(x + LaneScalesOffset(columns));
        float* laneSums = (float*)(x + LaneSumsOffset(columns));
        float sum = 0;
        for (int g = 0; g < groups; g++)
        {
            (float s, float m) = ScaleAndMin(w, row, g);
            float products = 0, sums = 0;
            for (int l = g * group / 4; l < (g + 1) * group / 4; l++)
            {
                int dot = 0;
                for (int c = 4 * l; c < 4 * l + 4; c++)
                {
                    long bit = (long)c * bits;
                    int q = ((codes[bit >> 3] | (((bit & 7) + bits > 8 ? codes[(bit >> 3) + 1] : 0) << 8)) >> (int)(bit & 7)) & mask;
                    dot += (q - zero) * a[c];
                }
                products += dot * laneScales[l];
                sums += laneSums[l];
            }
            sum += s * products + m * sums;
        }
        return sum;
    }

    /// <summary>Group <paramref name="g"/>'s scale and min as f32 (0 for a symmetric group: its zero point is taken off the
    /// codes).</summary>
    private static (float Scale, float Min) ScaleAndMin(in UniformRows w, int row, int g)
    {
        long at = (long)row * w.Groups + g;
        return (Fp16.ToSingle(w.Scales[at]), w.Mins != null ? Fp16.ToSingle(w.Mins[at]) : 0);
    }
}

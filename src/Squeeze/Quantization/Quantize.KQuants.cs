using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Squeeze.Tensors.Blocks;
using static Squeeze.Tensors.HalfConversions;

namespace Squeeze.Quantization;

// ggml's 256-value super-blocks: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Every one decodes as
//   x̂ = (d * sc[j]) * q - (dmin * m[j])      (j = sub-block; no min term for Q3_K and Q6_K)
// so each block is first described by (d, dmin, sc[], m[], q[]), found by llama.cpp's algorithm (quantize_row_*_ref
// without importance, quantize_row_*_impl with it), then refined by coordinate descent on that description
// (Refine), and finally packed into ggml's bit layout.
public static partial class Quantize
{
    private const int QK_K = 256;

    /// <summary>Ranges of one k-quant format: sub-blocks, code range, scale range, min range (MMax 0: no min term).</summary>
    private sealed record KFormat(int SubBlocks, int QMin, int QMax, int ScMin, int ScMax, int MMax)
    {
        public int SubSize => QK_K / SubBlocks;

        /// <summary>Refine's sub-block candidates in its order, as offsets from the current (sc, m): sc from −r to r and,
        /// within each, m from −r to r (0 alone without a min term).</summary>
        public int[] ScOffsets { get; } = SubBlockOffsets(MMax, scale: true);

        /// <summary>The m offsets of <see cref="ScOffsets"/>' candidates.</summary>
        public int[] MOffsets { get; } = SubBlockOffsets(MMax, scale: false);

        /// <summary><see cref="ScOffsets"/> as RefineLanes' lanes: lane l of row r holds the offset of candidate
        /// r·16/S + l div S (S sub-blocks), the last candidate repeated past the end.</summary>
        public float[] ScOffsetLanes { get; } = OffsetLanes(SubBlockOffsets(MMax, scale: true), SubBlocks);

        /// <summary><see cref="MOffsets"/> as lanes, as <see cref="ScOffsetLanes"/>.</summary>
        public float[] MOffsetLanes { get; } = OffsetLanes(SubBlockOffsets(MMax, scale: false), SubBlocks);

        private static int[] SubBlockOffsets(int mMax, bool scale)
        {
            int mCount = mMax == 0 ? 1 : 2 * RefineSubRadius + 1;
            var offsets = new int[(2 * RefineSubRadius + 1) * mCount];
            for (int k = 0; k < offsets.Length; k++)
                offsets[k] = scale ? k / mCount - RefineSubRadius : mMax == 0 ? 0 : k % mCount - RefineSubRadius;
            return offsets;
        }

        private static float[] OffsetLanes(int[] offsets, int subBlocks)
        {
            int perRow = 16 / subBlocks;
            var lanes = new float[(offsets.Length + perRow - 1) / perRow * 16];
            for (int l = 0; l < lanes.Length; l++)
                lanes[l] = offsets[Math.Min(offsets.Length - 1, l / 16 * perRow + l % 16 / subBlocks)];
            return lanes;
        }
    }

    private static readonly KFormat FormatQ2K = new(16, 0, 3, 0, 15, 15);
    private static readonly KFormat FormatQ3K = new(16, -4, 3, -32, 31, 0);
    private static readonly KFormat FormatQ4K = new(8, 0, 15, 0, 63, 63);
    private static readonly KFormat FormatQ5K = new(8, 0, 31, 0, 63, 63);
    private static readonly KFormat FormatQ6K = new(16, -32, 31, -128, 127, 0);

    /// <summary>One super-block's description: half bits of d and dmin, sub-block scales and mins, signed codes.</summary>
    private sealed class KBlock
    {
        public ushort D;
        public ushort DMin;
        public readonly int[] Sc = new int[16];
        public readonly int[] M = new int[16];
        public readonly int[] Q = new int[QK_K];

        public void CopyTo(KBlock other)
        {
            other.D = D;
            other.DMin = DMin;
            Sc.CopyTo(other.Sc, 0);
            M.CopyTo(other.M, 0);
            Q.CopyTo(other.Q, 0);
        }
    }

    private delegate void KStart(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock block);

    private delegate void KPack(KBlock block, Span<byte> destination);

    // Two starts computed together (their vector form): the blocks starts[0] and starts[1] would write.
    private delegate void KStartPair(ReadOnlySpan<float> x, KBlock first, KBlock second);

    // The first start for two consecutive super-blocks (x: both) computed together (its vector form): the blocks starts[0]
    // would write for each.
    private delegate void KStartTwoBlocks(ReadOnlySpan<float> x, KBlock first, KBlock second);

    // For each super-block: every starting point (llama.cpp's algorithms) is refined, the lowest error wins. pair, when
    // given, computes both starts at once where the vectors are used; firstTwoBlocks, when given, computes the first start
    // of two super-blocks at once there (at an even block, keeping the next block's for the next step).
    private static void KQuantRow(KFormat format, ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y, int blockBytes,
        KStart[] starts, KPack pack, ScaleSearch search, KStartPair? pair = null, KStartTwoBlocks? firstTwoBlocks = null)
    {
        bool refine = search == ScaleSearch.Refined;
        if (!refine)
            starts = starts[..1];
        var best = new KBlock();
        var candidate = new KBlock();
        var second = pair is not null && starts.Length == 2 && UseVectors ? new KBlock() : null;
        var scratch = refine && !UseVectors ? new KBlock() : null;
        var lanes = refine && UseVectors ? new RefineBuffers() : null;
        var ahead = firstTwoBlocks is not null && UseVectors ? new KBlock() : null;
        int nb = x.Length / QK_K;
        for (int i = 0; i < nb; i++)
        {
            ReadOnlySpan<float> xb = x.Slice(i * QK_K, QK_K);
            ReadOnlySpan<float> qw = importance.IsEmpty ? default : importance.Slice(i * QK_K, QK_K);
            lanes?.Load(format, xb, qw);
            // Start from the lowest-error llama.cpp algorithm, then refine it (never increasing its error).
            double bestError = double.PositiveInfinity;
            void Consider(KBlock started, ReadOnlySpan<float> xb, ReadOnlySpan<float> qw)
            {
                // A single start has nothing to be compared with.
                double error = starts.Length == 1 ? 0 : lanes is not null ? BlockErrorLanes(format, qw, started, lanes) : BlockError(format, xb, qw, started);
                if (error < bestError)
                {
                    bestError = error;
                    started.CopyTo(best);
                    if (lanes is not null && starts.Length > 1)
                        lanes.KeepStart();
                }
            }
            if (second is not null)
            {
                Array.Clear(candidate.Sc);
                Array.Clear(candidate.M);
                Array.Clear(second.Sc);
                Array.Clear(second.M);
                pair!(xb, candidate, second);
                Consider(candidate, xb, qw);
                Consider(second, xb, qw);
            }
            else
            {
                for (int s = 0; s < starts.Length; s++)
                {
                    Array.Clear(candidate.Sc);
                    Array.Clear(candidate.M);
                    if (s == 0 && ahead is not null && i % 2 == 1)
                    {
                        ahead.CopyTo(candidate);
                    }
                    else if (s == 0 && ahead is not null && i + 1 < nb)
                    {
                        Array.Clear(ahead.Sc);
                        Array.Clear(ahead.M);
                        firstTwoBlocks!(x.Slice(i * QK_K, 2 * QK_K), candidate, ahead);
                    }
                    else
                    {
                        starts[s](xb, qw, candidate);
                    }
                    Consider(candidate, xb, qw);
                }
            }
            if (refine)
            {
                if (lanes is not null)
                    RefineLanes(format, xb, qw, best, lanes);
                else
                    Refine(format, xb, qw, best, scratch!);
            }
            pack(best, y.Slice(i * blockBytes, blockBytes));
        }
    }

    private static void Q2_K(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y, ScaleSearch search)
        => KQuantRow(FormatQ2K, x, importance, y, 84, importance.IsEmpty ? [StartQ2KRef] : [StartQ2KWeighted], PackQ2K, search);

    private static void Q3_K(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y, ScaleSearch search)
        => KQuantRow(FormatQ3K, x, importance, y, 110, importance.IsEmpty ? [StartQ3KRef, StartQ3KWeighted] : [StartQ3KWeighted], PackQ3K, search,
            firstTwoBlocks: importance.IsEmpty ? StartQ3KRefTwoBlocks : null);

    private static void Q4_K(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y, ScaleSearch search)
        => KQuantRow(FormatQ4K, x, importance, y, 144, importance.IsEmpty ? [StartQ4KRef, StartQ4KWeighted] : [StartQ4KWeighted], PackQ4K, search,
            StartQ4KPair);

    private static void Q5_K(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y, ScaleSearch search)
        => KQuantRow(FormatQ5K, x, importance, y, 176, importance.IsEmpty ? [StartQ5KRef, StartQ5KWeighted] : [StartQ5KWeighted], PackQ5K, search,
            StartQ5KPair);

    private static void Q6_K(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y, ScaleSearch search)
        => KQuantRow(FormatQ6K, x, importance, y, 210, [StartQ6K], PackQ6K, search);

    // ================= starting points: llama.cpp's algorithms =================

    // quantize_row_q2_K_ref: make_qkx2_quants per 16 (weights |x|, MAD), 4-bit scales and mins against their maxima.
    private static void StartQ2KRef(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b)
    {
        Span<byte> L = stackalloc byte[QK_K];
        Span<byte> Laux = stackalloc byte[16];
        Span<float> weights = stackalloc float[16];
        Span<float> mins = stackalloc float[16];
        Span<float> scales = stackalloc float[16];
        const float q4scale = 15f;
        float maxScale = 0, maxMin = 0;
        if (UseVectors)
        {
            Span<float> all = stackalloc float[QK_K];
            for (int l = 0; l < QK_K; l++)
                all[l] = MathF.Abs(x[l]);
            MakeQkxQuantsSubBlocks(3, x, all, L, mins, scales, -0.5f, 0.1f, 15, true);
        }
        for (int j = 0; j < 16; j++)
        {
            if (!UseVectors)
            {
                for (int l = 0; l < 16; l++)
                    weights[l] = MathF.Abs(x[16 * j + l]);
                scales[j] = MakeQkxQuants(3, x.Slice(16 * j, 16), weights, L.Slice(16 * j, 16), out mins[j], Laux, -0.5f, 0.1f, 15, true);
            }
            if (scales[j] > maxScale) maxScale = scales[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }
        Span<int> packed = stackalloc int[16];
        if (maxScale > 0)
        {
            float iscale = q4scale / maxScale;
            for (int j = 0; j < 16; j++)
                packed[j] = (byte)NearestInt(iscale * scales[j]);
            b.D = F32ToF16(maxScale / q4scale);
        }
        else
        {
            packed.Clear();
            b.D = F32ToF16(0f);
        }
        if (maxMin > 0)
        {
            float iscale = q4scale / maxMin;
            for (int j = 0; j < 16; j++)
                packed[j] = (byte)(packed[j] | (NearestInt(iscale * mins[j]) << 4));
            b.DMin = F32ToF16(maxMin / q4scale);
        }
        else
        {
            b.DMin = F32ToF16(0f);
        }
        for (int j = 0; j < 16; j++)
        {
            b.Sc[j] = packed[j] & 0xF;
            b.M[j] = packed[j] >> 4;
        }
        Q2KRequantize(x, b, L);
    }

    // quantize_row_q2_K_impl (importance): make_qkx3_quants per 16, make_qp_quants for scales and mins.
    private static void StartQ2KWeighted(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b)
    {
        Span<byte> L = stackalloc byte[QK_K];
        Span<byte> Laux = stackalloc byte[16];
        Span<float> weight = stackalloc float[QK_K];
        Span<float> mins = stackalloc float[16];
        Span<float> scales = stackalloc float[16];
        Span<float> sw = stackalloc float[16];
        Span<byte> Ls = stackalloc byte[16];
        Span<byte> Lm = stackalloc byte[16];
        float sumX2 = 0;
        for (int j = 0; j < QK_K; j++)
            sumX2 += x[j] * x[j];
        float sigma2 = sumX2 / QK_K;
        for (int j = 0; j < 16; j++)
        {
            for (int l = 0; l < 16; l++)
                weight[16 * j + l] = qw[16 * j + l] * MathF.Sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
            for (int l = 0; l < 16; l++)
                sw[j] += weight[16 * j + l];
        }
        if (UseVectors)
            MakeQkxQuantsSubBlocks(3, x, weight, L, mins, scales, -0.9f, 0.05f, 36, false);
        else
        {
            for (int j = 0; j < 16; j++)
                scales[j] = MakeQkxQuants(3, x.Slice(16 * j, 16), weight.Slice(16 * j, 16), L.Slice(16 * j, 16), out mins[j], Laux, -0.9f, 0.05f, 36, false);
        }
        float dm = MakeQpQuants(15, scales, Ls, sw);
        float mm = MakeQpQuants(15, mins, Lm, sw);
        b.D = F32ToF16(dm);
        b.DMin = F32ToF16(mm);
        for (int j = 0; j < 16; j++)
        {
            int packed = (byte)(Ls[j] | (Lm[j] << 4));
            b.Sc[j] = packed & 0xF;
            b.M[j] = packed >> 4;
        }
        Q2KRequantize(x, b, L);
    }

    private static void Q2KRequantize(ReadOnlySpan<float> x, KBlock b, ReadOnlySpan<byte> L)
    {
        float dAll = F16ToF32(b.D), mAll = F16ToF32(b.DMin);
        for (int j = 0; j < 16; j++)
        {
            float d = dAll * b.Sc[j];
            if (d == 0)
            {
                for (int ii = 0; ii < 16; ii++)
                    b.Q[16 * j + ii] = L[16 * j + ii];
                continue;
            }
            float dm = mAll * b.M[j];
            if (UseVectors)
            {
                RequantizeLanes(x.Slice(16 * j, 16), dm, d, 0, 3, b.Q.AsSpan(16 * j, 16));
                continue;
            }
            for (int ii = 0; ii < 16; ii++)
                b.Q[16 * j + ii] = Math.Max(0, Math.Min(3, NearestInt((x[16 * j + ii] + dm) / d)));
        }
    }

    // quantize_row_q3_K_ref: make_q3_quants per 16, 6-bit signed scales against the scale of largest magnitude.
    private static void StartQ3KRef(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b)
    {
        Span<sbyte> L = stackalloc sbyte[QK_K];
        Span<float> scales = stackalloc float[16];
        if (UseVectors)
        {
            MakeQ3QuantsSubBlocks(4, x, x, L, L, scales, scales);
        }
        else
        {
            for (int j = 0; j < 16; j++)
                scales[j] = MakeQ3Quants(4, x.Slice(16 * j, 16), L.Slice(16 * j, 16), true);
        }
        Q3KRefFinish(x, b, L, scales);
    }

    // StartQ3KRef for two consecutive super-blocks (x: both, 512 values), their make_q3_quants searches side by side.
    private static void StartQ3KRefTwoBlocks(ReadOnlySpan<float> x, KBlock first, KBlock second)
    {
        Span<sbyte> L = stackalloc sbyte[2 * QK_K];
        Span<float> scales = stackalloc float[32];
        MakeQ3QuantsSubBlocks(4, x[..QK_K], x[QK_K..], L[..QK_K], L[QK_K..], scales[..16], scales[16..]);
        Q3KRefFinish(x[..QK_K], first, L[..QK_K], scales[..16]);
        Q3KRefFinish(x[QK_K..], second, L[QK_K..], scales[16..]);
    }

    // quantize_row_q3_K_ref after make_q3_quants: the 6-bit signed scales, then the codes.
    private static void Q3KRefFinish(ReadOnlySpan<float> x, KBlock b, ReadOnlySpan<sbyte> L, ReadOnlySpan<float> scales)
    {
        float maxScale = 0, amax = 0;
        for (int j = 0; j < 16; j++)
        {
            float scale = MathF.Abs(scales[j]);
            if (scale > amax)
            {
                amax = scale;
                maxScale = scales[j];
            }
        }
        if (maxScale != 0)
        {
            float iscale = -32f / maxScale;
            for (int j = 0; j < 16; j++)
            {
                int l = (sbyte)NearestInt(iscale * scales[j]);
                b.Sc[j] = Math.Max(-32, Math.Min(31, l));
            }
            b.D = F32ToF16(1 / iscale);
        }
        else
        {
            // llama.cpp leaves the packed scales at 0, which decode as -32.
            for (int j = 0; j < 16; j++)
                b.Sc[j] = -32;
            b.D = F32ToF16(0f);
        }
        Q3KRequantize(x, b, L);
    }

    // quantize_row_q3_K_impl: make_qx_quants per 16 with weights (importance or x²), make_qx_quants for the scales.
    [SkipLocalsInit] // every element of the buffers is written before it is read
    private static void StartQ3KWeighted(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b)
    {
        Span<sbyte> L = stackalloc sbyte[QK_K];
        Span<float> scales = stackalloc float[16];
        Span<float> weight = stackalloc float[QK_K];
        Span<float> sw = stackalloc float[16];
        Span<sbyte> Ls = stackalloc sbyte[16];
        // sigma² weighs the importance; without it the weights are x² (and the sum, a chain of 256 additions, is skipped).
        float sigma2 = 0;
        if (!qw.IsEmpty)
        {
            float sumX2 = 0;
            for (int j = 0; j < QK_K; j++)
                sumX2 += x[j] * x[j];
            sigma2 = 2 * sumX2 / QK_K;
        }
        for (int j = 0; j < 16; j++)
        {
            for (int l = 0; l < 16; l++)
            {
                float v = x[16 * j + l];
                weight[16 * j + l] = qw.IsEmpty ? v * v : qw[16 * j + l] * MathF.Sqrt(sigma2 + v * v);
            }
            float sumw = 0;
            for (int l = 0; l < 16; l++)
                sumw += weight[16 * j + l];
            sw[j] = sumw;
        }
        if (UseVectors)
            MakeQxQuantsSubBlocks(4, x, weight, L, scales);
        else
        {
            for (int j = 0; j < 16; j++)
                scales[j] = MakeQxQuants(4, x.Slice(16 * j, 16), L.Slice(16 * j, 16), 1, weight.Slice(16 * j, 16));
        }
        float dBlock = MakeQxQuants(32, scales, Ls, 1, sw);
        for (int j = 0; j < 16; j++)
            b.Sc[j] = Ls[j] - 32;
        b.D = F32ToF16(dBlock);
        Q3KRequantize(x, b, L);
    }

    // Codes for the chosen scales (sub-blocks whose scale decodes to 0 keep the search's codes).
    private static void Q3KRequantize(ReadOnlySpan<float> x, KBlock b, ReadOnlySpan<sbyte> L)
    {
        float dAll = F16ToF32(b.D);
        for (int j = 0; j < 16; j++)
        {
            float d = dAll * b.Sc[j];
            if (d != 0 && UseVectors)
            {
                RequantizeLanes(x.Slice(16 * j, 16), 0, d, -4, 3, b.Q.AsSpan(16 * j, 16));
                continue;
            }
            for (int ii = 0; ii < 16; ii++)
            {
                b.Q[16 * j + ii] = d == 0
                    ? L[16 * j + ii] - 4
                    : Math.Max(-4, Math.Min(3, NearestInt(x[16 * j + ii] / d)));
            }
        }
    }

    // quantize_row_q4_K_ref: make_qkx2_quants per 32 (weights av_x + |x|), 6-bit scales and mins against their maxima.
    private static void StartQ4KRef(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b) => StartQ45KRef(x, b, 15, Q4KRefTrials);

    private static void StartQ5KRef(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b) => StartQ45KRef(x, b, 31, Q5KRefTrials);

    /// <summary>make_qkx2_quants' trial scales: rmin, rdelta and nstep.</summary>
    private readonly record struct QkxTrials(float RMin, float RDelta, int NStep);

    private static readonly QkxTrials Q4KRefTrials = new(-1f, 0.1f, 20);
    private static readonly QkxTrials Q5KRefTrials = new(-0.5f, 0.1f, 15);
    private static readonly QkxTrials Q45KWeightedTrials = new(-0.9f, 0.05f, 36);

    private static void StartQ45KRef(ReadOnlySpan<float> x, KBlock b, int nmax, QkxTrials trials)
    {
        Span<byte> L = stackalloc byte[QK_K];
        Span<byte> Laux = stackalloc byte[32];
        Span<float> weights = stackalloc float[QK_K];
        Span<float> mins = stackalloc float[8];
        Span<float> scales = stackalloc float[8];
        Q45KRefWeights(x, weights);
        for (int j = 0; j < 8; j++)
        {
            scales[j] = MakeQkxQuants(nmax, x.Slice(32 * j, 32), weights.Slice(32 * j, 32), L.Slice(32 * j, 32), out mins[j], Laux,
                trials.RMin, trials.RDelta, trials.NStep, false);
        }
        Q45KRefFinish(x, b, L, scales, mins, nmax);
    }

    // av_x + |x| per sub-block of 32, av_x the sub-block's root mean square.
    private static void Q45KRefWeights(ReadOnlySpan<float> x, Span<float> weights)
    {
        for (int j = 0; j < 8; j++)
        {
            float sumX2 = 0;
            for (int l = 0; l < 32; l++)
                sumX2 += x[32 * j + l] * x[32 * j + l];
            float avX = MathF.Sqrt(sumX2 / 32);
            for (int l = 0; l < 32; l++)
                weights[32 * j + l] = avX + MathF.Abs(x[32 * j + l]);
        }
    }

    // The sub-block scales and mins in 6 bits against their maxima, then the codes.
    private static void Q45KRefFinish(ReadOnlySpan<float> x, KBlock b, ReadOnlySpan<byte> L, ReadOnlySpan<float> scales, ReadOnlySpan<float> mins, int nmax)
    {
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; j++)
        {
            if (scales[j] > maxScale) maxScale = scales[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }
        float invScale = maxScale > 0 ? 63f / maxScale : 0f;
        float invMin = maxMin > 0 ? 63f / maxMin : 0f;
        for (int j = 0; j < 8; j++)
        {
            b.Sc[j] = Math.Min(63, (int)(byte)NearestInt(invScale * scales[j]));
            b.M[j] = Math.Min(63, (int)(byte)NearestInt(invMin * mins[j]));
        }
        b.D = F32ToF16(maxScale / 63f);
        b.DMin = F32ToF16(maxMin / 63f);
        Q45KRequantize(x, b, L, nmax);
    }

    // quantize_row_q4_K_impl / q5_K_impl: make_qkx3_quants per 32 (importance or av_x + |x|), make_qp_quants for scales and mins.
    private static void StartQ4KWeighted(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b) => StartQ45KWeighted(x, qw, b, 15);

    private static void StartQ5KWeighted(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b) => StartQ45KWeighted(x, qw, b, 31);

    private static void StartQ45KWeighted(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b, int nmax)
    {
        Span<byte> L = stackalloc byte[QK_K];
        Span<byte> Laux = stackalloc byte[32];
        Span<float> weights = stackalloc float[QK_K];
        Span<float> sw = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        Span<float> scales = stackalloc float[8];
        Q45KWeights(x, qw, weights, sw);
        for (int j = 0; j < 8; j++)
        {
            scales[j] = MakeQkxQuants(nmax, x.Slice(32 * j, 32), weights.Slice(32 * j, 32), L.Slice(32 * j, 32), out mins[j], Laux,
                Q45KWeightedTrials.RMin, Q45KWeightedTrials.RDelta, Q45KWeightedTrials.NStep, false);
        }
        Q45KWeightedFinish(x, b, L, scales, mins, sw, nmax);
    }

    // importance · sqrt(sigma² + x²), or av_x + |x| without importance (av_x = sigma, from the whole super-block); and
    // each sub-block's sum of weights.
    private static void Q45KWeights(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, Span<float> weights, Span<float> sw)
    {
        float sumX2 = 0;
        for (int l = 0; l < QK_K; l++)
            sumX2 += x[l] * x[l];
        float sigma2 = 2 * sumX2 / QK_K;
        float avX = MathF.Sqrt(sigma2);
        for (int j = 0; j < 8; j++)
        {
            for (int l = 0; l < 32; l++)
            {
                float v = x[32 * j + l];
                weights[32 * j + l] = qw.IsEmpty ? avX + MathF.Abs(v) : qw[32 * j + l] * MathF.Sqrt(sigma2 + v * v);
            }
            float sumw = 0;
            for (int l = 0; l < 32; l++)
                sumw += weights[32 * j + l];
            sw[j] = sumw;
        }
    }

    // make_qp_quants for the sub-block scales and mins, then the codes.
    private static void Q45KWeightedFinish(ReadOnlySpan<float> x, KBlock b, ReadOnlySpan<byte> L, ReadOnlySpan<float> scales, ReadOnlySpan<float> mins,
        ReadOnlySpan<float> sw, int nmax)
    {
        Span<byte> Ls = stackalloc byte[8];
        Span<byte> Lm = stackalloc byte[8];
        float dBlock = MakeQpQuants(63, scales, Ls, sw);
        float mBlock = MakeQpQuants(63, mins, Lm, sw);
        for (int j = 0; j < 8; j++)
        {
            b.Sc[j] = Math.Min(63, (int)Ls[j]);
            b.M[j] = Math.Min(63, (int)Lm[j]);
        }
        b.D = F32ToF16(dBlock);
        b.DMin = F32ToF16(mBlock);
        Q45KRequantize(x, b, L, nmax);
    }

    private static void StartQ4KPair(ReadOnlySpan<float> x, KBlock first, KBlock second) => StartQ45KPair(x, first, second, 15, Q4KRefTrials);

    private static void StartQ5KPair(ReadOnlySpan<float> x, KBlock first, KBlock second) => StartQ45KPair(x, first, second, 31, Q5KRefTrials);

    private static void Q45KRequantize(ReadOnlySpan<float> x, KBlock b, ReadOnlySpan<byte> L, int nmax)
    {
        float dAll = F16ToF32(b.D), mAll = F16ToF32(b.DMin);
        for (int j = 0; j < 8; j++)
        {
            float d = dAll * b.Sc[j];
            if (d == 0)
            {
                for (int ii = 0; ii < 32; ii++)
                    b.Q[32 * j + ii] = L[32 * j + ii];
                continue;
            }
            float dm = mAll * b.M[j];
            if (UseVectors)
            {
                RequantizeLanes(x.Slice(32 * j, 32), dm, d, 0, nmax, b.Q.AsSpan(32 * j, 32));
                continue;
            }
            for (int ii = 0; ii < 32; ii++)
                b.Q[32 * j + ii] = Math.Max(0, Math.Min(nmax, NearestInt((x[32 * j + ii] + dm) / d)));
        }
    }

    // quantize_row_q6_K_ref / impl: make_qx_quants per 16 (weights x², or the importance as is), int8 scales.
    private static void StartQ6K(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, KBlock b)
    {
        Span<sbyte> L = stackalloc sbyte[QK_K];
        Span<float> scales = stackalloc float[16];
        float maxScale = 0, maxAbsScale = 0;
        if (UseVectors)
            MakeQxQuantsSubBlocks(32, x, qw, L, scales);
        for (int ib = 0; ib < 16; ib++)
        {
            float scale = UseVectors ? scales[ib] : MakeQxQuants(32, x.Slice(16 * ib, 16), L.Slice(16 * ib, 16), 1, qw.IsEmpty ? default : qw.Slice(16 * ib, 16));
            scales[ib] = scale;
            float absScale = MathF.Abs(scale);
            if (absScale > maxAbsScale)
            {
                maxAbsScale = absScale;
                maxScale = scale;
            }
        }
        if (maxAbsScale < GroupMaxEps)
        {
            // llama.cpp writes an all-zero block.
            b.D = F32ToF16(0f);
            Array.Clear(b.Sc);
            Array.Fill(b.Q, -32);
            return;
        }
        float iscale = -128f / maxScale;
        b.D = F32ToF16(1 / iscale);
        for (int ib = 0; ib < 16; ib++)
            b.Sc[ib] = (sbyte)Math.Min(127, NearestInt(iscale * scales[ib]));
        float dAll = F16ToF32(b.D);
        for (int j = 0; j < 16; j++)
        {
            float d = dAll * b.Sc[j];
            if (d != 0 && UseVectors)
            {
                RequantizeLanes(x.Slice(16 * j, 16), 0, d, -32, 31, b.Q.AsSpan(16 * j, 16));
                continue;
            }
            for (int ii = 0; ii < 16; ii++)
            {
                b.Q[16 * j + ii] = d == 0
                    ? L[16 * j + ii] - 32
                    : Math.Max(-32, Math.Min(31, NearestInt(x[16 * j + ii] / d)));
            }
        }
    }

    // ================= refinement =================

    // Coordinate descent on (sc[j], m[j]) per sub-block and on the half-precision d and dmin, with the codes always
    // re-chosen as the nearest representable value. A step is taken only when it lowers the block's error, so the
    // result is never worse than the starting point. Returns the final error. This is the definition; RefineLanes is
    // its vector form (same decisions, same bytes).
    private static double Refine(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, KBlock b, KBlock scratch)
    {
        int n = f.SubSize;
        Span<int> codes = stackalloc int[32];
        Span<double> subError = stackalloc double[16];
        double total = 0;
        float d = F16ToF32(b.D), dmin = F16ToF32(b.DMin);
        for (int j = 0; j < f.SubBlocks; j++)
        {
            subError[j] = SubBlockError(x.Slice(j * n, n), Sub(w, j, n), d * b.Sc[j], dmin * b.M[j], b.Q.AsSpan(j * n, n));
            total += subError[j];
        }
        Span<ushort> candidates = stackalloc ushort[2 * RefineUlpRadius + 2];
        for (int iteration = 0; iteration < RefineIterations; iteration++)
        {
            bool improved = false;
            d = F16ToF32(b.D);
            dmin = F16ToF32(b.DMin);

            // 1. sub-block scales and mins, each sub-block on its own (they are independent given d and dmin).
            for (int j = 0; j < f.SubBlocks; j++)
            {
                ReadOnlySpan<float> xs = x.Slice(j * n, n);
                ReadOnlySpan<float> ws = Sub(w, j, n);
                int sc0 = b.Sc[j], m0 = b.M[j];
                int mLo = f.MMax == 0 ? 0 : Math.Max(0, m0 - RefineSubRadius), mHi = f.MMax == 0 ? 0 : Math.Min(f.MMax, m0 + RefineSubRadius);
                int scLo = Math.Max(f.ScMin, sc0 - RefineSubRadius), scHi = Math.Min(f.ScMax, sc0 + RefineSubRadius);
                for (int sc = scLo; sc <= scHi; sc++)
                {
                    for (int m = mLo; m <= mHi; m++)
                    {
                        if (sc == b.Sc[j] && m == b.M[j])
                            continue;
                        double e = BestCodes(f, xs, ws, d * sc, dmin * m, codes, subError[j]);
                        if (e < subError[j])
                        {
                            subError[j] = e;
                            b.Sc[j] = sc;
                            b.M[j] = m;
                            codes[..n].CopyTo(b.Q.AsSpan(j * n, n));
                            improved = true;
                        }
                    }
                }
            }
            total = Sum(subError[..f.SubBlocks]);

            // 2. the super-block scale d, then dmin: neighbouring half values and the least-squares fit for the codes.
            for (int which = 0; which < (f.MMax == 0 ? 1 : 2); which++)
            {
                int count = ScaleCandidates(f, x, w, b, which, candidates);
                for (int c = 0; c < count; c++)
                {
                    b.CopyTo(scratch);
                    if (which == 0) scratch.D = candidates[c]; else scratch.DMin = candidates[c];
                    double e = AllBestCodes(f, x, w, scratch, subError, total);
                    if (e < total)
                    {
                        scratch.CopyTo(b);
                        total = e;
                        improved = true;
                    }
                }
                // Re-derive the per-sub-block errors for the accepted state.
                float dd = F16ToF32(b.D), mm = F16ToF32(b.DMin);
                for (int j = 0; j < f.SubBlocks; j++)
                    subError[j] = SubBlockError(x.Slice(j * n, n), Sub(w, j, n), dd * b.Sc[j], mm * b.M[j], b.Q.AsSpan(j * n, n));
                total = Sum(subError[..f.SubBlocks]);
            }
            if (!improved)
                break;
        }
        return total;
    }

    private const int RefineIterations = 3;
    private const int RefineSubRadius = 3;
    private const int RefineUlpRadius = 8;

    // The candidates for d (which 0) or dmin (which 1): the neighbouring finite half values within RefineUlpRadius, then
    // the least-squares fit for the current codes. Returns how many were written.
    private static int ScaleCandidates(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, KBlock b, int which, Span<ushort> candidates)
    {
        ushort current = which == 0 ? b.D : b.DMin;
        int count = 0;
        for (int k = -RefineUlpRadius; k <= RefineUlpRadius; k++)
        {
            int bits = current + k;
            if (k != 0 && bits >= 0 && bits <= 0xFFFF && float.IsFinite(F16ToF32((ushort)bits)))
                candidates[count++] = (ushort)bits;
        }
        if (UseVectors && LeastSquaresHalfLanes(f, x, w, b, which, out ushort fitHalf, out bool exists))
        {
            if (exists)
                candidates[count++] = fitHalf;
            return count;
        }
        float fit = LeastSquaresScale(f, x, w, b, which);
        if (float.IsFinite(fit))
            candidates[count++] = F32ToF16(fit);
        return count;
    }

    private static double BlockError(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, KBlock b)
    {
        int n = f.SubSize;
        float d = F16ToF32(b.D), dmin = F16ToF32(b.DMin);
        double total = 0;
        for (int j = 0; j < f.SubBlocks; j++)
            total += SubBlockError(x.Slice(j * n, n), Sub(w, j, n), d * b.Sc[j], dmin * b.M[j], b.Q.AsSpan(j * n, n));
        return total;
    }

    private static ReadOnlySpan<float> Sub(ReadOnlySpan<float> w, int j, int n) => w.IsEmpty ? default : w.Slice(j * n, n);

    private static double Sum(ReadOnlySpan<double> values)
    {
        double s = 0;
        foreach (double v in values)
            s += v;
        return s;
    }

    // Σ w (x - (step*q - offset))² for given codes, with the decoder's f32 arithmetic.
    private static double SubBlockError(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float step, float offset, ReadOnlySpan<int> q)
    {
        double e = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float v = step * q[i] - offset;
            double diff = (double)x[i] - v;
            e += (w.IsEmpty ? 1.0 : w[i]) * diff * diff;
        }
        return e;
    }

    // The nearest code for each value (rounded quotient, clamped); returns the exact error of the decoded values, or
    // +∞ as soon as it reaches bound (the caller only wants results below it).
    private static double BestCodes(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, float step, float offset, Span<int> codes, double bound)
    {
        double e = 0;
        float inv = step != 0 ? 1 / step : 0;
        int zero = Math.Max(f.QMin, Math.Min(f.QMax, 0));
        for (int i = 0; i < x.Length; i++)
        {
            int q;
            if (step == 0)
            {
                q = zero;
            }
            else
            {
                float t = (x[i] + offset) * inv;
                q = t >= f.QMax ? f.QMax : t <= f.QMin ? f.QMin : NearestInt(t);
            }
            codes[i] = q;
            e += (w.IsEmpty ? 1.0 : w[i]) * Sq((double)x[i] - (step * q - offset));
            if (e >= bound)
                return double.PositiveInfinity;
        }
        return e;
    }

    private static double Sq(double v) => v * v;

    private static double AllBestCodes(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, KBlock b, Span<double> subError, double bound)
    {
        int n = f.SubSize;
        float d = F16ToF32(b.D), dmin = F16ToF32(b.DMin);
        double total = 0;
        for (int j = 0; j < f.SubBlocks; j++)
        {
            subError[j] = BestCodes(f, x.Slice(j * n, n), Sub(w, j, n), d * b.Sc[j], dmin * b.M[j], b.Q.AsSpan(j * n, n), bound - total);
            total += subError[j];
            if (total >= bound)
                return double.PositiveInfinity;
        }
        return total;
    }

    // Weighted least-squares value of d (which 0) or dmin (which 1) for the current codes, the other one fixed:
    // x ≈ d * a - dmin * c with a = sc[j] * q, c = m[j].
    private static float LeastSquaresScale(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, KBlock b, int which)
    {
        int n = f.SubSize;
        double d = F16ToF32(b.D), dmin = F16ToF32(b.DMin);
        double num = 0, den = 0;
        for (int j = 0; j < f.SubBlocks; j++)
        {
            double sc = b.Sc[j], c = b.M[j];
            for (int i = j * n; i < (j + 1) * n; i++)
            {
                double wi = w.IsEmpty ? 1.0 : w[i];
                double a = sc * b.Q[i];
                if (which == 0)
                {
                    num += wi * a * (x[i] + dmin * c);
                    den += wi * a * a;
                }
                else
                {
                    num += wi * c * (d * a - x[i]);
                    den += wi * c * c;
                }
            }
        }
        return den > 0 ? (float)(num / den) : float.NaN;
    }

    // ================= packing into ggml's layouts =================

    private static void PackQ2K(KBlock k, Span<byte> destination)
    {
        ref BlockQ2_K b = ref MemoryMarshal.AsRef<BlockQ2_K>(destination);
        for (int j = 0; j < 16; j++)
            b.Scales[j] = (byte)(k.Sc[j] | (k.M[j] << 4));
        b.D = k.D;
        b.DMin = k.DMin;
        Pack2Bit(k.Q, 0, b.Qs);
    }

    // 2 low bits of (q + bias): byte l of each 32-byte group holds values l, l+32, l+64, l+96 of its 128.
    private static void Pack2Bit(ReadOnlySpan<int> q, int bias, Span<byte> qs)
    {
        for (int j = 0; j < QK_K; j += 128)
        {
            for (int l = 0; l < 32; l++)
            {
                qs[j / 4 + l] = (byte)(((q[j + l] + bias) & 3) | (((q[j + l + 32] + bias) & 3) << 2)
                    | (((q[j + l + 64] + bias) & 3) << 4) | (((q[j + l + 96] + bias) & 3) << 6));
            }
        }
    }

    private static void PackQ3K(KBlock k, Span<byte> destination)
    {
        ref BlockQ3_K b = ref MemoryMarshal.AsRef<BlockQ3_K>(destination);
        Span<byte> scales = b.Scales;
        scales.Clear();
        for (int j = 0; j < 16; j++)
        {
            int l = k.Sc[j] + 32;
            if (j < 8)
                scales[j] = (byte)(l & 0xF);
            else
                scales[j - 8] |= (byte)((l & 0xF) << 4);
            l >>= 4;
            scales[j % 4 + 8] |= (byte)(l << (2 * (j / 4)));
        }
        b.D = k.D;
        Span<byte> hmask = b.HMask;
        // Code q is stored as q + 4 in [0, 8): bit 2 (q ≥ 0) in hmask (bit j/32 of byte j%32), the low 2 bits in qs.
        for (int l = 0; l < 32; l++)
        {
            int bits = 0;
            for (int i = 0; i < 8; i++)
                bits |= (k.Q[32 * i + l] >= 0 ? 1 : 0) << i;
            hmask[l] = (byte)bits;
        }
        Pack2Bit(k.Q, 4, b.Qs);
    }

    private static void PackQ45KScales(KBlock k, Span<byte> scales)
    {
        scales.Clear();
        for (int j = 0; j < 8; j++)
        {
            int ls = k.Sc[j], lm = k.M[j];
            if (j < 4)
            {
                scales[j] = (byte)ls;
                scales[j + 4] = (byte)lm;
            }
            else
            {
                scales[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                scales[j - 4] |= (byte)((ls >> 4) << 6);
                scales[j] |= (byte)((lm >> 4) << 6);
            }
        }
    }

    private static void PackQ4K(KBlock k, Span<byte> destination)
    {
        ref BlockQ4_K b = ref MemoryMarshal.AsRef<BlockQ4_K>(destination);
        b.D = k.D;
        b.DMin = k.DMin;
        PackQ45KScales(k, b.Scales);
        Span<byte> qs = b.Qs;
        for (int j = 0, o = 0; j < QK_K; j += 64, o += 32)
        {
            for (int l = 0; l < 32; l++)
                qs[o + l] = (byte)(k.Q[j + l] | (k.Q[j + l + 32] << 4));
        }
    }

    private static void PackQ5K(KBlock k, Span<byte> destination)
    {
        ref BlockQ5_K b = ref MemoryMarshal.AsRef<BlockQ5_K>(destination);
        b.D = k.D;
        b.DMin = k.DMin;
        PackQ45KScales(k, b.Scales);
        Span<byte> qh = b.Qh;
        Span<byte> ql = b.Qs;
        qh.Clear();
        int m1 = 1, m2 = 2;
        for (int n = 0, o = 0; n < QK_K; n += 64, o += 32)
        {
            for (int j = 0; j < 32; j++)
            {
                int l1 = k.Q[n + j];
                if (l1 > 15) { l1 -= 16; qh[j] |= (byte)m1; }
                int l2 = k.Q[n + j + 32];
                if (l2 > 15) { l2 -= 16; qh[j] |= (byte)m2; }
                ql[o + j] = (byte)(l1 | (l2 << 4));
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }

    private static void PackQ6K(KBlock k, Span<byte> destination)
    {
        ref BlockQ6_K b = ref MemoryMarshal.AsRef<BlockQ6_K>(destination);
        Span<byte> ql = b.Ql;
        Span<byte> qh = b.Qh;
        for (int j = 0; j < 16; j++)
            b.Scales[j] = (sbyte)k.Sc[j];
        b.D = k.D;
        for (int j = 0, lo = 0, hi = 0; j < QK_K; j += 128, lo += 64, hi += 32)
        {
            for (int l = 0; l < 32; l++)
            {
                int q1 = k.Q[j + l] + 32, q2 = k.Q[j + l + 32] + 32, q3 = k.Q[j + l + 64] + 32, q4 = k.Q[j + l + 96] + 32;
                ql[lo + l] = (byte)((q1 & 0xF) | ((q3 & 0xF) << 4));
                ql[lo + l + 32] = (byte)((q2 & 0xF) | ((q4 & 0xF) << 4));
                qh[hi + l] = (byte)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

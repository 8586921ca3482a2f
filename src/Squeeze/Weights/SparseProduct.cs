using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// The product of a <see cref="SparseRowsWeight"/> that multiplies only its kept weights. A chunk of rows has its kept
/// values decoded to f32 and its kept columns listed; then
/// <list type="bullet">
/// <item>a prompt batch (≥ <see cref="BatchTokens"/> tokens) is first transposed to xᵀ [columns, tokens], and each row
/// accumulates <c>v[k] · xᵀ[col[k], :]</c> over its kept weights, 8 or 16 tokens per vector: no gathers, and every output is
/// summed in k order exactly as <see cref="GatherDotScalar"/> sums it;</item>
/// <item>a few tokens take gathered dot products <c>Σ_k v[k] · x[col[k]]</c> (<see cref="GatherDot"/>; AVX2 gathers
/// eight at a time), or the weight's own fused dot (<see cref="NmSparseWeight"/>'s 2:4 over f16 values, which decodes
/// nothing).</item>
/// </list>
/// Parts are row ranges and each output is computed by one part in a fixed order, so results do not depend on the
/// thread count.
/// </summary>
internal static unsafe class SparseProduct
{
    private const int ChunkRows = 8;

    /// <summary>From this many tokens on, the transposed (batch) product.</summary>
    public const int BatchTokens = 8;

    public static void Multiply(SparseRowsWeight weight, ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        if (tokens == 0)
            return;
        int rows = weight.Rows, columns = weight.Columns, kept = weight.KeptPerRow;
        int chunks = (rows + ChunkRows - 1) / ChunkRows;
        int parts = context.Threads == 1 ? 1 : Math.Min(chunks, 4 * context.Threads);
        int stride = (kept + 15) & ~15;
        bool batch = tokens >= BatchTokens;
        int paddedTokens = batch ? (tokens + 7) & ~7 : 0;
        long transposedBytes = (long)columns * paddedTokens * sizeof(float);
        long partBytes = 2L * ChunkRows * stride * sizeof(float); // values (f32) then columns (int)
        byte* scratch = context.Scratch(transposedBytes + parts * partBytes);
        var job = new Job
        {
            Weight = weight,
            Transposed = batch ? (float*)scratch : null,
            PaddedTokens = paddedTokens,
            Scratch = scratch + transposedBytes,
            PartBytes = partBytes,
            Stride = stride,
            Chunks = chunks,
            Tokens = tokens,
            Fused = !batch && weight.HasFusedDot,
        };
        fixed (float* px = x)
        fixed (float* py = y)
        {
            if (batch)
                Transpose(px, tokens, columns, paddedTokens, job.Transposed);
            job.X = px;
            job.Y = py;
            context.Run(job, parts);
        }
    }

    /// <summary>Σ_k values[k] · x[columns[k]], k in [0, count), summed in k order: the scalar reference.</summary>
    public static float GatherDotScalar(float* values, int* columns, float* x, int count)
    {
        float sum = 0;
        for (int k = 0; k < count; k++)
            sum += values[k] * x[columns[k]];
        return sum;
    }

    /// <summary>Σ_k values[k] · x[columns[k]], eight lanes gathered at a time where AVX2 is available (the same value as
    /// <see cref="GatherDotScalar"/> up to rounding).</summary>
    public static float GatherDot(float* values, int* columns, float* x, int count)
    {
        if (!Avx2.IsSupported || count < 16)
            return GatherDotScalar(values, columns, x, count);
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        int k = 0;
        for (; k + 16 <= count; k += 16)
        {
            var g0 = Avx2.GatherVector256(x, Avx.LoadVector256(columns + k), 4);
            var g1 = Avx2.GatherVector256(x, Avx.LoadVector256(columns + k + 8), 4);
            acc0 += Avx.LoadVector256(values + k) * g0;
            acc1 += Avx.LoadVector256(values + k + 8) * g1;
        }
        float sum = Vector256.Sum(acc0 + acc1);
        for (; k < count; k++)
            sum += values[k] * x[columns[k]];
        return sum;
    }

    /// <summary>y[t, r] = Σ_k values[k] · xᵀ[columns[k], t] for t in [0, tokens): eight tokens per vector, each lane summed
    /// in k order (a multiply then an add, as <see cref="GatherDotScalar"/>), so the outputs equal the scalar reference's.</summary>
    public static void RowTimesTransposed(float* values, int* columns, int count, float* transposed, int paddedTokens, int tokens, float* y, int rows)
    {
        Span<float> lanes = stackalloc float[64];
        int t0 = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            // Sixty-four tokens per tile in four 512-bit accumulators (the same per-lane order).
            for (; t0 + 64 <= paddedTokens; t0 += 64)
            {
                var b0 = Vector512<float>.Zero;
                var b1 = Vector512<float>.Zero;
                var b2 = Vector512<float>.Zero;
                var b3 = Vector512<float>.Zero;
                float* column0 = transposed + t0;
                for (int k = 0; k < count; k++)
                {
                    var v = Vector512.Create(values[k]);
                    float* p = column0 + (long)columns[k] * paddedTokens;
                    b0 += v * Vector512.Load(p);
                    b1 += v * Vector512.Load(p + 16);
                    b2 += v * Vector512.Load(p + 32);
                    b3 += v * Vector512.Load(p + 48);
                }
                b0.CopyTo(lanes);
                b1.CopyTo(lanes[16..]);
                b2.CopyTo(lanes[32..]);
                b3.CopyTo(lanes[48..]);
                int end = Math.Min(tokens - t0, 64);
                for (int i = 0; i < end; i++)
                    y[(long)(t0 + i) * rows] = lanes[i];
            }
        }
        for (; t0 < paddedTokens; t0 += 32)
        {
            int vectors = Math.Min(4, (paddedTokens - t0) / 8);
            var a0 = Vector256<float>.Zero;
            var a1 = Vector256<float>.Zero;
            var a2 = Vector256<float>.Zero;
            var a3 = Vector256<float>.Zero;
            float* column0 = transposed + t0;
            if (vectors == 4)
            {
                for (int k = 0; k < count; k++)
                {
                    var v = Vector256.Create(values[k]);
                    float* p = column0 + (long)columns[k] * paddedTokens;
                    a0 += v * Vector256.Load(p);
                    a1 += v * Vector256.Load(p + 8);
                    a2 += v * Vector256.Load(p + 16);
                    a3 += v * Vector256.Load(p + 24);
                }
            }
            else
            {
                for (int k = 0; k < count; k++)
                {
                    var v = Vector256.Create(values[k]);
                    float* p = column0 + (long)columns[k] * paddedTokens;
                    a0 += v * Vector256.Load(p);
                    if (vectors > 1)
                        a1 += v * Vector256.Load(p + 8);
                    if (vectors > 2)
                        a2 += v * Vector256.Load(p + 16);
                }
            }
            a0.CopyTo(lanes);
            a1.CopyTo(lanes[8..]);
            a2.CopyTo(lanes[16..]);
            a3.CopyTo(lanes[24..]);
            int end = Math.Min(tokens - t0, 32);
            for (int i = 0; i < end; i++)
                y[(long)(t0 + i) * rows] = lanes[i];
        }
    }

    // xᵀ[c, t] = x[t, c], tokens padded with zeros to paddedTokens.
    private static void Transpose(float* x, int tokens, int columns, int paddedTokens, float* transposed)
    {
        for (int c = 0; c < columns; c++)
        {
            float* row = transposed + (long)c * paddedTokens;
            for (int t = 0; t < tokens; t++)
                row[t] = x[(long)t * columns + c];
            for (int t = tokens; t < paddedTokens; t++)
                row[t] = 0;
        }
    }

    private sealed class Job : IParallelJob
    {
        public required SparseRowsWeight Weight;
        public required float* Transposed; // [columns, PaddedTokens], or null for the gathered product
        public required int PaddedTokens;
        public required byte* Scratch; // [parts, PartBytes]
        public required long PartBytes;
        public required int Stride, Chunks, Tokens;
        public required bool Fused;
        public float* X, Y;

        public void Run(int part, int parts)
        {
            var weight = Weight;
            int rows = weight.Rows, columns = weight.Columns, kept = weight.KeptPerRow;
            float* values = (float*)(Scratch + part * PartBytes);
            int* keptColumns = (int*)(values + ChunkRows * Stride);
            int c0 = (int)((long)Chunks * part / parts), c1 = (int)((long)Chunks * (part + 1) / parts);
            for (int chunk = c0; chunk < c1; chunk++)
            {
                int r0 = chunk * ChunkRows, r1 = Math.Min(rows, r0 + ChunkRows);
                if (Fused)
                {
                    for (int t = 0; t < Tokens; t++)
                    {
                        float* xt = X + (long)t * columns;
                        float* yt = Y + (long)t * rows;
                        for (int r = r0; r < r1; r++)
                            yt[r] = weight.FusedDot(r, xt);
                    }
                    continue;
                }
                for (int r = r0; r < r1; r++)
                {
                    weight.Values.DecodeRow(r, new Span<float>(values + (r - r0) * Stride, kept));
                    weight.KeptColumns(r, new Span<int>(keptColumns + (r - r0) * Stride, kept));
                }
                if (Transposed != null)
                {
                    for (int r = r0; r < r1; r++)
                        RowTimesTransposed(values + (r - r0) * Stride, keptColumns + (r - r0) * Stride, kept, Transposed, PaddedTokens, Tokens, Y + r, rows);
                    continue;
                }
                for (int t = 0; t < Tokens; t++)
                {
                    float* xt = X + (long)t * columns;
                    float* yt = Y + (long)t * rows;
                    for (int r = r0; r < r1; r++)
                        yt[r] = GatherDot(values + (r - r0) * Stride, keptColumns + (r - r0) * Stride, xt, kept);
                }
            }
        }
    }
}

using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// The product of a <see cref="SparseRowsWeight"/> that multiplies only its kept weights: a chunk of rows has its kept
/// values decoded to f32 and its kept columns listed, then every token's output for those rows is a gathered dot product
/// <c>Σ_k v[k] · x[col[k]]</c> (<see cref="GatherDot"/>; AVX2 gathers eight at a time). Parts are row ranges and each output
/// is one gathered dot, so results do not depend on the thread count.
/// </summary>
internal static unsafe class SparseProduct
{
    private const int ChunkRows = 8;

    public static void Multiply(SparseRowsWeight weight, ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        if (tokens == 0)
            return;
        int rows = weight.Rows, kept = weight.KeptPerRow;
        int chunks = (rows + ChunkRows - 1) / ChunkRows;
        int parts = context.Threads == 1 ? 1 : Math.Min(chunks, 4 * context.Threads);
        int stride = (kept + 15) & ~15;
        long partBytes = 2L * ChunkRows * stride * sizeof(float); // values (f32) then columns (int)
        var job = new Job
        {
            Weight = weight,
            Scratch = context.Scratch(parts * partBytes),
            PartBytes = partBytes,
            Stride = stride,
            Chunks = chunks,
            Tokens = tokens,
        };
        fixed (float* px = x)
        fixed (float* py = y)
        {
            job.X = px;
            job.Y = py;
            context.Run(job, parts);
        }
    }

    /// <summary>Σ_k values[k] · x[columns[k]], k in [0, count): the scalar reference.</summary>
    public static float GatherDotScalar(float* values, int* columns, float* x, int count)
    {
        float sum = 0;
        for (int k = 0; k < count; k++)
            sum += values[k] * x[columns[k]];
        return sum;
    }

    /// <summary>Σ_k values[k] · x[columns[k]], eight lanes gathered at a time where AVX2 is available (same value as
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
            acc0 = Fma.IsSupported ? Fma.MultiplyAdd(Avx.LoadVector256(values + k), g0, acc0) : acc0 + Avx.LoadVector256(values + k) * g0;
            acc1 = Fma.IsSupported ? Fma.MultiplyAdd(Avx.LoadVector256(values + k + 8), g1, acc1) : acc1 + Avx.LoadVector256(values + k + 8) * g1;
        }
        float sum = Vector256.Sum(acc0 + acc1);
        for (; k < count; k++)
            sum += values[k] * x[columns[k]];
        return sum;
    }

    private sealed class Job : IParallelJob
    {
        public required SparseRowsWeight Weight;
        public required byte* Scratch; // [parts, PartBytes]
        public required long PartBytes;
        public required int Stride, Chunks, Tokens;
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
                for (int r = r0; r < r1; r++)
                {
                    weight.Values.DecodeRow(r, new Span<float>(values + (r - r0) * Stride, kept));
                    weight.KeptColumns(r, new Span<int>(keptColumns + (r - r0) * Stride, kept));
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

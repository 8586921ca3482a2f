using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// The product every representation has: rows are decoded (<see cref="LinearWeight.DecodeRowFast"/>, the same bits as
/// <see cref="LinearWeight.DecodeRow"/>) a chunk at a time into
/// per-part scratch and multiplied with every token by f32 dot products, so each decoded row serves the whole batch;
/// four tokens at a time share each load of a decoded row (the four-token kernel, bit for bit four one-token dots).
/// Parts are row ranges; each output is one dot call whatever the split, so results do not depend on the thread count,
/// and in the deterministic mode the dots are <see cref="DeterministicMath"/>'s.
/// </summary>
internal static unsafe class DecodedProduct
{
    private const int ChunkRows = 8;

    public static void Multiply(LinearWeight weight, ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        if (tokens == 0)
            return;
        int rows = weight.Rows, columns = weight.Columns;
        int chunks = (rows + ChunkRows - 1) / ChunkRows;
        int parts = context.Threads == 1 ? 1 : Math.Min(chunks, 4 * context.Threads);
        long chunkFloats = (long)ChunkRows * ((columns + 15) & ~15) + weight.DecodeScratchFloats;
        var job = context.Job<Job>();
        job.Weight = weight;
        job.Dot = context.Deterministic ? VecDot.ForDeterministic(GgmlType.F32) : VecDot.For(GgmlType.F32);
        job.Dot4 = tokens < 4 ? null : context.Deterministic ? VecDot.For4Deterministic(GgmlType.F32) : VecDot.For4(GgmlType.F32, VecDot.Best);
        job.Scratch = (float*)context.Scratch(parts * chunkFloats * sizeof(float));
        job.ChunkFloats = chunkFloats;
        job.Chunks = chunks;
        job.Tokens = tokens;
        fixed (float* px = x)
        fixed (float* py = y)
        {
            job.X = px;
            job.Y = py;
            context.Run(job, parts);
        }
        job.Weight = null;
    }

    internal sealed class Job : IParallelJob
    {
        public LinearWeight? Weight;
        public delegate*<byte*, byte*, int, float> Dot;
        public delegate*<byte*, byte*, long, int, float*, long, void> Dot4; // null below four tokens or where none exists
        public float* Scratch; // [parts, ChunkFloats]
        public long ChunkFloats;
        public int Chunks, Tokens;
        public float* X, Y;

        public void Run(int part, int parts)
        {
            var weight = Weight!;
            int rows = weight.Rows, columns = weight.Columns;
            int stride = (columns + 15) & ~15;
            float* decoded = Scratch + part * ChunkFloats;
            float* decodeScratch = decoded + (long)ChunkRows * stride;
            int c0 = (int)((long)Chunks * part / parts), c1 = (int)((long)Chunks * (part + 1) / parts);
            for (int chunk = c0; chunk < c1; chunk++)
            {
                int r0 = chunk * ChunkRows, r1 = Math.Min(rows, r0 + ChunkRows);
                for (int r = r0; r < r1; r++)
                    weight.DecodeRowFast(r, decoded + (r - r0) * stride, decodeScratch);
                int t = 0;
                if (Dot4 != null)
                {
                    for (; t + 4 <= Tokens; t += 4)
                    {
                        byte* xt = (byte*)(X + (long)t * columns);
                        for (int r = r0; r < r1; r++)
                            Dot4((byte*)(decoded + (r - r0) * stride), xt, (long)columns * sizeof(float), columns, Y + (long)t * rows + r, rows);
                    }
                }
                for (; t < Tokens; t++)
                {
                    byte* xt = (byte*)(X + (long)t * columns);
                    float* yt = Y + (long)t * rows;
                    for (int r = r0; r < r1; r++)
                        yt[r] = Dot((byte*)(decoded + (r - r0) * stride), xt, columns);
                }
            }
        }
    }
}

using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// The fused product of a <see cref="CodebookWeight"/> for a few tokens outside the deterministic mode: each code looked
/// up straight into the dot product (<see cref="CodebookDot"/>), rows in contiguous ranges per part, so results do not
/// depend on the thread count. From <see cref="MaxTokens"/> tokens on, and in the deterministic mode, the decoded
/// product (each row decoded once, then dotted with every token) is quicker or required.
/// </summary>
internal static unsafe class CodebookProduct
{
    /// <summary>Fewer tokens than this run fused: beyond, decoding a row once serves every token more cheaply.</summary>
    public const int MaxTokens = 4;

    // Below this many code bytes × tokens, waking a worker costs more than it saves.
    private const long MinBytesPerPart = 16 * 1024;
    private const int PartsPerThread = 4;
    // Parts start at multiples of this many rows (64 bytes of f32 output), so threads do not share cache lines of y.
    private const int RowAlign = 16;

    /// <summary>True when <paramref name="weight"/>'s product with <paramref name="tokens"/> tokens runs fused in <paramref name="context"/>.</summary>
    public static bool Runs(CodebookWeight weight, int tokens, ComputeContext context)
        => !context.Deterministic && tokens < MaxTokens && CodebookDot.Supports(weight.Bits, weight.Group);

    /// <summary><c>y[t, r] = Σ_c W[r, c] · x[t, c]</c>.</summary>
    public static void Multiply(CodebookWeight weight, ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        if (tokens == 0)
            return;
        int rows = weight.Rows;
        long work = (long)rows * weight.RowBytes * tokens;
        int parts = work < MinBytesPerPart || context.Threads == 1 ? 1 : Math.Min(PartsPerThread * context.Threads, Math.Max(1, rows / RowAlign));
        fixed (float* px = x)
        fixed (float* py = y)
        fixed (byte* codes = weight.PackedCodes)
        fixed (ushort* tables = weight.Table)
        {
            var job = context.Job<Job>();
            job.Codes = codes;
            job.CodesEnd = codes + weight.PackedCodes.Length;
            job.Tables = tables;
            job.RowBytes = weight.RowBytes;
            job.Bits = weight.Bits;
            job.Group = weight.Group;
            job.Rows = rows;
            job.Columns = weight.Columns;
            job.Tokens = tokens;
            job.X = px;
            job.Y = py;
            context.Run(job, parts);
        }
    }

    /// <summary>One product split by rows: each part owns a contiguous range of output rows.</summary>
    private sealed class Job : IParallelJob
    {
        public byte* Codes, CodesEnd;  // [Rows, RowBytes]
        public ushort* Tables;         // [Rows, Columns / Group, 2^Bits] f16
        public long RowBytes;
        public int Bits, Group, Rows, Columns, Tokens;
        public float* X;               // [Tokens, Columns]
        public float* Y;               // [Tokens, Rows]

        public void Run(int part, int parts)
        {
            int r0 = Boundary(part, parts), r1 = Boundary(part + 1, parts);
            for (int t = 0; t < Tokens; t++)
                CodebookDot.RowsAvx512(Codes, CodesEnd, RowBytes, Tables, Bits, Group, Columns, r0, r1, X + (long)t * Columns, Y + (long)t * Rows);
        }

        private int Boundary(int part, int parts)
        {
            if (part >= parts)
                return Rows;
            int r = (int)((long)Rows * part / parts);
            return Math.Min(Rows, (r + RowAlign - 1) / RowAlign * RowAlign);
        }
    }
}

using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// The fused product of a <see cref="UniformWeight"/> outside the deterministic mode, for fewer than
/// <see cref="MaxTokens"/> tokens (decoding) or for any number when its rows have at least <see cref="MinPromptColumns"/>
/// values: activations quantized once per call
/// (<see cref="UniformDot.PrepareActivations"/>, split by tokens across threads), then rows in contiguous ranges per part,
/// in L2-sized blocks, each block through every token, each output computed by one kernel whatever the split, so results
/// do not depend on the thread count. The deterministic mode keeps <see cref="DecodedProduct"/> (its reference order).
/// </summary>
internal static unsafe class UniformProduct
{
    // Below this many code bytes × tokens, waking a worker costs more than it saves.
    private const long MinBytesPerPart = 16 * 1024;
    private const int PartsPerThread = 4;
    // Parts start at multiples of this many rows (64 bytes of f32 output), so threads do not share cache lines of y.
    private const int RowAlign = 16;
    // Weight rows run through every token before the next rows start: a block this large stays in the L2 cache.
    private const long RowBlockBytes = 128 * 1024;
    // Below this many activation values, quantizing them on one thread is quicker than waking another.
    private const long MinValuesPerQuantizePart = 8 * 1024;

    /// <summary>Fewer tokens than this run fused whatever the row width: from here on decoding a row once and dotting it
    /// in f32 with every token is as quick on rows of a few hundred values (stories15M's 288: fused 4 µs per token for 288
    /// rows, decoded 34 µs once plus 2 µs per token), and its prompts keep the speed they had.</summary>
    public const int MaxTokens = 16;

    /// <summary>Rows of at least this many values run fused for any number of tokens: on wide rows the decoded product's
    /// f32 dots read four times the activation bytes per token and lose to unpacking the codes again for each token
    /// (3-bit codes in groups of 256, 64 tokens, one thread: the fused product took 0.63–0.67 of the decoded product's
    /// CPU time at 512, 1,024, 2,048 and 5,632 values; docs/BENCHMARKS.md). Below it (stories15M's 288 and 768) the decoded
    /// product keeps the prompts.</summary>
    public const int MinPromptColumns = 1024;

    /// <summary>True when <paramref name="weight"/>'s product with <paramref name="tokens"/> tokens runs fused in
    /// <paramref name="context"/>.</summary>
    public static bool Runs(UniformWeight weight, int tokens, ComputeContext context)
        => !context.Deterministic && (tokens < MaxTokens || weight.Columns >= MinPromptColumns) && UniformDot.Supports(weight.UniformScheme.Group, weight.Columns);

    /// <summary><c>y[t, r] = Σ_c W[r, c] · x[t, c]</c> with x quantized per block of 32 to 8 bits.</summary>
    public static void Multiply(UniformWeight weight, ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        if (tokens == 0)
            return;
        int rows = weight.Rows, columns = weight.Columns;
        var scheme = weight.UniformScheme;
        long codeRowBytes = scheme.RowBytes(columns);
        long xRowBytes = UniformDot.ActivationRowBytes(columns, scheme.Group);
        long work = rows * codeRowBytes * tokens;
        int parts = work < MinBytesPerPart || context.Threads == 1 ? 1 : Math.Min(PartsPerThread * context.Threads, Math.Max(1, rows / RowAlign));
        int quantizeParts = context.Threads == 1 || (long)tokens * columns < MinValuesPerQuantizePart ? 1 : Math.Min(tokens, context.Threads);
        long prepareBytes = (UniformDot.PrepareScratchBytes(columns) + 63) / 64 * 64;
        byte* scratch = context.Scratch(tokens * xRowBytes + quantizeParts * prepareBytes);
        fixed (float* px = x)
        fixed (float* py = y)
        fixed (byte* codes = weight.Codes)
        fixed (ushort* scales = weight.Scales)
        fixed (ushort* mins = weight.Mins)
        {
            var quantize = context.Job<QuantizeJob>();
            quantize.X = px;
            quantize.Columns = columns;
            quantize.Group = scheme.Group;
            quantize.Tokens = tokens;
            quantize.Scratch = scratch + tokens * xRowBytes;
            quantize.ScratchBytes = prepareBytes;
            quantize.Destination = scratch;
            context.Run(quantize, quantizeParts);

            var job = context.Job<Job>();
            job.Weight = new UniformRows(codes, codes + weight.Codes.Length, codeRowBytes, scales, scheme.Symmetric ? null : mins, scheme.Bits, scheme.Group, columns);
            job.Dot = UniformDot.For(scheme.Bits);
            job.Rows = rows;
            job.X = scratch;
            job.XRowBytes = xRowBytes;
            job.Tokens = tokens;
            job.Y = py;
            job.BlockRows = (int)Math.Max(1, RowBlockBytes / codeRowBytes);
            context.Run(job, parts);
        }
    }

    /// <summary>Activation rows split by tokens: part i prepares rows [tokens·i/parts, tokens·(i+1)/parts) with its own scratch.</summary>
    private sealed class QuantizeJob : IParallelJob
    {
        public float* X;            // [Tokens, Columns]
        public int Columns, Group, Tokens;
        public byte* Scratch;       // [parts, ScratchBytes]
        public long ScratchBytes;
        public byte* Destination;   // [Tokens, UniformDot.ActivationRowBytes(Columns, Group)]

        public void Run(int part, int parts)
        {
            int t0 = (int)((long)Tokens * part / parts), t1 = (int)((long)Tokens * (part + 1) / parts);
            UniformDot.PrepareActivations(X + (long)t0 * Columns, Columns, Group, t1 - t0, Scratch + part * ScratchBytes,
                Destination + t0 * UniformDot.ActivationRowBytes(Columns, Group));
        }
    }

    /// <summary>One product split by rows: each part owns a contiguous range of output rows.</summary>
    private sealed class Job : IParallelJob
    {
        public UniformRows Weight;
        public delegate*<in UniformRows, int, int, byte*, float*, void> Dot;
        public int Rows, Tokens, BlockRows;
        public byte* X;           // [Tokens, XRowBytes] prepared activations
        public long XRowBytes;
        public float* Y;          // [Tokens, Rows]

        public void Run(int part, int parts)
        {
            int r0 = Boundary(part, parts), r1 = Boundary(part + 1, parts);
            var dot = Dot;
            for (int b0 = r0; b0 < r1; b0 += BlockRows)
            {
                int b1 = Math.Min(r1, b0 + BlockRows);
                for (int t = 0; t < Tokens; t++)
                    dot(in Weight, b0, b1, X + t * XRowBytes, Y + (long)t * Rows);
            }
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

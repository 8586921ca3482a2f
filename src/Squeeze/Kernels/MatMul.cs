using Squeeze.Tensors;

namespace Squeeze.Kernels;

/// <summary>
/// Products of a weight matrix in any <see cref="GgmlType"/> with f32 activations, computed as ggml's CPU backend does
/// (activations converted once per call to the weight type's vec_dot type, then one <see cref="VecDot"/> per output).
/// By far the most time of a forward pass is spent here.
/// </summary>
public static unsafe class MatMul
{
    /// <summary><c>y[t, r] = Σ_c weight[r, c] · x[t, c]</c> for every token t: <paramref name="x"/> is
    /// [tokens, weight.Columns], <paramref name="y"/> is [tokens, weight.Rows], both row-major.</summary>
    public static void Multiply(Tensor weight, ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentNullException.ThrowIfNull(context);
        if (weight.Rows > int.MaxValue || weight.Columns > int.MaxValue)
            throw new ArgumentException($"{weight} is too large for one product", nameof(weight));
        int rows = (int)weight.Rows, columns = (int)weight.Columns;
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (x.Length < (long)tokens * columns)
            throw new ArgumentException($"x holds {x.Length} values; {tokens} tokens of {columns} need {(long)tokens * columns}", nameof(x));
        if (y.Length < (long)tokens * rows)
            throw new ArgumentException($"y holds {y.Length} values; {tokens} tokens of {rows} need {(long)tokens * rows}", nameof(y));
        fixed (float* px = x)
        fixed (float* py = y)
            Multiply(weight.Type, weight.Data, px, rows, columns, tokens, rows, context, py);
    }

    /// <summary>
    /// <c>y[t · yStride + r] = Σ_c w[r, c] · x[t · columns + c]</c> for t &lt; tokens, r &lt; rows: <paramref name="weight"/>
    /// points at <paramref name="rows"/> contiguous encoded rows of <paramref name="columns"/> values in
    /// <paramref name="type"/>; <paramref name="yStride"/> ≥ rows lets the output rows sit inside a wider buffer.
    /// </summary>
    public static void Multiply(GgmlType type, byte* weight, float* x, int rows, int columns, int tokens, int yStride, ComputeContext context, float* y)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(yStride, rows);
        if (rows == 0 || tokens == 0)
            return;
        long rowBytes = GgmlTypes.RowBytes(type, columns);
        long xRowBytes = VecDot.ActivationRowBytes(type, columns);
        // Each output is computed by one dot call whatever the split, so results do not depend on the thread count.
        long work = rows * rowBytes * tokens;
        // Several parts per thread, claimed dynamically: a thread the OS schedules late leaves its parts to the others.
        int parts = work < MinBytesPerPart || context.Threads == 1 ? 1 : (int)Math.Min(PartsPerThread * context.Threads, Math.Max(1, rows / RowAlign));

        Job job = context.Job<Job>();
        SimdLevel level = VecDot.Best;
        bool interleave = !context.Deterministic && tokens >= VecDot.MinStripeTokens(type) && rows >= VecDot.StripeRowsOf(type) && VecDot.Interleaves(type, level);
        bool repack = !context.Deterministic && tokens >= 4 && VecDot.RepacksToQ8_0(type, level);
        GgmlType kernelType = repack ? GgmlType.Q8_0 : type; // repacked rows run the Q8_0 kernels (bit for bit the same)
        job.Type = type;
        if (context.Deterministic)
        {
            job.Dot = VecDot.ForDeterministic(type);
            job.Dot4 = tokens >= 4 ? VecDot.For4Deterministic(type) : null;
            job.Dot8 = tokens >= 8 ? VecDot.For8Deterministic(type) : null;
        }
        else
        {
            job.Dot = VecDot.For(kernelType, level);
            job.Dot4 = tokens >= 4 ? VecDot.For4(kernelType, level) : null;
            job.Dot8 = null;
        }
        job.Rows4 = tokens == 1 && !context.Deterministic ? VecDot.ForRows4(type, level) : null;

        // scratch: [tokens, xRowBytes] converted activations (none for F32), then per part one weight row repacked to
        // Q8_0 and one packed stripe
        bool convert = VecDot.ActivationType(type) != GgmlType.F32;
        long xBytes = convert ? (xRowBytes * tokens + 63) / 64 * 64 : 0;
        job.RowScratchBytes = repack ? (GgmlTypes.RowBytes(GgmlType.Q8_0, columns) + 63) / 64 * 64 : 0;
        job.StripeScratchBytes = interleave ? (VecDot.StripeBytes(type, columns) + 63) / 64 * 64 : 0;
        long partBytes = job.RowScratchBytes + job.StripeScratchBytes;
        long scratchBytes = xBytes + parts * partBytes;
        byte* scratch = scratchBytes > 0 ? context.Scratch(scratchBytes) : null;
        byte* xq = convert ? scratch : (byte*)x;
        if (convert)
            PrepareActivations(type, x, columns, tokens, context, xq);
        job.PartScratch = partBytes > 0 ? scratch + xBytes : null;
        job.Weight = weight;
        job.RowBytes = rowBytes;
        job.Rows = rows;
        job.Columns = columns;
        job.X = xq;
        job.XRowBytes = xRowBytes;
        job.Tokens = tokens;
        job.Y = y;
        job.YStride = yStride;
        context.Run(job, parts);
    }

    /// <summary>
    /// <c>y[r] = Σ_c w[r, c] · x[c]</c> for one token, the <paramref name="type"/> weight held as row groups (<see cref="PackRowGroups"/>:
    /// <paramref name="rows"/> / 16 groups of <see cref="VecDot.RowGroupBytes"/> bytes at <paramref name="groups"/>), bit
    /// for bit what <see cref="Multiply(GgmlType, byte*, float*, int, int, int, int, ComputeContext, float*)"/> gives the
    /// rows themselves outside the deterministic mode.
    /// </summary>
    internal static void MultiplyRowGroups(GgmlType type, byte* groups, int rows, int columns, float* x, ComputeContext context, float* y)
    {
        ArgumentNullException.ThrowIfNull(context);
        CheckWholeGroups(rows);
        long xRowBytes = VecDot.ActivationRowBytes(type, columns);
        byte* xq = context.Scratch((xRowBytes + 63) / 64 * 64);
        VecDot.PrepareActivations(type, x, columns, 1, xq);
        int count = rows / VecDot.RowGroupRows;
        long work = RowGroupsBytes(type, rows, columns);
        var job = context.Job<RowGroupJob>();
        job.Type = type;
        job.Groups = groups;
        job.GroupBytes = VecDot.RowGroupBytes(type, columns);
        job.Count = count;
        job.Columns = columns;
        job.X = xq;
        job.Y = y;
        context.Run(job, work < MinBytesPerPart || context.Threads == 1 ? 1 : Math.Min(PartsPerThread * context.Threads, count));
    }

    /// <summary>Bytes of the row groups of a [<paramref name="rows"/>, <paramref name="columns"/>] weight of
    /// <paramref name="type"/> (whole groups of rows).</summary>
    internal static long RowGroupsBytes(GgmlType type, int rows, int columns) => (long)(rows / VecDot.RowGroupRows) * VecDot.RowGroupBytes(type, columns);

    /// <summary>Packs <paramref name="rows"/> contiguous rows of <paramref name="type"/> at <paramref name="weight"/> into
    /// the row groups <see cref="MultiplyRowGroups"/> reads (<see cref="RowGroupsBytes"/> bytes at <paramref name="destination"/>).</summary>
    internal static void PackRowGroups(GgmlType type, byte* weight, int rows, int columns, byte* destination)
    {
        CheckWholeGroups(rows);
        long rowBytes = GgmlTypes.RowBytes(type, columns), groupBytes = VecDot.RowGroupBytes(type, columns);
        for (int g = 0; g < rows / VecDot.RowGroupRows; g++)
            VecDot.PackRowGroup(type, weight + (long)g * VecDot.RowGroupRows * rowBytes, rowBytes, columns, destination + g * groupBytes);
    }

    private static void CheckWholeGroups(int rows)
    {
        if (rows % VecDot.RowGroupRows != 0)
            throw new ArgumentException($"{rows} rows are not whole groups of {VecDot.RowGroupRows}", nameof(rows));
    }

    /// <summary>A one-token product over row groups, split by groups.</summary>
    internal sealed class RowGroupJob : IParallelJob
    {
        public GgmlType Type;
        public byte* Groups;      // [Count, GroupBytes]
        public long GroupBytes;
        public int Count, Columns;
        public byte* X;           // one Q8_K activation row
        public float* Y;          // [Count · 16]

        public void Run(int part, int parts)
        {
            int g0 = (int)((long)Count * part / parts), g1 = (int)((long)Count * (part + 1) / parts);
            for (int g = g0; g < g1; g++)
                VecDot.RowGroupProduct(Type, Groups + g * GroupBytes, X, Columns, Y + g * VecDot.RowGroupRows);
        }
    }

    /// <summary>Converts the activations to the weight type's vec_dot type, split by tokens across the context's
    /// threads when there are enough of them (each row is converted alone, so the split changes nothing).</summary>
    private static void PrepareActivations(GgmlType type, float* x, int columns, int tokens, ComputeContext context, byte* destination)
    {
        int parts = context.Threads == 1 || (long)tokens * columns < MinValuesPerQuantizePart ? 1 : Math.Min(tokens, context.Threads);
        if (parts == 1)
        {
            VecDot.PrepareActivations(type, x, columns, tokens, destination);
            return;
        }
        QuantizeJob job = context.Job<QuantizeJob>();
        job.Type = type;
        job.X = x;
        job.Columns = columns;
        job.Tokens = tokens;
        job.Destination = destination;
        job.RowBytes = VecDot.ActivationRowBytes(type, columns);
        context.Run(job, parts);
    }

    // Below this many activation values, converting them on one thread is quicker than waking another.
    private const long MinValuesPerQuantizePart = 8 * 1024;

    /// <summary>Activation conversion split by tokens: part i converts rows [tokens·i/parts, tokens·(i+1)/parts).</summary>
    internal sealed class QuantizeJob : IParallelJob
    {
        public GgmlType Type;
        public float* X;           // [Tokens, Columns]
        public int Columns, Tokens;
        public byte* Destination;  // [Tokens, RowBytes]
        public long RowBytes;

        public void Run(int part, int parts)
        {
            int t0 = (int)((long)Tokens * part / parts), t1 = (int)((long)Tokens * (part + 1) / parts);
            VecDot.PrepareActivations(Type, X + (long)t0 * Columns, Columns, t1 - t0, Destination + t0 * RowBytes);
        }
    }

    // Below this many weight bytes × tokens, waking a worker costs more than it saves.
    private const long MinBytesPerPart = 16 * 1024;
    private const int PartsPerThread = 4;
    // Parts start at multiples of this many rows (64 bytes of f32 output), so threads do not share cache lines of y.
    private const int RowAlign = 16;
    // Activation rows kept hot while a weight row is reused across them.
    private const long TileBytes = 24 * 1024;
    // Weight rows run through every token tile before the next rows start: a block this large stays in the L2 cache, so a
    // matrix larger than the caches (the classifier) is read from memory once per product, not once per token tile.
    private const long RowBlockBytes = 128 * 1024;
    // At most this many tokens per tile: a weight row (repacked once per tile for Q4_0, Q5_0, IQ4_NL) serves them all.
    private const int MaxTileTokens = 64;

    /// <summary>One product split by rows: each part owns a contiguous range of output rows.</summary>
    internal sealed class Job : IParallelJob
    {
        public GgmlType Type;
        public delegate*<byte*, byte*, int, float> Dot;
        public delegate*<byte*, byte*, long, int, float*, long, void> Dot4; // null: one token at a time
        public delegate*<byte*, byte*, long, int, float*, long, void> Dot8; // eight tokens at a time, or null
        public delegate*<byte*, long, byte*, int, float*, void> Rows4;     // one token, four rows at a time, or null
        public byte* PartScratch;        // [parts, RowScratchBytes + StripeScratchBytes], or null
        public long RowScratchBytes;     // a weight row repacked to Q8_0 (0: no repacking)
        public long StripeScratchBytes;  // a packed stripe of VecDot.StripeRowsOf(Type) rows (0: no stripes)
        public byte* Weight;      // [Rows, RowBytes]
        public long RowBytes;
        public int Rows, Columns;
        public byte* X;           // [Tokens, XRowBytes]
        public long XRowBytes;
        public int Tokens;
        public float* Y;          // [Tokens, YStride]
        public int YStride;

        public void Run(int part, int parts)
        {
            int r0 = Boundary(part, parts), r1 = Boundary(part + 1, parts);
            byte* own = PartScratch + part * (RowScratchBytes + StripeScratchBytes);
            int stripesEnd = r0;
            if (StripeScratchBytes > 0)
            {
                int stripeRows = VecDot.StripeRowsOf(Type);
                stripesEnd = r0 + (r1 - r0) / stripeRows * stripeRows;
                RunStripes(r0, stripesEnd, own + RowScratchBytes);
            }
            RunRows(stripesEnd, r1, RowScratchBytes > 0 ? own : null);
        }

        /// <summary>Rows [r0, r1) (a multiple of <see cref="VecDot.StripeRowsOf"/>) packed a stripe at a time, each stripe
        /// multiplied with every token.</summary>
        private void RunStripes(int r0, int r1, byte* stripe)
        {
            int stripeRows = VecDot.StripeRowsOf(Type);
            for (int r = r0; r < r1; r += stripeRows)
            {
                VecDot.PackStripe(Type, Weight + r * RowBytes, RowBytes, Columns, stripe);
                VecDot.StripeProducts(Type, stripe, Columns, X, XRowBytes, Tokens, Y + r, YStride);
            }
        }

        /// <summary>Rows [r0, r1) one at a time, in blocks of rows, each block through every tile of tokens.</summary>
        private void RunRows(int r0, int r1, byte* repacked)
        {
            if (Rows4 != null)
            {
                int r = r0;
                for (; r + 4 <= r1; r += 4)
                    Rows4(Weight + r * RowBytes, RowBytes, X, Columns, Y + r);
                for (; r < r1; r++)
                    Y[r] = Dot(Weight + r * RowBytes, X, Columns);
                return;
            }
            var dot = Dot;
            var dot4 = Dot4;
            var dot8 = Dot8;
            // With an eight-token kernel one call is the whole tile: measured fastest when the rows are blocked (a larger
            // tile through the same kernel runs the classifier of stories15M at 0.85×).
            int tile = dot8 != null ? 8 : (int)Math.Clamp(TileBytes / XRowBytes, 4, MaxTileTokens) & ~3;
            int block = (int)Math.Max(1, RowBlockBytes / RowBytes);
            for (int b0 = r0; b0 < r1; b0 += block)
            {
                int b1 = Math.Min(r1, b0 + block);
                for (int t0 = 0; t0 < Tokens; t0 += tile)
                {
                    int t1 = Math.Min(Tokens, t0 + tile);
                    for (int r = b0; r < b1; r++)
                    {
                        byte* w = Weight + r * RowBytes;
                        if (repacked != null)
                        {
                            VecDot.RepackToQ8_0Avx2(Type, w, Columns, repacked);
                            w = repacked;
                        }
                        int t = t0;
                        if (dot8 != null)
                        {
                            for (; t + 8 <= t1; t += 8)
                                dot8(w, X + t * XRowBytes, XRowBytes, Columns, Y + (long)t * YStride + r, YStride);
                        }
                        if (dot4 != null)
                        {
                            for (; t + 4 <= t1; t += 4)
                                dot4(w, X + t * XRowBytes, XRowBytes, Columns, Y + (long)t * YStride + r, YStride);
                        }
                        for (; t < t1; t++)
                            Y[(long)t * YStride + r] = dot(w, X + t * XRowBytes, Columns);
                    }
                }
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

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using Squeeze.Tensors;

namespace Squeeze.Quantization;

/// <summary>
/// Scalar reference quantizers: f32 rows to the encodings ggml stores (F16, BF16, legacy 32-value blocks, k-quant
/// 256-value super-blocks, IQ4_NL). Deterministic: the same input always gives the same bytes.
/// <para>Legacy types without importance are byte-identical to llama.cpp's <c>quantize_row_*_ref</c>. K-quants and IQ4_NL
/// start from llama.cpp's own algorithm (alone with <see cref="ScaleSearch.LlamaCpp"/>) and then refine each block
/// (sub-block scales, super-block scales, codes), keeping the refinement only when it lowers the block's error
/// Σ wᵢ (xᵢ − x̂ᵢ)², with wᵢ = importance[i] when given, else 1 (plain squared error). So their error is never above
/// llama.cpp's algorithm on the same block.</para>
/// </summary>
public static partial class Quantize
{
    /// <summary>True for the types <see cref="Row"/> can produce.</summary>
    public static bool IsSupported(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16
        or GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1
        or GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.IQ4_NL;

    /// <summary>
    /// Encodes one row: <c>destination = encode(type, source)</c>, where <paramref name="destination"/> holds exactly
    /// <c>GgmlTypes.RowBytes(type, source.Length)</c> bytes. <paramref name="importance"/> is one non-negative weight per
    /// column (an importance matrix row, as llama.cpp's imatrix) or empty for none; Q8_0, F16, BF16 and F32 ignore it.
    /// <paramref name="search"/>: how the k-quants and IQ4_NL choose their scales.
    /// </summary>
    /// <exception cref="ArgumentException">The row holds NaN or infinity, the lengths do not fit the type, or the
    /// importance has the wrong length or a negative / non-finite weight.</exception>
    public static void Row(GgmlType type, ReadOnlySpan<float> source, ReadOnlySpan<float> importance, Span<byte> destination,
        ScaleSearch search = ScaleSearch.Refined)
        => RowCore(type, source, importance, destination, -1, search);

    /// <summary>
    /// Encodes every row of a row-major matrix: row r is <c>source[r*columns .. (r+1)*columns)</c> and goes to
    /// <c>destination[r*rowBytes ..]</c>. Rows are spread over up to <paramref name="maxThreads"/> threads (0 = all cores);
    /// each row is encoded independently, so the bytes are identical whatever the thread count. <paramref name="search"/>:
    /// how the k-quants and IQ4_NL choose their scales.
    /// </summary>
    /// <exception cref="ArgumentException">A row holds NaN or infinity (the message names the row), or the lengths do not fit.</exception>
    public static unsafe void Rows(GgmlType type, ReadOnlySpan<float> source, int columns, ReadOnlySpan<float> importance, Span<byte> destination, int maxThreads = 0,
        ScaleSearch search = ScaleSearch.Refined)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        ArgumentOutOfRangeException.ThrowIfNegative(maxThreads);
        if (source.Length % columns != 0)
            throw new ArgumentException($"{source.Length} values are not a whole number of rows of {columns}", nameof(source));
        int rows = source.Length / columns;
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        if (destination.Length != (long)rows * rowBytes)
            throw new ArgumentException($"{rows} rows of {type} x {columns} take {(long)rows * rowBytes} bytes, not {destination.Length}", nameof(destination));
        if (!importance.IsEmpty && importance.Length != columns)
            throw new ArgumentException($"importance has {importance.Length} weights for rows of {columns}", nameof(importance));
        if (rows == 0)
            return;

        int threads = maxThreads == 0 ? Environment.ProcessorCount : maxThreads;
        // Rows per work item: about 16K values, as llama.cpp's chunking; never less than one row.
        int rowsPerChunk = Math.Max(1, 16384 / columns);
        int chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        fixed (float* src = source)
        fixed (float* imp = importance)
        fixed (byte* dst = destination)
        {
            nint s = (nint)src, w = (nint)imp, d = (nint)dst;
            int impLength = importance.Length;
            void Chunk(int c)
            {
                int first = c * rowsPerChunk, last = Math.Min(rows, first + rowsPerChunk);
                for (int r = first; r < last; r++)
                {
                    var x = new ReadOnlySpan<float>((float*)s + (long)r * columns, columns);
                    var qw = new ReadOnlySpan<float>((float*)w, impLength);
                    var y = new Span<byte>((byte*)d + (long)r * rowBytes, rowBytes);
                    RowCore(type, x, qw, y, r, search);
                }
            }
            if (threads <= 1 || chunks == 1)
            {
                for (int c = 0; c < chunks; c++)
                    Chunk(c);
            }
            else
            {
                Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, Chunk);
            }
        }
    }

    /// <summary>
    /// Encodes a whole tensor (any readable type: it is decoded to f32 a few rows at a time) to <paramref name="type"/>,
    /// row by row, into <paramref name="destination"/> (<c>RowBytes(type, Columns) * Rows</c> bytes), on up to
    /// <paramref name="maxThreads"/> threads (0 = all cores), and measures the encoding against the source on the way.
    /// <paramref name="importance"/>: one weight per column, or empty. The bytes and the error do not depend on the
    /// thread count (rows are encoded independently; the error sums are added in row order). <paramref name="search"/>: how
    /// the k-quants and IQ4_NL choose their scales.
    /// </summary>
    /// <returns>Σ (x − x̂)² and Σ x² over the tensor, each in double.</returns>
    /// <exception cref="ArgumentException">The tensor holds NaN or infinity (the message names the row and tensor), or a length does not fit.</exception>
    public static unsafe (double ErrorSquares, double SignalSquares) Tensor(Tensor source, GgmlType type, ReadOnlySpan<float> importance, Span<byte> destination, int maxThreads = 0,
        ScaleSearch search = ScaleSearch.Refined)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(maxThreads);
        int columns = checked((int)source.Columns);
        long rows = source.Rows;
        long rowBytes = GgmlTypes.RowBytes(type, columns);
        if (destination.Length != rows * rowBytes)
            throw new ArgumentException($"tensor '{source.Name}': {rows} rows of {type} x {columns} take {rows * rowBytes} bytes, not {destination.Length}", nameof(destination));
        if (!importance.IsEmpty && importance.Length != columns)
            throw new ArgumentException($"tensor '{source.Name}': importance has {importance.Length} weights for rows of {columns}", nameof(importance));
        int threads = maxThreads == 0 ? Environment.ProcessorCount : maxThreads;
        // Rows per work item: about 64K values (never less than one row), so the f32 buffers stay in the caches.
        int rowsPerChunk = (int)Math.Max(1, Math.Min(rows, 65536 / columns));
        int chunks = checked((int)((rows + rowsPerChunk - 1) / rowsPerChunk));
        var errors = new double[chunks];
        var signals = new double[chunks];
        fixed (float* imp = importance)
        fixed (byte* dst = destination)
        {
            nint w = (nint)imp, d = (nint)dst;
            int impLength = importance.Length;
            void Chunk(int c, float[] values, float[] decoded)
            {
                long first = (long)c * rowsPerChunk, last = Math.Min(rows, first + rowsPerChunk);
                double error = 0, signal = 0;
                for (long r = first; r < last; r++)
                {
                    Span<float> x = values.AsSpan(0, columns);
                    Dequantize.Row(source.Type, source.Row(r), x);
                    var y = new Span<byte>((byte*)d + r * rowBytes, (int)rowBytes);
                    try
                    {
                        RowCore(type, x, new ReadOnlySpan<float>((float*)w, impLength), y, r, search);
                    }
                    catch (ArgumentException e)
                    {
                        throw new ArgumentException($"tensor '{source.Name}': {e.Message}", nameof(source), e);
                    }
                    // Per row in f32 (vectorised), added up in double.
                    Span<float> back = decoded.AsSpan(0, columns);
                    Dequantize.Row(type, y, back);
                    signal += TensorPrimitives.SumOfSquares<float>(x);
                    TensorPrimitives.Subtract(x, back, back);
                    error += TensorPrimitives.SumOfSquares<float>(back);
                }
                errors[c] = error;
                signals[c] = signal;
            }
            if (threads <= 1 || chunks == 1)
            {
                float[] values = new float[columns], decoded = new float[columns];
                for (int c = 0; c < chunks; c++)
                    Chunk(c, values, decoded);
            }
            else
            {
                try
                {
                    Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads },
                        () => (new float[columns], new float[columns]),
                        (c, _, buffers) => { Chunk(c, buffers.Item1, buffers.Item2); return buffers; },
                        _ => { });
                }
                catch (AggregateException e) when (e.InnerExceptions[0] is ArgumentException first)
                {
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(first);
                }
            }
        }
        double errorSum = 0, signalSum = 0;
        for (int c = 0; c < chunks; c++)
        {
            errorSum += errors[c];
            signalSum += signals[c];
        }
        return (errorSum, signalSum);
    }

    /// <summary>Σ wᵢ (sourceᵢ − decodedᵢ)² in double, with wᵢ = importance[i % importance.Length], or 1 when importance is empty.</summary>
    public static double WeightedSquaredError(ReadOnlySpan<float> source, ReadOnlySpan<float> decoded, ReadOnlySpan<float> importance)
    {
        if (source.Length != decoded.Length)
            throw new ArgumentException($"{source.Length} source values but {decoded.Length} decoded", nameof(decoded));
        double sum = 0;
        for (int i = 0; i < source.Length; i++)
        {
            double diff = (double)source[i] - decoded[i];
            double w = importance.IsEmpty ? 1.0 : importance[i % importance.Length];
            sum += w * diff * diff;
        }
        return sum;
    }

    private static void RowCore(GgmlType type, ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y, long row, ScaleSearch search)
    {
        if (!IsSupported(type))
            throw new NotSupportedException($"quantizing to {type} is not supported");
        long expected = GgmlTypes.RowBytes(type, x.Length);
        if (y.Length != expected)
            throw new ArgumentException($"a {type} row of {x.Length} values takes {expected} bytes, not {y.Length}", nameof(y));
        string Where() => row >= 0 ? $"row {row}" : "the row";
        // The value of largest magnitude (vectorised; NaN when there is a NaN, infinite when there is an infinity).
        float amax = x.IsEmpty ? 0 : MathF.Abs(TensorPrimitives.MaxMagnitude(x));
        if (!float.IsFinite(amax))
        {
            for (int i = 0; i < x.Length; i++)
            {
                if (!float.IsFinite(x[i]))
                    throw new ArgumentException($"{Where()} holds a non-finite value ({x[i]}) at column {i}; quantization needs finite weights", nameof(x));
            }
        }
        if (!importance.IsEmpty)
        {
            if (importance.Length != x.Length)
                throw new ArgumentException($"importance has {importance.Length} weights for a row of {x.Length}", nameof(importance));
            for (int i = 0; i < importance.Length; i++)
            {
                if (!float.IsFinite(importance[i]) || importance[i] < 0)
                    throw new ArgumentException($"importance weight {i} is {importance[i]}; weights must be finite and non-negative", nameof(importance));
            }
        }
        switch (type)
        {
            case GgmlType.F32: F32(x, y); break;
            case GgmlType.F16: F16(x, y); break;
            case GgmlType.BF16: BF16(x, y); break;
            case GgmlType.Q8_0: Q8_0(x, y); break;
            case GgmlType.Q4_0: Q4_0(x, importance, y); break;
            case GgmlType.Q4_1: Q4_1(x, importance, y); break;
            case GgmlType.Q5_0: Q5_0(x, importance, y); break;
            case GgmlType.Q5_1: Q5_1(x, importance, y); break;
            case GgmlType.Q2_K: Q2_K(x, importance, y, search); break;
            case GgmlType.Q3_K: Q3_K(x, importance, y, search); break;
            case GgmlType.Q4_K: Q4_K(x, importance, y, search); break;
            case GgmlType.Q5_K: Q5_K(x, importance, y, search); break;
            case GgmlType.Q6_K: Q6_K(x, importance, y, search); break;
            case GgmlType.IQ4_NL: IQ4_NL(x, importance, y, search); break;
            default: throw new NotSupportedException($"quantizing to {type} is not supported");
        }
        // Half-precision scales (and F16 values) overflow only for huge weights; below 2^15 no format can produce a
        // non-finite value, above it the encoded row is decoded and checked, so no NaN or infinity is ever returned.
        if (amax >= 32768f && type is not (GgmlType.F32 or GgmlType.BF16))
        {
            float[] back = new float[x.Length];
            Dequantize.Row(type, y, back);
            for (int i = 0; i < back.Length; i++)
            {
                if (!float.IsFinite(back[i]))
                {
                    y.Clear();
                    throw new ArgumentException($"{Where()}: value {x[i]} at column {i} is too large for {type} (its half-precision scale or value overflows)", nameof(x));
                }
            }
        }
    }

    // ggml's nearest_int: round half to even through the float mantissa (valid for |x| < 2^22, as in ggml).
    private static int NearestInt(float value)
    {
        float shifted = value + 12582912f;
        return (BitConverter.SingleToInt32Bits(shifted) & 0x007fffff) - 0x00400000;
    }
}

using Squeeze.Runtime;

namespace Squeeze.Calibration;

/// <summary>
/// Statistics of the activations entering one group of linear layers (one <c>(layer, kind)</c>): the token count,
/// per-column Σx², Σ|x| and max |x|, and optionally the Gram matrix XᵀX, all accumulated in double in token order.
/// </summary>
public sealed class ActivationStatistics
{
    /// <summary>Creates empty statistics for inputs of <paramref name="width"/> columns.</summary>
    public ActivationStatistics(int layer, LinearInput kind, int width, bool collectGram)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        Layer = layer;
        Kind = kind;
        Width = width;
        SumSquares = new double[width];
        SumAbs = new double[width];
        MaxAbs = new float[width];
        if (collectGram && (long)width * width > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(width), width, $"a Gram matrix of width {width} does not fit one array");
        Gram = collectGram ? new double[(long)width * width] : null;
    }

    /// <summary>Creates statistics from stored values (the arrays are taken, not copied).</summary>
    public ActivationStatistics(int layer, LinearInput kind, long tokenCount, double[] sumSquares, double[] sumAbs, float[] maxAbs, double[]? gram)
    {
        ArgumentNullException.ThrowIfNull(sumSquares);
        ArgumentNullException.ThrowIfNull(sumAbs);
        ArgumentNullException.ThrowIfNull(maxAbs);
        int width = sumSquares.Length;
        if (width == 0 || sumAbs.Length != width || maxAbs.Length != width)
            throw new ArgumentException($"statistics arrays disagree on the width ({sumSquares.Length}, {sumAbs.Length}, {maxAbs.Length})", nameof(sumAbs));
        if (gram is not null && gram.LongLength != (long)width * width)
            throw new ArgumentException($"a Gram matrix of width {width} has {(long)width * width} values, not {gram.LongLength}", nameof(gram));
        ArgumentOutOfRangeException.ThrowIfNegative(tokenCount);
        Layer = layer;
        Kind = kind;
        Width = width;
        TokenCount = tokenCount;
        SumSquares = sumSquares;
        SumAbs = sumAbs;
        MaxAbs = maxAbs;
        Gram = gram;
    }

    /// <summary>Block index, or −1 for the output classifier.</summary>
    public int Layer { get; }

    /// <summary>Which linear layers read this input.</summary>
    public LinearInput Kind { get; }

    /// <summary>Number of input columns (features).</summary>
    public int Width { get; }

    /// <summary>Number of token rows accumulated.</summary>
    public long TokenCount { get; private set; }

    /// <summary>Σₜ x[t, j]² per column j.</summary>
    public double[] SumSquares { get; } // [width]

    /// <summary>Σₜ |x[t, j]| per column j.</summary>
    public double[] SumAbs { get; } // [width]

    /// <summary>maxₜ |x[t, j]| per column j (outlier statistics).</summary>
    public float[] MaxAbs { get; } // [width]

    /// <summary>XᵀX, symmetric [width, width] row-major, or null when not collected.</summary>
    public double[]? Gram { get; } // [width, width]

    /// <summary>The importance vector as llama.cpp's imatrix: mean x² per column (Σx² / tokens).</summary>
    public float[] Importance()
    {
        var result = new float[Width];
        if (TokenCount == 0)
            return result;
        for (int j = 0; j < Width; j++)
            result[j] = (float)(SumSquares[j] / TokenCount);
        return result;
    }

    /// <summary>Mean |x| per column (AWQ's activation magnitude).</summary>
    public float[] MeanAbs()
    {
        var result = new float[Width];
        if (TokenCount == 0)
            return result;
        for (int j = 0; j < Width; j++)
            result[j] = (float)(SumAbs[j] / TokenCount);
        return result;
    }

    /// <summary>H = XᵀX / tokens (GPTQ's Hessian up to a factor 2), [width, width]; throws when the Gram matrix was not collected.</summary>
    public double[] Hessian()
    {
        if (Gram is null)
            throw new InvalidOperationException($"layer {Layer} {Kind}: the Gram matrix was not collected (calibrate with the Gram option)");
        var h = new double[Gram.LongLength];
        double scale = TokenCount == 0 ? 0 : 1.0 / TokenCount;
        for (long i = 0; i < h.LongLength; i++)
            h[i] = Gram[i] * scale;
        return h;
    }

    /// <summary>Adds <paramref name="tokens"/> rows of <paramref name="input"/> ([tokens, width] row-major). Deterministic: every
    /// sum runs over the rows in order, whatever the thread count used for the Gram matrix.</summary>
    public void Accumulate(ReadOnlySpan<float> input, int tokens, int threads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        int w = Width;
        if (input.Length < (long)tokens * w)
            throw new ArgumentException($"{tokens} rows of {w} need {(long)tokens * w} values, got {input.Length}", nameof(input));
        for (int t = 0; t < tokens; t++)
        {
            var row = input.Slice(t * w, w);
            for (int j = 0; j < w; j++)
            {
                float x = row[j];
                if (!float.IsFinite(x))
                    throw new InvalidOperationException($"layer {Layer} {Kind}: activation {x} at token {TokenCount + t}, column {j}");
                SumSquares[j] += (double)x * x;
                float a = MathF.Abs(x);
                SumAbs[j] += a;
                if (a > MaxAbs[j])
                    MaxAbs[j] = a;
            }
        }
        if (Gram is not null && tokens > 0)
            AccumulateGram(input[..(tokens * w)], tokens, threads);
        TokenCount += tokens;
    }

    // XᵀX, upper triangle computed then mirrored; each element sums over tokens in order, one row of the Gram matrix per work item.
    private void AccumulateGram(ReadOnlySpan<float> input, int tokens, int threads)
    {
        int w = Width;
        // Transpose to [width, tokens] in double so row i of the Gram matrix is a set of dot products of contiguous columns.
        var xt = new double[(long)w * tokens];
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < w; j++)
                xt[(long)j * tokens + t] = input[t * w + j];
        double[] gram = Gram!;
        void Row(int i)
        {
            var xi = new ReadOnlySpan<double>(xt, i * tokens, tokens);
            for (int j = i; j < w; j++)
            {
                var xj = new ReadOnlySpan<double>(xt, j * tokens, tokens);
                // Four fixed partial sums: the same bits on every machine and thread count.
                double s = Quantization.GptqLinearAlgebra.Dot(xi, xj);
                gram[(long)i * w + j] += s;
                if (j != i)
                    gram[(long)j * w + i] += s;
            }
        }
        if (threads <= 1 || (long)w * w * tokens < 1 << 20)
        {
            for (int i = 0; i < w; i++)
                Row(i);
        }
        else
        {
            Parallel.For(0, w, new ParallelOptions { MaxDegreeOfParallelism = threads }, Row);
        }
    }
}

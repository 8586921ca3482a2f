using System.Runtime.Intrinsics;
using Squeeze.Kernels;
using Squeeze.Runtime;

namespace Squeeze.Calibration;

/// <summary>
/// Statistics of the activations entering one group of linear layers (one <c>(layer, kind)</c>): the token count,
/// per-column Σx², Σ|x| and max |x|, and optionally the Gram matrix XᵀX, all accumulated in double in token order (a
/// calibration's shards each on their own, then added in a fixed tree of shards and groups: <see cref="CalibrationShards"/>).
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

    /// <summary>Creates statistics from stored values (the arrays are taken, not copied); <paramref name="experts"/> are a
    /// routed input's per-expert statistics (<see cref="Experts"/>), of this entry's layer, kind and width.</summary>
    public ActivationStatistics(int layer, LinearInput kind, long tokenCount, double[] sumSquares, double[] sumAbs, float[] maxAbs, double[]? gram,
        IReadOnlyList<ActivationStatistics?>? experts = null)
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
        foreach (var e in experts ?? [])
        {
            if (e is not null && (e.Layer != layer || e.Kind != kind || e.Width != width || (e.Gram is null) != (gram is null)))
                throw new ArgumentException($"layer {layer} {kind}: an expert's statistics are of layer {e.Layer} {e.Kind}, width {e.Width}{(e.Gram is null ? "" : " with XᵀX")}", nameof(experts));
            this.experts.Add(e);
        }
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

    /// <summary>For the routed experts' inputs (<see cref="LinearInput.ExpertFeedForward"/>,
    /// <see cref="LinearInput.ExpertFeedForwardDown"/>): each expert's statistics over only the tokens routed to it, indexed
    /// by expert (null for an expert no token reached); this entry's own sums are over every routed row. Empty otherwise.</summary>
    public IReadOnlyList<ActivationStatistics?> Experts => experts;

    private readonly List<ActivationStatistics?> experts = [];

    /// <summary>Expert <paramref name="expert"/>'s statistics, or null when no token was routed to it.</summary>
    public ActivationStatistics? Expert(int expert) => expert < experts.Count ? experts[expert] : null;

    /// <summary>Adds <paramref name="tokens"/> rows routed to expert <paramref name="expert"/>: to that expert's statistics
    /// (made on its first rows) and to this entry's.</summary>
    public void AccumulateExpert(int expert, ReadOnlySpan<float> input, int tokens, int threads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(expert);
        while (experts.Count <= expert)
            experts.Add(null);
        var own = experts[expert] ??= new ActivationStatistics(Layer, Kind, Width, Gram is not null);
        own.Accumulate(input, tokens, threads);
        Accumulate(input, tokens, threads);
    }

    /// <summary>Adds <paramref name="other"/>'s statistics (a later shard's or group's, of this entry's layer, kind and width) to these,
    /// element by element: the sums and the Gram matrix added, the maxima the larger, the tokens counted; each expert's
    /// likewise, an expert these have not seen taking <paramref name="other"/>'s statistics (which are not copied).</summary>
    /// <exception cref="ArgumentException">The statistics are of another input or width, or one has a Gram matrix and the other not.</exception>
    public void Add(ActivationStatistics other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.Layer != Layer || other.Kind != Kind || other.Width != Width || (other.Gram is null) != (Gram is null))
            throw new ArgumentException($"layer {Layer} {Kind} (width {Width}) cannot add the statistics of layer {other.Layer} {other.Kind} (width {other.Width})"
                + ((other.Gram is null) != (Gram is null) ? ", one with XᵀX and one without" : ""), nameof(other));
        for (int j = 0; j < Width; j++)
        {
            SumSquares[j] += other.SumSquares[j];
            SumAbs[j] += other.SumAbs[j];
            if (other.MaxAbs[j] > MaxAbs[j])
                MaxAbs[j] = other.MaxAbs[j];
        }
        if (Gram is not null)
        {
            var gram = Gram;
            var add = other.Gram!;
            for (long i = 0; i < gram.LongLength; i++)
                gram[i] += add[i];
        }
        TokenCount += other.TokenCount;
        for (int e = 0; e < other.experts.Count; e++)
        {
            if (other.experts[e] is not { } theirs)
                continue;
            while (experts.Count <= e)
                experts.Add(null);
            if (experts[e] is { } own)
                own.Add(theirs);
            else
                experts[e] = theirs;
        }
    }

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
        // Rows i, i + 1 against four columns j … j + 3 at a time: each input vector is loaded once for eight dot products.
        // Every element is summed exactly as LinearAlgebra.Dot sums it (four lanes, tail into lane 0, then
        // (l0 + l1) + (l2 + l3)), so the result does not depend on the tiling, the vector width or the thread count. A work
        // item is GramPairs pairs of rows, which go through the columns a stretch of GramColumns at a time, so the rows and
        // the stretch stay in cache instead of every pair reading all of x.
        void Rows(int group)
        {
            int firstPair = group * GramPairs, endPair = Math.Min(firstPair + GramPairs, (w + 1) / 2);
            Span<double> tile = stackalloc double[8];
            if (Vector256.IsHardwareAccelerated)
            {
                for (int jb = 2 * firstPair; jb + 4 <= w; jb += GramColumns)
                {
                    for (int pair = firstPair; pair < endPair; pair++)
                    {
                        int i0 = 2 * pair;
                        if (i0 + 2 > w)
                            continue;
                        // This pair's tiles start at i0, i0 + 4, …: the first of them in the stretch.
                        int j = jb <= i0 ? i0 : i0 + (jb - i0 + 3) / 4 * 4;
                        for (; j < jb + GramColumns && j + 4 <= w; j += 4)
                        {
                            DotTile(xt, tokens, i0, j, tile);
                            for (int r = 0; r < 2; r++)
                            {
                                for (int c = 0; c < 4; c++)
                                {
                                    int i = i0 + r, jc = j + c;
                                    if (jc < i)
                                        continue;
                                    gram[(long)i * w + jc] += tile[r * 4 + c];
                                    if (jc != i)
                                        gram[(long)jc * w + i] += tile[r * 4 + c];
                                }
                            }
                        }
                    }
                }
            }
            for (int pair = firstPair; pair < endPair; pair++)
            {
                int i0 = 2 * pair, rows = Math.Min(2, w - i0);
                // The columns no tile covered: all of them without vectors or for a lone last row, else the last few.
                int j = rows == 2 && Vector256.IsHardwareAccelerated ? i0 + Math.Max(0, (w - i0) / 4) * 4 : i0;
                for (int r = 0; r < rows; r++)
                {
                    int i = i0 + r;
                    var xi = new ReadOnlySpan<double>(xt, i * tokens, tokens);
                    for (int jc = Math.Max(j, i); jc < w; jc++)
                    {
                        double s = LinearAlgebra.Dot(xi, new ReadOnlySpan<double>(xt, jc * tokens, tokens));
                        gram[(long)i * w + jc] += s;
                        if (jc != i)
                            gram[(long)jc * w + i] += s;
                    }
                }
            }
        }
        int groups = ((w + 1) / 2 + GramPairs - 1) / GramPairs;
        if (threads <= 1 || (long)w * w * tokens < 1 << 20)
        {
            for (int group = 0; group < groups; group++)
                Rows(group);
        }
        else
        {
            Parallel.For(0, groups, new ParallelOptions { MaxDegreeOfParallelism = threads }, Rows);
        }
    }

    // Pairs of rows per work item of AccumulateGram, and columns per stretch: 32 rows and 64 columns of 256 tokens are
    // 192 KB of doubles.
    private const int GramPairs = 16;
    private const int GramColumns = 64;

    // tile[r * 4 + c] = x_(i0 + r) · x_(j0 + c) over the rows of xt ([width, tokens]), summed as LinearAlgebra.Dot sums.
    private static void DotTile(double[] xt, int tokens, int i0, int j0, Span<double> tile)
    {
        var a0 = new ReadOnlySpan<double>(xt, i0 * tokens, tokens);
        var a1 = new ReadOnlySpan<double>(xt, (i0 + 1) * tokens, tokens);
        var b0 = new ReadOnlySpan<double>(xt, j0 * tokens, tokens);
        var b1 = new ReadOnlySpan<double>(xt, (j0 + 1) * tokens, tokens);
        var b2 = new ReadOnlySpan<double>(xt, (j0 + 2) * tokens, tokens);
        var b3 = new ReadOnlySpan<double>(xt, (j0 + 3) * tokens, tokens);
        if (tokens < 8)
        {
            // LinearAlgebra.Dot's scalar path for short rows.
            for (int c = 0; c < 4; c++)
            {
                var b = c switch { 0 => b0, 1 => b1, 2 => b2, _ => b3 };
                tile[c] = LinearAlgebra.Dot(a0, b);
                tile[4 + c] = LinearAlgebra.Dot(a1, b);
            }
            return;
        }
        Vector256<double> s00 = default, s01 = default, s02 = default, s03 = default, s10 = default, s11 = default, s12 = default, s13 = default;
        int t = 0;
        for (; t + 4 <= tokens; t += 4)
        {
            var x0 = Vector256.Create(a0.Slice(t, 4));
            var x1 = Vector256.Create(a1.Slice(t, 4));
            var y = Vector256.Create(b0.Slice(t, 4));
            s00 += x0 * y;
            s10 += x1 * y;
            y = Vector256.Create(b1.Slice(t, 4));
            s01 += x0 * y;
            s11 += x1 * y;
            y = Vector256.Create(b2.Slice(t, 4));
            s02 += x0 * y;
            s12 += x1 * y;
            y = Vector256.Create(b3.Slice(t, 4));
            s03 += x0 * y;
            s13 += x1 * y;
        }
        tile[0] = Finish(s00, a0, b0, t);
        tile[1] = Finish(s01, a0, b1, t);
        tile[2] = Finish(s02, a0, b2, t);
        tile[3] = Finish(s03, a0, b3, t);
        tile[4] = Finish(s10, a1, b0, t);
        tile[5] = Finish(s11, a1, b1, t);
        tile[6] = Finish(s12, a1, b2, t);
        tile[7] = Finish(s13, a1, b3, t);
    }

    private static double Finish(Vector256<double> lanes, ReadOnlySpan<double> a, ReadOnlySpan<double> b, int t)
    {
        double s0 = lanes[0];
        for (; t < a.Length; t++)
            s0 += a[t] * b[t];
        return (s0 + lanes[1]) + (lanes[2] + lanes[3]);
    }
}

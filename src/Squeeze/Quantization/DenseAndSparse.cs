using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Quantization;

/// <summary>How <see cref="DenseAndSparse"/> ranks weights as outliers.</summary>
public enum OutlierCriterion
{
    /// <summary>Sensitivity-weighted magnitude: importance[c] · W[r, c]² (SqueezeLLM keeps the largest weights aside).</summary>
    Magnitude,

    /// <summary>Sensitivity-weighted error of a first dense fit of every weight: importance[c] · (W[r, c] − dense[r, c])² (SpQR).</summary>
    Error,
}

/// <summary>
/// Dense-and-sparse decomposition (SqueezeLLM, SpQR): a chosen fraction of the weights, ranked by an
/// <see cref="OutlierCriterion"/>, is taken out BEFORE the dense part is fitted, so the outliers stretch no scale or
/// codebook: each outlier's value is replaced by the mean of its row's other weights and given importance 0, then the
/// dense encoder runs on the result. The sparse part holds, at each outlier, the f16 of W − dense there, so
/// dense + sparse reproduces every outlier up to that f16 rounding.
/// </summary>
public static class DenseAndSparse
{
    /// <summary>Fits the dense part: <paramref name="weights"/> and <paramref name="importance"/> are both [rows, columns].</summary>
    public delegate LinearWeight DenseEncoder(string name, float[] weights, int rows, int columns, float[] importance);

    /// <summary>Dense parts as per-group codebooks (<see cref="CodebookQuantizer.Quantize"/>; group 0: one per row).</summary>
    public static DenseEncoder CodebookEncoder(int bits, int group, int maxIterations = CodebookQuantizer.DefaultMaxIterations)
        => (name, weights, rows, columns, importance) => CodebookQuantizer.Quantize(name, weights, rows, columns, importance, bits, group, maxIterations);

    /// <summary>Dense parts as uniform codes, each row encoded by <see cref="UniformCodec.EncodeRow"/> with the
    /// importance-weighted range search, the per-value importance zero at the outliers.</summary>
    public static DenseEncoder UniformEncoder(UniformScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        return (name, weights, rows, columns, importance) =>
        {
            scheme.CheckColumns(columns);
            int groups = columns / scheme.Group, rowBytes = (int)scheme.RowBytes(columns);
            var packed = new byte[(long)rows * rowBytes];
            var scales = new ushort[(long)rows * groups];
            var mins = scheme.Symmetric ? null : new ushort[(long)rows * groups];
            var codes = new byte[columns];
            for (int r = 0; r < rows; r++)
            {
                UniformCodec.EncodeRow(weights.AsSpan(r * columns, columns), importance.AsSpan(r * columns, columns), scheme, search: true,
                    codes, scales.AsSpan(r * groups, groups), mins is null ? default : mins.AsSpan(r * groups, groups));
                UniformCodec.Pack(codes, scheme.Bits, packed.AsSpan(r * rowBytes, rowBytes));
            }
            return new UniformWeight(name, rows, columns, scheme, packed, scales, mins);
        };
    }

    /// <summary>Splits <paramref name="weights"/> ([rows, columns] row-major) into a dense weight and sparse outliers.</summary>
    /// <param name="name">The tensor's name (given to both parts).</param>
    /// <param name="weights">[rows, columns] values, all finite.</param>
    /// <param name="rows">Output features.</param>
    /// <param name="columns">Input features.</param>
    /// <param name="importance">Per input column sensitivity ≥ 0 ([columns]), or empty (all 1).</param>
    /// <param name="fraction">Share of the weights kept as outliers, 0 ≤ fraction &lt; 1 (rounded to a whole count).</param>
    /// <param name="criterion">How outliers are ranked (ties: the lower row-major index first).</param>
    /// <param name="encoder">Fits the dense part.</param>
    /// <exception cref="ArgumentException">A shape or value is wrong, or an outlier's residual overflows f16.</exception>
    public static (LinearWeight Dense, SparseWeight Sparse) Encode(string name, ReadOnlySpan<float> weights, int rows, int columns,
        ReadOnlySpan<float> importance, double fraction, OutlierCriterion criterion, DenseEncoder encoder)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        if (weights.Length != (long)rows * columns)
            throw new ArgumentException($"{rows} x {columns} weights expected, got {weights.Length}", nameof(weights));
        if (!importance.IsEmpty && importance.Length != columns)
            throw new ArgumentException($"importance has {importance.Length} values for {columns} columns", nameof(importance));
        if (!(fraction >= 0 && fraction < 1))
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "the outlier fraction must be in [0, 1)");
        int total = weights.Length;
        var values = weights.ToArray();
        var elementImportance = new float[total];
        for (int i = 0; i < total; i++)
        {
            if (!float.IsFinite(values[i]))
                throw new ArgumentException($"weight ({i / columns}, {i % columns}) is {values[i]}", nameof(weights));
            float imp = importance.IsEmpty ? 1 : importance[i % columns];
            if (!(imp >= 0) || !float.IsFinite(imp))
                throw new ArgumentException($"importance of column {i % columns} is {imp}", nameof(importance));
            elementImportance[i] = imp;
        }

        int count = (int)Math.Round(fraction * total);
        var score = new double[total];
        if (criterion == OutlierCriterion.Error && count > 0)
        {
            var firstFit = encoder(name, (float[])values.Clone(), rows, columns, (float[])elementImportance.Clone()).Decode();
            for (int i = 0; i < total; i++)
            {
                double d = (double)values[i] - firstFit[i];
                score[i] = elementImportance[i] * d * d;
            }
        }
        else
        {
            for (int i = 0; i < total; i++)
                score[i] = elementImportance[i] * (double)values[i] * values[i];
        }

        // The `count` largest scores (ties: lower index), then in row-major order for CSR.
        var ranked = new int[total];
        for (int i = 0; i < total; i++)
            ranked[i] = i;
        Array.Sort(ranked, (a, b) => score[a] != score[b] ? score[b].CompareTo(score[a]) : a.CompareTo(b));
        var outliers = ranked.AsSpan(0, count).ToArray();
        Array.Sort(outliers);

        var isOutlier = new bool[total];
        foreach (int i in outliers)
            isOutlier[i] = true;
        var dense = values.ToArray();
        var denseImportance = elementImportance.ToArray();
        for (int r = 0; r < rows; r++)
        {
            double sum = 0;
            int inliers = 0;
            for (int c = 0; c < columns; c++)
            {
                if (!isOutlier[r * columns + c])
                {
                    sum += values[r * columns + c];
                    inliers++;
                }
            }
            float fill = inliers == 0 ? 0 : (float)(sum / inliers);
            for (int c = 0; c < columns; c++)
            {
                if (isOutlier[r * columns + c])
                {
                    dense[r * columns + c] = fill;
                    denseImportance[r * columns + c] = 0;
                }
            }
        }
        var denseWeight = encoder(name, dense, rows, columns, denseImportance);
        if (denseWeight.Rows != rows || denseWeight.Columns != columns)
            throw new InvalidOperationException($"{name}: the dense encoder returned [{denseWeight.Rows}, {denseWeight.Columns}], not [{rows}, {columns}]");

        var rowOffsets = new int[rows + 1];
        var columnIndices = new int[count];
        var residuals = new ushort[count];
        var decoded = new float[columns];
        int j = 0, decodedRow = -1;
        foreach (int i in outliers)
        {
            int r = i / columns, c = i % columns;
            if (r != decodedRow)
            {
                denseWeight.DecodeRow(r, decoded);
                decodedRow = r;
            }
            float residual = values[i] - decoded[c];
            ushort h = HalfConversions.F32ToF16(residual);
            if (!float.IsFinite(HalfConversions.F16ToF32(h)))
                throw new ArgumentException($"{name}: the outlier at ({r}, {c}) leaves a residual {residual} beyond f16", nameof(weights));
            columnIndices[j] = c;
            residuals[j] = h;
            rowOffsets[r + 1]++;
            j++;
        }
        for (int r = 0; r < rows; r++)
            rowOffsets[r + 1] += rowOffsets[r];
        return (denseWeight, new SparseWeight(name, rows, columns, rowOffsets, columnIndices, residuals));
    }
}

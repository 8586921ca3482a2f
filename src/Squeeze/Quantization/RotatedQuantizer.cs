using Squeeze.Kernels;
using Squeeze.Weights;

namespace Squeeze.Quantization;

/// <summary>
/// Quantizes a weight in the native "uniform" scheme, optionally after a seeded rotation (<see cref="RotatedWeight"/>):
/// the rows are rotated (w′ = F · w), the calibration Hessian with them (H′ = F · H · Fᵀ, since the rotated weight sees
/// the inputs F · x), and W′ is quantized by GPTQ on the uniform grid (<see cref="UniformSchemeGrid"/>; scale fits weighted
/// by diag(H′)) when a Hessian is given, else by plain min/max rounding.
/// </summary>
public static class RotatedQuantizer
{
    /// <summary>Every row of <paramref name="weights"/> ([rows, rotation.Columns]) transformed: row r ← F · row r.</summary>
    public static float[] RotateRows(ReadOnlySpan<float> weights, int rows, RandomizedHadamard rotation)
    {
        ArgumentNullException.ThrowIfNull(rotation);
        int n = rotation.Columns;
        if (weights.Length != (long)rows * n)
            throw new ArgumentException($"{weights.Length} values are not {rows} rows of {n}", nameof(weights));
        var rotated = new float[weights.Length];
        for (int r = 0; r < rows; r++)
            rotation.Forward(weights.Slice(r * n, n), rotated.AsSpan(r * n, n));
        return rotated;
    }

    /// <summary>H′ = F · H · Fᵀ for a symmetric [n, n] <paramref name="hessian"/> (in binary64): F applied to every
    /// row, then to every column.</summary>
    public static double[] RotateHessian(ReadOnlySpan<double> hessian, RandomizedHadamard rotation)
    {
        ArgumentNullException.ThrowIfNull(rotation);
        int n = rotation.Columns;
        if (hessian.Length != (long)n * n)
            throw new ArgumentException($"a Hessian for {n} columns has {(long)n * n} values, not {hessian.Length}", nameof(hessian));
        var rows = new double[hessian.Length]; // H · Fᵀ: row i = F · H[i, :]
        for (int i = 0; i < n; i++)
            rotation.Forward(hessian.Slice(i * n, n), rows.AsSpan(i * n, n));
        var column = new double[n];
        var rotatedColumn = new double[n];
        var result = new double[hessian.Length];
        for (int j = 0; j < n; j++)
        {
            for (int i = 0; i < n; i++)
                column[i] = rows[i * n + j];
            rotation.Forward<double>(column, rotatedColumn);
            for (int i = 0; i < n; i++)
                result[i * n + j] = rotatedColumn[i];
        }
        return result;
    }

    /// <summary>
    /// <paramref name="weights"/> ([rows, columns]) in <paramref name="scheme"/>: GPTQ on <see cref="UniformSchemeGrid"/>
    /// under <paramref name="hessian"/> ([columns, columns]; scale fits weighted by its diagonal) with
    /// <paramref name="options"/>' damping, activation order, refinement and threads; plain rounding when
    /// <paramref name="hessian"/> is empty.
    /// </summary>
    public static UniformWeight QuantizeUniform(string name, ReadOnlySpan<float> weights, int rows, int columns, UniformScheme scheme,
        ReadOnlySpan<double> hessian, GptqOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        if (hessian.IsEmpty)
            return UniformWeight.Encode(name, weights, rows, columns, scheme);
        var grid = new UniformSchemeGrid(scheme);
        var result = Gptq.Quantize(weights, rows, columns, hessian, grid, (options ?? new GptqOptions()) with { Importance = null });
        return grid.ToWeight(name, result.Data, rows, columns);
    }

    /// <summary>
    /// <paramref name="weights"/> ([rows, rotation.Columns]) rotated by <paramref name="rotation"/> and quantized as
    /// <see cref="QuantizeUniform"/> does under the rotated Hessian (none when <paramref name="hessian"/> is empty).
    /// </summary>
    public static RotatedWeight Quantize(string name, ReadOnlySpan<float> weights, int rows, UniformScheme scheme, RandomizedHadamard rotation,
        ReadOnlySpan<double> hessian, GptqOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rotation);
        var rotated = RotateRows(weights, rows, rotation);
        var rotatedHessian = hessian.IsEmpty ? [] : RotateHessian(hessian, rotation);
        var inner = QuantizeUniform(name, rotated, rows, rotation.Columns, scheme, rotatedHessian, options);
        return new RotatedWeight(rotation, inner);
    }
}

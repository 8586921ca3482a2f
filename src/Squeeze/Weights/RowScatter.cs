namespace Squeeze.Weights;

/// <summary>The outputs of a product over some of a weight's rows, put in their places of the full output.</summary>
internal static class RowScatter
{
    /// <summary><c>y[t, rows[k]] = outputs[t, k]</c> for every token t; <paramref name="y"/> is [tokens, <paramref name="width"/>].</summary>
    public static void Scatter(ReadOnlySpan<float> outputs, int tokens, ReadOnlySpan<int> rows, Span<float> y, int width)
    {
        int n = rows.Length;
        for (int t = 0; t < tokens; t++)
        {
            var yt = y.Slice(t * width, width);
            var ot = outputs.Slice(t * n, n);
            for (int k = 0; k < n; k++)
                yt[rows[k]] = ot[k];
        }
    }
}

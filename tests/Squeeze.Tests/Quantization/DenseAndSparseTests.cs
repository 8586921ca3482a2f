using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Quantization;

public sealed class DenseAndSparseTests
{
    private const int Rows = 32, Columns = 128;

    // Gaussian weights with a few planted large ones.
    private static (float[] Weights, HashSet<int> Planted) Layer(int seed)
    {
        var random = new Random(seed);
        var w = new float[Rows * Columns];
        for (int i = 0; i < w.Length; i++)
            w[i] = (float)(0.02 * GptqTests.Gaussian(random));
        var planted = new HashSet<int>();
        while (planted.Count < 20)
            planted.Add(random.Next(w.Length));
        foreach (int i in planted)
            w[i] = (random.Next(2) == 0 ? -1 : 1) * (0.3f + (float)random.NextDouble());
        return (w, planted);
    }

    private static DenseAndSparse.DenseEncoder Codebook(int bits, int group) => DenseAndSparse.CodebookEncoder(bits, group);

    private static float[] Sum(LinearWeight a, LinearWeight b)
    {
        var x = a.Decode();
        var y = b.Decode();
        for (int i = 0; i < x.Length; i++)
            x[i] += y[i];
        return x;
    }

    private static double Error(float[] a, float[] b) => a.Zip(b, (p, q) => ((double)p - q) * ((double)p - q)).Sum();

    [Theory]
    [InlineData(OutlierCriterion.Magnitude)]
    [InlineData(OutlierCriterion.Error)]
    public void Outliers_are_kept_to_f16_and_the_dense_part_fits_the_rest_better(OutlierCriterion criterion)
    {
        var (w, planted) = Layer(3);
        double fraction = 0.01;
        var (dense, sparse) = DenseAndSparse.Encode("w", w, Rows, Columns, default, fraction, criterion, Codebook(3, 64));
        Assert.Equal((int)Math.Round(fraction * w.Length), sparse.NonZeros);
        var sum = Sum(dense, sparse);
        var outliers = new HashSet<int>();
        for (int r = 0; r < Rows; r++)
        {
            for (int j = sparse.RowOffsets[r]; j < sparse.RowOffsets[r + 1]; j++)
                outliers.Add(r * Columns + sparse.ColumnIndices[j]);
        }
        foreach (int i in outliers)
            Assert.True(Math.Abs(sum[i] - w[i]) <= Math.Abs(w[i]) / 1024 + 1e-6, $"outlier {i}: {sum[i]} for {w[i]}");
        // The planted weights have the largest magnitudes (a codebook gives them entries of their own, so their error is small).
        if (criterion == OutlierCriterion.Magnitude)
            Assert.Subset(outliers, planted);
        var plain = CodebookQuantizer.Quantize("w", w, Rows, Columns, default, 3, 64).Decode();
        // Named limit: 1% outliers must cut the squared error to this fraction at least (measured 0.57 by magnitude, 0.75 by error).
        const double Limit = 0.85;
        Assert.True(Error(w, sum) < Limit * Error(w, plain), $"with outliers {Error(w, sum):E3}, without {Error(w, plain):E3}");
    }

    [Fact]
    public void Importance_ranks_weights_in_important_columns_first_and_fraction_zero_keeps_none()
    {
        var random = new Random(5);
        var w = new float[Rows * Columns];
        for (int i = 0; i < w.Length; i++)
            w[i] = (float)(0.02 * GptqTests.Gaussian(random));
        var importance = new float[Columns];
        Array.Fill(importance, 1f);
        importance[17] = 1e6f;
        var (_, sparse) = DenseAndSparse.Encode("w", w, Rows, Columns, importance, 1.0 / w.Length * Rows, OutlierCriterion.Magnitude, Codebook(2, 32));
        Assert.Equal(Rows, sparse.NonZeros);
        Assert.All(sparse.ColumnIndices.ToArray(), c => Assert.Equal(17, c));
        var (dense, none) = DenseAndSparse.Encode("w", w, Rows, Columns, importance, 0, OutlierCriterion.Error, Codebook(2, 32));
        Assert.Equal(0, none.NonZeros);
        Assert.Equal(CodebookQuantizer.Quantize("w", w, Rows, Columns, importance, 2, 32).Decode(), dense.Decode());
        Assert.Throws<ArgumentOutOfRangeException>(() => DenseAndSparse.Encode("w", w, Rows, Columns, importance, 1, OutlierCriterion.Error, Codebook(2, 32)));
    }

    [Fact]
    public void The_uniform_dense_encoder_is_UniformWeights_encoding_and_outliers_shrink_its_ranges()
    {
        var (w, _) = Layer(8);
        var importance = Enumerable.Range(0, Columns).Select(c => 1f + c % 5).ToArray();
        var scheme = new Squeeze.Weights.UniformScheme(3, 32, symmetric: false);
        var (dense, none) = DenseAndSparse.Encode("w", w, Rows, Columns, importance, 0, OutlierCriterion.Magnitude, DenseAndSparse.UniformEncoder(scheme));
        Assert.Equal(0, none.NonZeros);
        var reference = UniformWeight.Encode("w", w, Rows, Columns, scheme, importance);
        Assert.Equal(reference.Decode(), dense.Decode());
        Assert.Equal(reference.StoredBytes, dense.StoredBytes);
        var (withOutliers, sparse) = DenseAndSparse.Encode("w", w, Rows, Columns, importance, 0.01, OutlierCriterion.Magnitude, DenseAndSparse.UniformEncoder(scheme));
        Assert.True(Error(w, Sum(withOutliers, sparse)) < 0.5 * Error(w, dense.Decode()));
    }
}

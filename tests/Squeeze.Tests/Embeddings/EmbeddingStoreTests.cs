using Squeeze.Embeddings;
using Squeeze.Tensors;

namespace Squeeze.Tests.Embeddings;

/// <summary>Compressed embedding stores on synthetic clustered unit vectors (64 dimensions): recall against exact
/// search, bytes, round trips through the file, refusals.</summary>
public sealed class EmbeddingStoreTests : IDisposable
{
    private const int Dim = 64;
    private readonly string directory = Directory.CreateTempSubdirectory("squeeze-embeddings-").FullName;

    public void Dispose() => Directory.Delete(directory, recursive: true);

    /// <summary>[count, Dim] unit vectors with a decaying spectrum, as real embeddings have: a fixed random mixing of
    /// independent Gaussian factors whose deviations fall as (j + 1)^−0.8, plus a fixed offset (real embeddings are not
    /// centred).</summary>
    internal static float[] Clustered(int count, int seed)
    {
        var fixedRandom = new Random(7);
        var mixing = new float[Dim * Dim];
        for (int i = 0; i < mixing.Length; i++)
            mixing[i] = (float)Gaussian(fixedRandom);
        var offset = Enumerable.Range(0, Dim).Select(_ => 0.05f * (float)Gaussian(fixedRandom)).ToArray();
        var random = new Random(seed);
        var vectors = new float[count * Dim];
        var factors = new float[Dim];
        for (int i = 0; i < count; i++)
        {
            for (int j = 0; j < Dim; j++)
                factors[j] = (float)(Gaussian(random) * Math.Pow(j + 1, -0.8));
            var row = vectors.AsSpan(i * Dim, Dim);
            for (int d = 0; d < Dim; d++)
                row[d] = offset[d] + System.Numerics.Tensors.TensorPrimitives.Dot(mixing.AsSpan(d * Dim, Dim), factors) / MathF.Sqrt(Dim);
            float norm = System.Numerics.Tensors.TensorPrimitives.Norm(row);
            System.Numerics.Tensors.TensorPrimitives.Divide(row, norm, row);
        }
        return vectors;
    }

    private static double Gaussian(Random random) => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    [Theory]
    [InlineData("int8", 0.97, 68)]
    [InlineData("binary", 0.4, 8)]
    [InlineData("binary+int8", 0.85, 8)]
    [InlineData("pq:16:6", 0.5, 12)]
    [InlineData("pq:16:8", 0.5, 16)]
    [InlineData("pq:32:3", 0.4, 12)]
    [InlineData("pca:32", 0.8, 128)]
    [InlineData("pca:32+int8", 0.8, 36)]
    public void Each_method_finds_the_exact_neighbours_it_should_in_the_bytes_it_states(string spec, double minRecall, double indexBytes)
    {
        float[] vectors = Clustered(2000, 1), queries = Clustered(40, 2);
        var store = EmbeddingStore.Build(vectors, Dim, EmbeddingMethod.Parse(spec));
        Assert.Equal(spec, store.Method.ToString());
        Assert.Equal(indexBytes, store.IndexBytesPerVector);
        Assert.True(store.StoredBytesPerVector >= store.IndexBytesPerVector);
        var found = store.SearchAll(queries, 10, threads: 2);
        var exact = Enumerable.Range(0, 40).Select(q => EmbeddingVectors.ExactSearch(vectors, Dim, queries.AsSpan(q * Dim, Dim), 10)).ToList();
        double recall = EmbeddingVectors.Recall(found, exact);
        Assert.True(recall >= minRecall, $"{spec}: recall@10 {recall}");
        Assert.True(recall < 1 || spec == "int8", $"{spec}: recall@10 is exactly 1; the test should measure a loss");
        Assert.All(found, r => Assert.Equal(10, r.Length));
        Assert.All(found, r => Assert.True(r.Zip(r.Skip(1)).All(p => p.First.Score >= p.Second.Score), "best first"));

        string path = Path.Combine(directory, "store.sqem");
        store.Save(path);
        Assert.Empty(Directory.EnumerateFiles(directory, "*.tmp"));
        var loaded = EmbeddingStore.Load(path);
        Assert.Equal(store.Method, loaded.Method);
        Assert.Equal(found, loaded.SearchAll(queries, 10, threads: 1));
    }

    [Fact]
    public void Exact_search_is_brute_force_by_inner_product_with_ties_to_the_lower_index()
    {
        float[] vectors = [1, 0, 0, 1, 1, 0, -1, 0, 0.5f, 0.5f];
        var top = EmbeddingVectors.ExactSearch(vectors, 2, [1, 0], 3);
        Assert.Equal([new Neighbor(0, 1), new Neighbor(2, 1), new Neighbor(4, 0.5f)], top);
        Assert.Equal(1.0, EmbeddingVectors.Recall([top], [top]));
        Assert.Equal(2.0 / 3, EmbeddingVectors.Recall([[top[0], top[1], new Neighbor(1, 0)]], [top]), 12);
    }

    [Fact]
    public void A_file_that_is_not_whole_vectors_is_one_line_naming_it()
    {
        string path = Path.Combine(directory, "odd.f32");
        File.WriteAllBytes(path, new byte[4 * 10]);
        var e = Assert.Throws<ModelFormatException>(() => EmbeddingVectors.Read(path, 3));
        Assert.Equal($"{path}: 40 bytes are not a whole number of 3-dimensional f32 vectors (12 bytes each)", e.Message);
        File.WriteAllBytes(path, []);
        Assert.Equal($"{path}: empty: no vectors", Assert.Throws<ModelFormatException>(() => EmbeddingVectors.Read(path, 3)).Message);
    }

    [Fact]
    public void A_corrupt_or_foreign_store_is_refused_and_a_query_of_another_dimension_too()
    {
        var store = EmbeddingStore.Build(Clustered(300, 3), Dim, EmbeddingMethod.Parse("binary+int8"));
        string path = Path.Combine(directory, "s.sqem");
        store.Save(path);
        byte[] bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 1;
        string corrupt = Path.Combine(directory, "corrupt.sqem");
        File.WriteAllBytes(corrupt, bytes);
        Assert.Equal($"{corrupt}: checksum mismatch: the embedding store is truncated or corrupt", Assert.Throws<ModelFormatException>(() => EmbeddingStore.Load(corrupt)).Message);
        string truncated = Path.Combine(directory, "truncated.sqem");
        File.WriteAllBytes(truncated, File.ReadAllBytes(path)[..100]);
        Assert.Equal($"{truncated}: checksum mismatch: the embedding store is truncated or corrupt", Assert.Throws<ModelFormatException>(() => EmbeddingStore.Load(truncated)).Message);
        string vectors = Path.Combine(directory, "v.f32");
        EmbeddingVectors.Write(vectors, Clustered(3, 4));
        Assert.Equal($"{vectors}: not an embedding store (no SQEM magic)", Assert.Throws<ModelFormatException>(() => EmbeddingStore.Load(vectors)).Message);
        var e = Assert.Throws<ArgumentException>(() => store.Search(new float[32], 10));
        Assert.StartsWith("a query of 32 values searches a store of 64-dimensional vectors", e.Message);
    }

    [Theory]
    [InlineData("int4")]
    [InlineData("pq:16")]
    [InlineData("pq:16:9")]
    [InlineData("pca:x")]
    [InlineData("binary:2")]
    public void A_bad_method_is_refused_naming_it(string spec)
    {
        var e = Assert.Throws<ArgumentException>(() => EmbeddingMethod.Parse(spec));
        Assert.Contains($"'{spec}'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Pq_needs_subspaces_that_divide_the_dimension_and_pca_no_more_components_than_it()
    {
        float[] vectors = Clustered(50, 5);
        Assert.Contains("do not divide the dimension 64", Assert.Throws<ArgumentException>(() => EmbeddingStore.Build(vectors, Dim, EmbeddingMethod.Parse("pq:7:4"))).Message);
        Assert.Contains("exceed the dimension 64", Assert.Throws<ArgumentException>(() => EmbeddingStore.Build(vectors, Dim, EmbeddingMethod.Parse("pca:65"))).Message);
    }
}

using Squeeze.Embeddings;
using Squeeze.Tests.Embeddings;

namespace Squeeze.Tests.Cli;

public sealed class EmbeddingsCliTests : IDisposable
{
    private readonly string directory = Directory.CreateTempSubdirectory("squeeze-embeddings-cli-").FullName;

    public void Dispose() => Directory.Delete(directory, recursive: true);

    [Fact]
    public void Compress_then_search_reports_bytes_and_recall_against_exact_search()
    {
        string vectors = Path.Combine(directory, "base.f32"), queries = Path.Combine(directory, "queries.f32"), store = Path.Combine(directory, "base.sqem");
        EmbeddingVectors.Write(vectors, EmbeddingStoreTests.Clustered(1000, 11));
        EmbeddingVectors.Write(queries, EmbeddingStoreTests.Clustered(20, 12));
        var c = CliRunner.Run("embeddings", "compress", vectors, "--dim", "64", "--method", "binary+int8", "-o", store, "--json");
        Assert.True(c.ExitCode == 0, c.Stderr);
        Assert.Equal(8, c.Json.GetProperty("indexBytesPerVector").GetDouble());
        Assert.Equal(1000, c.Json.GetProperty("vectors").GetInt32());
        var s = CliRunner.Run("embeddings", "search", store, queries, "-k", "5", "--exact", vectors, "--json");
        Assert.True(s.ExitCode == 0, s.Stderr);
        Assert.InRange(s.Json.GetProperty("recall").GetDouble(), 0.8, 1);
        Assert.Equal(20, s.Json.GetProperty("results").GetArrayLength());
        var plain = CliRunner.Run("embeddings", "search", store, queries, "-k", "3");
        Assert.True(plain.ExitCode == 0, plain.Stderr);
        Assert.Equal(20, plain.Stdout.Trim().Split('\n').Length);
    }

    [Fact]
    public void Inputs_of_the_wrong_dimension_are_one_line_naming_the_file()
    {
        string vectors = Path.Combine(directory, "base.f32"), store = Path.Combine(directory, "base.sqem"), narrow = Path.Combine(directory, "narrow.f32");
        EmbeddingVectors.Write(vectors, EmbeddingStoreTests.Clustered(100, 13));
        var odd = CliRunner.Run("embeddings", "compress", vectors, "--dim", "60", "-o", store);
        Assert.Equal(1, odd.ExitCode);
        Assert.Equal($"squeeze: error: {vectors}: 25,600 bytes are not a whole number of 60-dimensional f32 vectors (240 bytes each)", odd.Stderr.Trim());
        Assert.Equal(0, CliRunner.Run("embeddings", "compress", vectors, "--dim", "64", "-m", "int8", "-o", store).ExitCode);
        EmbeddingVectors.Write(narrow, new float[3 * 48]);
        var wrong = CliRunner.Run("embeddings", "search", store, narrow);
        Assert.Equal(1, wrong.ExitCode);
        Assert.Equal($"squeeze: error: {narrow}: 576 bytes are not a whole number of 64-dimensional f32 vectors (256 bytes each)", wrong.Stderr.Trim());
        var method = CliRunner.Run("embeddings", "compress", vectors, "--dim", "64", "-m", "pq:5:8", "-o", store);
        Assert.Equal(1, method.ExitCode);
        Assert.Equal("squeeze: error: pq:5:8: 5 sub-vectors do not divide the dimension 64", method.Stderr.Trim());
    }
}

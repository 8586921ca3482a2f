using Squeeze.Formats;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Cli;

public sealed class PruneCliTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-prune-cli-{Guid.NewGuid():N}");

    public PruneCliTests() => Directory.CreateDirectory(root);

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Theory]
    [InlineData("sparsegpt", "2:4", null, typeof(NmSparseWeight))]
    [InlineData("wanda", "unstructured", "0.5", typeof(MaskedSparseWeight))]
    public void Compress_prune_writes_a_sparse_native_directory_that_eval_runs(string method, string pattern, string? sparsity, Type expected)
    {
        string output = Path.Combine(root, method);
        var r = CliRunner.Run(["compress", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--prune", method, "--pattern", pattern,
            .. sparsity is null ? Array.Empty<string>() : ["--sparsity", sparsity], "--format", "native",
            "--calib", SharedData.Corpus("tinystories-calib.txt"), "--tokens", "1024", "--ctx", "64", "-o", output, "--json"]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        long bytes = Directory.EnumerateFiles(output).Sum(f => new FileInfo(f).Length);
        Assert.Equal(bytes, r.Json.GetProperty("fileBytes").GetInt64());
        Assert.Equal(1024, r.Json.GetProperty("calibrationTokens").GetInt64());

        using (var source = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer))
        using (var pruned = ModelLoader.Load(output))
        {
            // every block's linear weights hold half their values, the embedding is the source's
            foreach (var t in r.Json.GetProperty("tensors").EnumerateArray())
            {
                var weight = pruned.Weight(t.GetProperty("name").GetString()!);
                Assert.IsType(expected, weight);
                Assert.Equal(weight.Rows * weight.Columns / 2, weight.Decode().Count(v => v != 0), 2.0 * weight.Rows);
            }
            Assert.Equal(7 * source.Config.LayerCount, r.Json.GetProperty("tensors").GetArrayLength());
            Assert.Equal(source.Weight("token_embd.weight").Decode(), pruned.Weight("token_embd.weight").Decode());
        }

        var eval = CliRunner.Run("eval", output, "--text", SharedData.Corpus("tinystories-eval.txt"), "--ctx", "64", "--chunks", "2",
            "--base", SharedData.Stories260K, "--json");
        Assert.True(eval.ExitCode == 0, eval.Stderr);
        Assert.Equal(bytes, eval.Json.GetProperty("modelBytes").GetInt64());
        double kld = eval.Json.GetProperty("result").GetProperty("klDivergence").GetProperty("mean").GetDouble();
        Assert.True(kld > 0 && double.IsFinite(kld), $"KLD {kld}");
    }

    [Fact]
    public void Structured_magnitude_pruning_needs_no_calibration_and_bad_requests_are_one_line_errors()
    {
        string heads = Path.Combine(root, "heads");
        var r = CliRunner.Run("compress", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--prune", "magnitude", "--pattern", "heads",
            "--sparsity", "0.5", "--format", "native", "-o", heads, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(0, r.Json.GetProperty("calibrationTokens").GetInt64());
        using (var pruned = ModelLoader.Load(heads))
            Assert.IsType<StructuredSparseWeight>(pruned.Weight("blk.0.attn_output.weight"));

        string[] model = [SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer];
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--prune", "magnitude", "-o", Path.Combine(root, "x.gguf")], "--prune writes sparse tensors, which GGUF cannot hold: add --format native"),
            (["--prune", "wanda", "--format", "native", "-o", Path.Combine(root, "w")], "--prune wanda needs a calibration text (--calib FILE) or statistics (--stats FILE)"),
            (["--prune", "lottery", "--format", "native", "-o", Path.Combine(root, "l")], "--prune lottery: expected magnitude, wanda or sparsegpt"),
            (["--prune", "magnitude", "--pattern", "2:4", "--sparsity", "0.3", "--format", "native", "-o", Path.Combine(root, "n")], "give no sparsity with it"),
            (["--prune", "magnitude", "--pattern", "rows", "--format", "native", "-o", Path.Combine(root, "r")], "--pattern pattern 'rows' is not one of unstructured, N:M (e.g. 2:4), heads or ffn"),
            (["--prune", "magnitude", "--sparsity", "1.5", "--format", "native", "-o", Path.Combine(root, "s")], "sparsity 1.5 must be a fraction between 0 and 1"),
            (["--prune", "magnitude", "--format", "native", "--target-bpw", "4", "-o", Path.Combine(root, "t")], "--prune does not take a size target"),
            (["--sparsity", "0.5", "-o", Path.Combine(root, "u.gguf")], "--sparsity and --pattern say how --prune prunes"),
            (["--prune", "magnitude", "--format", "native", "-o", heads], "already exists and is not empty"),
        })
        {
            var bad = CliRunner.Run(["compress", .. model, .. args]);
            Assert.Equal(1, bad.ExitCode);
            Assert.Contains(message, bad.Stderr, StringComparison.Ordinal);
            Assert.Single(bad.Stderr.Trim().Split('\n'));
        }
        Assert.Equal(["heads"], Directory.EnumerateFileSystemEntries(root).Select(Path.GetFileName));
    }
}

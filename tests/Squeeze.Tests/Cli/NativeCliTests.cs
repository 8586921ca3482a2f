using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Cli;

public sealed class NativeCliTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-native-cli-{Guid.NewGuid():N}");

    public NativeCliTests() => Directory.CreateDirectory(root);

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public void Compress_to_a_native_budget_writes_a_directory_that_inspect_and_eval_run()
    {
        string output = Path.Combine(root, "model");
        var r = CliRunner.Run("compress", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--format", "native",
            "--target-bpw", "10", "--calib", SharedData.Corpus("tinystories-calib.txt"), "--tokens", "1024", "--ctx", "64", "--refine", "0",
            "--representation", "uniform:3:~64", "--representation", "uniform:8:32", "--representation", "f16", "-o", output, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        long bytes = Directory.EnumerateFiles(output).Sum(f => new FileInfo(f).Length);
        var report = r.Json;
        Assert.Equal(bytes, report.GetProperty("fileBytes").GetInt64());
        Assert.True(bytes <= report.GetProperty("budget").GetInt64());
        Assert.Contains(report.GetProperty("tensors").EnumerateArray(), t => t.GetProperty("format").GetString()!.StartsWith("uniform", StringComparison.Ordinal));

        var inspect = CliRunner.Run("inspect", output, "--json");
        Assert.True(inspect.ExitCode == 0, inspect.Stderr);
        Assert.Contains(inspect.Json.GetProperty("tensors").EnumerateArray(), t => t.GetProperty("type").GetString()!.StartsWith("uniform b", StringComparison.Ordinal));

        var eval = CliRunner.Run("eval", output, "--text", SharedData.Corpus("tinystories-eval.txt"), "--ctx", "64", "--chunks", "2",
            "--base", SharedData.Stories260K, "--json");
        Assert.True(eval.ExitCode == 0, eval.Stderr);
        // The size eval reports is the directory's, as the budget counts it; the weights alone are less.
        Assert.Equal(bytes, eval.Json.GetProperty("modelBytes").GetInt64());
        Assert.InRange(eval.Json.GetProperty("tensorBytes").GetInt64(), 1, bytes - 1);
    }

    [Fact]
    public void Native_options_without_a_budget_or_with_a_bad_representation_are_one_line_errors()
    {
        var noBudget = CliRunner.Run("compress", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--format", "native",
            "--calib", SharedData.Corpus("tinystories-calib.txt"), "-o", Path.Combine(root, "x"));
        Assert.Equal(1, noBudget.ExitCode);
        Assert.Contains("give --target-bpw or --target-size", noBudget.Stderr, StringComparison.Ordinal);
        var bad = CliRunner.Run("compress", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--format", "native", "--target-bpw", "4",
            "--representation", "lattice:3", "--calib", SharedData.Corpus("tinystories-calib.txt"), "-o", Path.Combine(root, "y"));
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("--representation representation 'lattice:3'", bad.Stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(root, "y")));
    }

    [Theory]
    [InlineData("native")]
    [InlineData("gguf")]
    public void Compress_with_tune_writes_the_tuned_model_at_the_same_size(string format)
    {
        string output = Path.Combine(root, format == "native" ? "tuned-5.0" : "tuned.gguf");
        string[] representations = format == "native" ? ["--representation", "uniform:3:~64", "--representation", "uniform:4:~64", "--representation", "f16"] : [];
        var r = CliRunner.Run(["compress", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--format", format,
            "--target-bpw", format == "native" ? "5" : "9", "--calib", SharedData.Corpus("tinystories-calib.txt"), "--tokens", "1024", "--ctx", "64", "--refine", "0",
            .. representations, "--tune", "--tune-samples", "2048", "--tune-epochs", "1", "--tune-lr", "0.002", "-o", output, "--json"]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        long bytes = format == "native" ? Directory.EnumerateFiles(output).Sum(f => new FileInfo(f).Length) : new FileInfo(output).Length;
        Assert.Equal(bytes, r.Json.GetProperty("fileBytes").GetInt64());
        Assert.Equal(format == "native" ? output + ".bits.png" : Path.Combine(root, "tuned.bits.png"), r.Json.GetProperty("chart").GetString());
        Assert.True(File.Exists(r.Json.GetProperty("chart").GetString()));
        var tuning = r.Json.GetProperty("tuning");
        Assert.Equal(format == "native" ? "norms and weights" : "norms", tuning.GetProperty("scope").GetString());
        Assert.Equal(1024 + 2048, tuning.GetProperty("trainingTokens").GetInt64());
        Assert.True(tuning.GetProperty("heldOutKldAfter").GetDouble() <= tuning.GetProperty("heldOutKldBefore").GetDouble());

        var eval = CliRunner.Run("eval", output, "--text", SharedData.Corpus("tinystories-eval.txt"), "--ctx", "64", "--chunks", "2",
            "--base", SharedData.Stories260K, "--json");
        Assert.True(eval.ExitCode == 0, eval.Stderr);

        var noTarget = CliRunner.Run("compress", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--tune",
            "--calib", SharedData.Corpus("tinystories-calib.txt"), "-o", Path.Combine(root, "z.gguf"));
        Assert.Equal(1, noTarget.ExitCode);
        Assert.Contains("--tune tunes what a size target chose", noTarget.Stderr, StringComparison.Ordinal);

        var noStep = CliRunner.Run("compress", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--target-bpw", "9", "--tune", "--tune-lr", "0",
            "--calib", SharedData.Corpus("tinystories-calib.txt"), "-o", Path.Combine(root, "z.gguf"));
        Assert.Equal(1, noStep.ExitCode);
        Assert.Contains("--tune-lr 0 must be positive", noStep.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(root, "z.gguf")));
    }
}

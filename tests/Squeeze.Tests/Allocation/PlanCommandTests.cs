using System.Text.Json;
using Squeeze.Formats;
using Squeeze.Tests.Cli;
using Squeeze.Tests.Compression;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Allocation;

public sealed class PlanCommandTests
{
    [Fact]
    public void Compress_to_a_bits_per_weight_target_writes_a_file_within_budget_with_a_chart()
    {
        string calib = CompressorTests.TempPath("calib.txt"), output = CompressorTests.TempPath("out.gguf"), chart = CompressorTests.TempPath("bits.png");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        try
        {
            var result = CliRunner.Run("compress", SharedData.Stories260K, "--target-bpw", "8", "--calib", calib, "-o", output, "--chart", chart,
                "--tokens", "1024", "--ctx", "64", "--threads", "2", "--json");
            Assert.True(result.ExitCode == 0, result.Stderr);
            var json = result.Json;
            long parameters = json.GetProperty("parameters").GetInt64();
            long budget = json.GetProperty("budget").GetInt64();
            Assert.Equal((long)Math.Floor(8.0 * parameters / 8), budget);
            long length = new FileInfo(output).Length;
            Assert.Equal(length, json.GetProperty("fileBytes").GetInt64());
            Assert.True(length <= budget, $"{length} bytes over the budget of {budget}");
            Assert.True(8.0 * length / parameters <= 8);
            using var model = ModelLoader.Load(output);
            var tensors = json.GetProperty("tensors").EnumerateArray().ToList();
            foreach (var t in tensors)
                Assert.Equal(t.GetProperty("format").GetString(), model[t.GetProperty("name").GetString()!].Type.ToString());
            // More than one type: the budget sits between the uniform mixes.
            Assert.True(tensors.Select(t => t.GetProperty("format").GetString()).Distinct().Count() > 1);
            CompressorTests.AssertFinite(model);
            byte[] png = File.ReadAllBytes(chart);
            Assert.True(png.Length > 1000 && png[1] == 'P' && png[2] == 'N' && png[3] == 'G', "the chart is not a PNG");
        }
        finally
        {
            File.Delete(calib);
            File.Delete(output);
            File.Delete(chart);
        }
    }

    [Fact]
    public void Plan_saves_the_assignment_without_writing_weights_and_evo_is_reproducible()
    {
        string calib = CompressorTests.TempPath("calib.txt"), first = CompressorTests.TempPath("plan1.json"), second = CompressorTests.TempPath("plan2.json");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        try
        {
            string[] Args(string output) => ["plan", SharedData.Stories260K, "--target-bpw", "8.5", "--calib", calib, "-o", output, "--search", "evo",
                "--generations", "3", "--seed", "7", "--tokens", "1024", "--ctx", "64", "--threads", "2"];
            var result = CliRunner.Run(Args(first));
            Assert.True(result.ExitCode == 0, result.Stderr);
            Assert.Contains("plan saved to", result.Stdout, StringComparison.Ordinal);
            Assert.Contains("evolution: calibration KLD", result.Stdout, StringComparison.Ordinal);
            Assert.True(CliRunner.Run(Args(second)).ExitCode == 0);
            using var a = JsonDocument.Parse(File.ReadAllText(first));
            using var b = JsonDocument.Parse(File.ReadAllText(second));
            Assert.False(a.RootElement.TryGetProperty("output", out _), "a plan writes no weights");
            long budget = a.RootElement.GetProperty("budget").GetInt64();
            Assert.Equal((long)Math.Floor(8.5 * a.RootElement.GetProperty("parameters").GetInt64() / 8), budget);
            Assert.True(a.RootElement.GetProperty("fileBytes").GetInt64() <= budget);
            Assert.Equal(Types(a), Types(b));
            Assert.Equal(a.RootElement.GetProperty("searchKld").GetDouble(), b.RootElement.GetProperty("searchKld").GetDouble());
            File.Delete(Path.ChangeExtension(first, ".bits.png"));
            File.Delete(Path.ChangeExtension(second, ".bits.png"));
        }
        finally
        {
            File.Delete(calib);
            File.Delete(first);
            File.Delete(second);
        }
    }

    [Theory]
    [InlineData("--target-size", "10KB", "below the smallest file this model can take")]
    [InlineData("--target-bpw", "0", "must be a positive number")]
    [InlineData("--target-size", "3 parsecs", "unknown unit")]
    public void Bad_budgets_fail_in_one_line_before_any_work(string option, string value, string message)
    {
        string output = CompressorTests.TempPath("never.gguf");
        var result = CliRunner.Run("compress", SharedData.Stories260K, option, value, "--calib", SharedData.Corpus("tinystories-calib.txt"), "-o", output);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains(message, result.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(output));
    }

    [Fact]
    public void Both_targets_at_once_are_refused()
    {
        var result = CliRunner.Run("plan", SharedData.Stories260K, "--target-bpw", "5", "--target-size", "1MB", "--calib", SharedData.Corpus("tinystories-calib.txt"), "-o",
            CompressorTests.TempPath("plan.json"));
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("exactly one budget", result.Stderr, StringComparison.Ordinal);
    }

    private static string[] Types(JsonDocument plan) => plan.RootElement.GetProperty("tensors").EnumerateArray().Select(t => t.GetProperty("format").GetString()!).ToArray();
}

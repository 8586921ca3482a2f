using System.Text;
using Squeeze.Calibration;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Tests.Cli;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Compression;

public sealed class CompressCommandTests
{
    [Fact]
    public void Compress_json_reports_every_tensor_and_the_file_loads()
    {
        string calib = CompressorTests.TempPath("calib.txt"), output = CompressorTests.TempPath("out.gguf");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        try
        {
            var result = CliRunner.Run("compress", SharedData.Stories260K, "--type", "Q4_0", "--calib", calib, "-o", output, "--method", "gptq",
                "--tokens", "1024", "--ctx", "128", "--threads", "2", "--json");
            Assert.True(result.ExitCode == 0, result.Stderr);
            var json = result.Json;
            Assert.Equal("Gptq", json.GetProperty("method").GetString());
            Assert.Equal("Q4_0", json.GetProperty("target").GetString());
            Assert.Equal(1024, json.GetProperty("calibrationTokens").GetInt64());
            Assert.Equal(new FileInfo(output).Length, json.GetProperty("fileBytes").GetInt64());
            var tensors = json.GetProperty("tensors").EnumerateArray().ToList();
            using var model = ModelLoader.Load(output);
            Assert.Equal(model.Tensors.Select(t => t.Name), tensors.Select(t => t.GetProperty("name").GetString()));
            Assert.Contains(tensors, t => t.GetProperty("encoding").GetString() == "gptq" && t.GetProperty("format").GetString() == "Q4_0");
            Assert.All(tensors, t => Assert.True(double.IsFinite(t.GetProperty("errorAfter").GetDouble())));
            CompressorTests.AssertFinite(model);
        }
        finally
        {
            File.Delete(calib);
            File.Delete(output);
        }
    }

    /// <summary>A named mix and a size target alike: a memory limit below the job's estimate is one line before any work,
    /// with no output.</summary>
    [Theory]
    [InlineData("--type", "Q4_0")]
    [InlineData("--target-bpw", "12")]
    public void A_memory_limit_below_the_estimate_is_one_line_before_any_work(string target, string value)
    {
        string calib = CompressorTests.TempPath($"calib{value}.txt"), output = CompressorTests.TempPath($"limited{value}.gguf");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        try
        {
            var refused = CliRunner.Run("compress", SharedData.Stories260K, target, value, "--calib", calib, "-o", output, "--tokens", "1024", "--ctx", "128",
                "--memory-limit", "2MiB");
            Assert.Equal(1, refused.ExitCode);
            string line = Assert.Single(refused.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("squeeze:", StringComparison.Ordinal));
            Assert.Contains(": the job needs about ", line);
            Assert.Contains("more than the limit of 2 MiB; use fewer calibration tokens than 1,024", line);
            // A size target's estimate is stage by stage: the line names the stage of the peak.
            if (target == "--target-bpw")
                Assert.Matches(@"of memory in its (calibrating and encoding layer by layer|measuring|searching|writing) stage \(", line);
            Assert.False(File.Exists(output));
        }
        finally
        {
            File.Delete(calib);
        }
    }

    /// <summary>A native size target is estimated before any work like a GGUF one: refused in one line under a limit
    /// below its estimate, run under one above it, with the estimate in the JSON.</summary>
    [Fact]
    public void A_native_size_target_is_refused_below_its_memory_estimate_and_runs_above_it()
    {
        string output = CompressorTests.TempPath("limited-native");
        string[] job = ["compress", SharedData.Stories260K, "--format", "native", "--target-bpw", "5", "--calib", SharedData.Corpus("tinystories-calib.txt"), "-o", output,
            "--tokens", "1024", "--ctx", "64", "--method", "imatrix", "--representation", "uniform:3:~64", "--representation", "uniform:6:~64", "--representation", "f16"];
        try
        {
            var refused = CliRunner.Run([.. job, "--memory-limit", "2MiB"]);
            Assert.Equal(1, refused.ExitCode);
            string line = Assert.Single(refused.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("squeeze:", StringComparison.Ordinal));
            Assert.Contains(": the job needs about ", line);
            Assert.Contains("more than the limit of 2 MiB; use fewer calibration tokens than 1,024, or fewer representations", line);
            Assert.False(Directory.Exists(output));

            var result = CliRunner.Run([.. job, "--memory-limit", "4GiB", "--json"]);
            Assert.True(result.ExitCode == 0, result.Stderr);
            long estimate = result.Json.GetProperty("estimatedMemoryBytes").GetInt64();
            Assert.InRange(estimate, 1L << 20, 4L << 30);
            var stages = result.Json.GetProperty("estimatedStages").EnumerateArray().ToList();
            Assert.Equal(["calibrating and encoding layer by layer", "measuring", "searching", "writing"], stages.Select(s => s.GetProperty("stage").GetString()));
            Assert.Equal(estimate, stages.Max(s => s.GetProperty("bytes").GetInt64()));
            Assert.True(Directory.Exists(output));
        }
        finally
        {
            if (Directory.Exists(output))
                Directory.Delete(output, recursive: true);
        }
    }

    [Fact]
    public void Under_a_memory_limit_that_fits_the_job_runs_and_the_json_has_every_layers_time()
    {
        string calib = CompressorTests.TempPath("calib.txt"), output = CompressorTests.TempPath("limited.gguf");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        try
        {
            var result = CliRunner.Run("compress", SharedData.Stories260K, "--type", "Q4_0", "--calib", calib, "-o", output, "--tokens", "1024", "--ctx", "128",
                "--memory-limit", "4GiB", "--method", "imatrix", "--json");
            Assert.True(result.ExitCode == 0, result.Stderr);
            var layers = result.Json.GetProperty("layerSeconds").EnumerateArray().Select(e => e.GetDouble()).ToList();
            Assert.Equal(5, layers.Count);
            Assert.All(layers, s => Assert.True(s > 0));
        }
        finally
        {
            File.Delete(calib);
            File.Delete(output);
        }
    }

    [Fact]
    public void Compress_reuses_a_stats_file_of_the_same_model()
    {
        string stats = CompressorTests.TempPath("same.stats"), output = CompressorTests.TempPath("out.gguf");
        using (var model = Llama2cReader.Load(SharedData.Stories260K))
        {
            CalibrationFile.Write(stats, Calibrator.Run(model, CompressorTests.CalibrationText,
                new CalibrationOptions { ContextLength = 128, MaxTokens = 1024, CollectGram = true, Threads = 2 }));
        }
        try
        {
            var result = CliRunner.Run("compress", SharedData.Stories260K, "--type", "Q4_K_M", "--stats", stats, "-o", output, "--method", "gptq", "--json");
            Assert.True(result.ExitCode == 0, result.Stderr);
            Assert.Equal(0, result.Json.GetProperty("calibrationPasses").GetInt32());
            Assert.Contains(result.Json.GetProperty("tensors").EnumerateArray(), t => t.GetProperty("encoding").GetString() == "gptq");
            using var written = ModelLoader.Load(output);
            CompressorTests.AssertFinite(written);
        }
        finally
        {
            File.Delete(stats);
            File.Delete(output);
        }
    }

    [Theory]
    [InlineData("empty", "empty")]
    [InlineData("binary", "binary")]
    [InlineData("latin1", "not valid UTF-8")]
    [InlineData("short", "fewer than one chunk")]
    public void Bad_calibration_texts_fail_with_one_clear_line_and_no_file(string kind, string expected)
    {
        string calib = CompressorTests.TempPath("calib.txt"), output = CompressorTests.TempPath("out.gguf");
        byte[] content = kind switch
        {
            "empty" => [],
            "binary" => [0x7F, 0x45, 0x4C, 0x46, 0, 0, 0, 1, 2, 3, 0, 0],
            "latin1" => Encoding.Latin1.GetBytes("Once upon a time, a café in Zürich. "),
            _ => Encoding.UTF8.GetBytes("Once upon a time there was a cat."),
        };
        File.WriteAllBytes(calib, content);
        try
        {
            var result = CliRunner.Run("compress", SharedData.Stories260K, "--type", "Q4_0", "--calib", calib, "-o", output, "--method", "imatrix", "--ctx", "128");
            Assert.Equal(1, result.ExitCode);
            string line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("squeeze: error:", StringComparison.Ordinal));
            Assert.Contains(expected, line, StringComparison.Ordinal);
            Assert.False(File.Exists(output));
        }
        finally
        {
            File.Delete(calib);
        }
    }

    [Fact]
    public void A_stats_file_of_another_model_and_a_missing_output_directory_are_clear_errors()
    {
        string stats = CompressorTests.TempPath("other.stats"), output = CompressorTests.TempPath("out.gguf");
        using (var model = Llama2cReader.Load(SharedData.Stories260K))
        {
            var collected = Calibrator.Run(model, CompressorTests.CalibrationText, new CalibrationOptions { ContextLength = 64, MaxTokens = 128, CollectGram = true, Threads = 1 });
            CalibrationFile.Write(stats, new CalibrationStatistics(new ModelIdentity(collected.Model.Hash + 1, "stories-other.bin"), collected.TextHash,
                collected.TokenCount, collected.ContextLength, collected.Entries));
        }
        try
        {
            var result = CliRunner.Run("compress", SharedData.Stories260K, "--type", "Q4_0", "--stats", stats, "-o", output, "--method", "gptq");
            Assert.Equal(1, result.ExitCode);
            Assert.Contains("stories-other.bin", result.Stderr, StringComparison.Ordinal);
            Assert.False(File.Exists(output));

            string missing = Path.Combine(CompressorTests.TempPath("no-such-dir"), "out.gguf");
            result = CliRunner.Run("compress", SharedData.Stories260K, "--type", "Q4_0", "-o", missing, "--method", "rtn");
            Assert.Equal(1, result.ExitCode);
            Assert.Contains("does not exist", result.Stderr, StringComparison.Ordinal);
            Assert.False(Directory.Exists(Path.GetDirectoryName(missing)));
        }
        finally
        {
            File.Delete(stats);
        }
    }
}

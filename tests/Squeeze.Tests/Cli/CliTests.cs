using System.Text.Json;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Cli;

public class CliTests
{
    [Fact]
    public void Inspect_reports_architecture_and_tensors_as_json()
    {
        var r = CliRunner.Run("inspect", SharedData.Stories260K, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json;
        Assert.Equal(64, json.GetProperty("config").GetProperty("dim").GetInt32());
        Assert.Equal(4, json.GetProperty("config").GetProperty("kvHeadCount").GetInt32());
        Assert.Equal(512, json.GetProperty("vocabularySize").GetInt32());
        var tensors = json.GetProperty("tensors");
        Assert.Contains(tensors.EnumerateArray(), t => t.GetProperty("name").GetString() == "blk.4.ffn_down.weight" && t.GetProperty("type").GetString() == "F32");
        Assert.Equal(32.0, json.GetProperty("bitsPerWeight").GetDouble(), 6);
    }

    [Fact]
    public void Inspect_prints_a_table_for_people()
    {
        var r = CliRunner.Run("inspect", SharedData.Golden("stories15M-Q4_K_M-imatrix.gguf"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("blk.0.ffn_down.weight", r.Stdout);
        Assert.Contains("Q4_K", r.Stdout);
        Assert.Contains("bits per weight", r.Stdout);
    }

    [Fact]
    public void Eval_with_a_base_model_reports_perplexity_and_kld_as_json()
    {
        var r = CliRunner.Run("eval", SharedData.Golden("stories260K-f32.gguf"), "--text", SharedData.Corpus("tinystories-eval.txt"),
            "--ctx", "128", "--chunks", "3", "--base", SharedData.Stories260K, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var result = r.Json.GetProperty("result");
        Assert.Equal(3, result.GetProperty("chunks").GetInt32());
        Assert.Equal(3 * 63, result.GetProperty("scoredTokens").GetInt32());
        double perplexity = result.GetProperty("perplexity").GetDouble();
        Assert.InRange(perplexity, 1.0, 100.0);
        // The same weights in two formats: no divergence.
        Assert.InRange(result.GetProperty("klDivergence").GetProperty("mean").GetDouble(), 0.0, 1e-9);
        Assert.Equal(perplexity, result.GetProperty("klDivergence").GetProperty("basePerplexity").GetDouble(), 9);
        Assert.InRange(result.GetProperty("bitsPerByte").GetDouble(), 0.1, 4.0);
        Assert.Equal(new FileInfo(SharedData.Golden("stories260K-f32.gguf")).Length, r.Json.GetProperty("modelBytes").GetInt64());
    }

    [Fact]
    public void Greedy_generate_is_deterministic_and_continues_the_prompt()
    {
        var a = CliRunner.Run("generate", SharedData.Stories260K, "--prompt", "Once upon a time", "--temp", "0", "-n", "30", "--json");
        var b = CliRunner.Run("generate", SharedData.Stories260K, "--prompt", "Once upon a time", "--temp", "0", "-n", "30", "--json");
        Assert.True(a.ExitCode == 0, a.Stderr);
        string text = a.Json.GetProperty("text").GetString()!;
        Assert.StartsWith("Once upon a time", text);
        Assert.True(text.Length > "Once upon a time".Length + 20, text);
        Assert.Equal(text, b.Json.GetProperty("text").GetString());
    }

    [Fact]
    public void Truncated_model_is_a_one_line_error_naming_the_file()
    {
        using var temp = new TempDirectory();
        string path = temp.File("truncated.gguf");
        var bytes = File.ReadAllBytes(SharedData.Golden("stories260K-f32.gguf"));
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var r = CliRunner.Run("inspect", path);
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("squeeze: error: ", r.Stderr);
        Assert.Contains(path, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Theory]
    [InlineData("Q4_K_M", "Q4_K")]
    [InlineData("Q3_K_M", "Q3_K")]
    [InlineData("IQ4_NL", "IQ4_NL")]
    public void Convert_with_llama_cpp_search_writes_llama_quantizes_bytes(string mix, string type)
    {
        // llama-quantize --pure wrote synthetic-TYPE.gguf from synthetic-f32.gguf; convert --pure --search llama.cpp writes
        // the same bytes for every quantized tensor, the default (refined) search different ones.
        using var temp = new TempDirectory();
        string llama = temp.File("llama.gguf"), refined = temp.File("refined.gguf");
        var r = CliRunner.Run("convert", SharedData.Synthetic("synthetic-f32.gguf"), "--type", mix, "--pure", "--search", "llama.cpp", "-o", llama, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal("LlamaCpp", r.Json.GetProperty("search").GetString());
        var d = CliRunner.Run("convert", SharedData.Synthetic("synthetic-f32.gguf"), "--type", mix, "--pure", "-o", refined);
        Assert.True(d.ExitCode == 0, d.Stderr);
        using var golden = Squeeze.Formats.Gguf.GgufFile.Open(SharedData.Synthetic($"synthetic-{type}.gguf"));
        using var ours = Squeeze.Formats.Gguf.GgufFile.Open(llama);
        using var theirsRefined = Squeeze.Formats.Gguf.GgufFile.Open(refined);
        int quantized = 0, differentWhenRefined = 0;
        foreach (var g in golden.Tensors.Where(t => t.Type.ToString() == type))
        {
            Assert.True(ours.TryGetTensor(g.Name, out var mine));
            Assert.Equal(g.Type, mine.Type);
            Assert.True(Quantization.QuantizeGoldenTests.Bytes(g).SequenceEqual(Quantization.QuantizeGoldenTests.Bytes(mine)), $"{g.Name} differs from llama.cpp's");
            Assert.True(theirsRefined.TryGetTensor(g.Name, out var refinedTensor));
            if (!Quantization.QuantizeGoldenTests.Bytes(g).SequenceEqual(Quantization.QuantizeGoldenTests.Bytes(refinedTensor)))
                differentWhenRefined++;
            quantized++;
        }
        Assert.True(quantized >= 7, $"{quantized} tensors of {type}");
        Assert.Equal(quantized, differentWhenRefined);

        var bad = CliRunner.Run("convert", SharedData.Synthetic("synthetic-f32.gguf"), "--type", mix, "--search", "fast", "-o", temp.File("bad.gguf"));
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("--search fast: expected refined or llama.cpp", bad.Stderr);
        Assert.False(File.Exists(temp.File("bad.gguf")));
    }

    [Fact]
    public void Missing_model_and_non_utf8_text_are_clear_errors()
    {
        using var temp = new TempDirectory();
        var missing = CliRunner.Run("inspect", temp.File("nope.bin"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("nope.bin", missing.Stderr);

        string binary = temp.File("binary.txt");
        File.WriteAllBytes(binary, [0x48, 0x69, 0xff, 0xfe, 0x00, 0x80]);
        var r = CliRunner.Run("eval", SharedData.Stories260K, "--text", binary);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("not valid UTF-8", r.Stderr);
        Assert.Contains(binary, r.Stderr);
    }

    [Fact]
    public void Demo_scores_rounding_and_gptq_files_of_one_size_against_the_original()
    {
        var env = new Dictionary<string, string> { ["SQUEEZE_SHARED"] = SharedData.Root };
        var r = CliRunner.Run(env, "demo", "--mixes", "Q4_0", "--native-bpw", "0", "--chunks", "4", "--threads", "2", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var rows = r.Json.GetProperty("rows").EnumerateArray().ToArray();
        Assert.Equal(["original (F32)", "Q4_0 rounding", "Q4_0 squeeze gptq"], rows.Select(x => x.GetProperty("name").GetString()));
        long parameters = 15_191_712;
        foreach (var row in rows)
            Assert.Equal(8.0 * row.GetProperty("bytes").GetInt64() / parameters, row.GetProperty("bitsPerWeight").GetDouble(), 9);
        Assert.Equal(new FileInfo(SharedData.Stories15M).Length, rows[0].GetProperty("bytes").GetInt64());
        Assert.Equal(rows[1].GetProperty("bytes").GetInt64(), rows[2].GetProperty("bytes").GetInt64());
        double Kld(JsonElement row) => row.GetProperty("result").GetProperty("klDivergence").GetProperty("mean").GetDouble();
        Assert.Equal(0, Kld(rows[0]), 9);
        Assert.InRange(Kld(rows[2]), 1e-4, 0.8 * Kld(rows[1]));
        Assert.Equal(["original", "rounding", "squeeze gptq"], rows.Select(x => x.GetProperty("method").GetString()));
        // The chart is what is left of the temporary directory: no model stays behind.
        string chart = r.Json.GetProperty("chart").GetString()!;
        try
        {
            Assert.Equal("size-quality.png", Path.GetFileName(chart));
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(chart).Take(4));
            Assert.Equal([chart], Directory.GetFileSystemEntries(Path.GetDirectoryName(chart)!));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(chart)!, recursive: true);
        }
    }

    [Fact]
    public void Demo_refuses_a_negative_native_budget_and_a_native_directory_it_would_write_over()
    {
        var r = CliRunner.Run("demo", "--native-bpw", "-1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--native-bpw -1 must not be negative", r.Stderr);

        using var temp = new TempDirectory();
        string earlier = Path.Combine(temp.Path, "stories15M-native-3.0");
        Directory.CreateDirectory(earlier);
        File.WriteAllText(Path.Combine(earlier, "config.json"), "{}");
        var env = new Dictionary<string, string> { ["SQUEEZE_SHARED"] = SharedData.Root };
        r = CliRunner.Run(env, "demo", "--output-dir", temp.Path);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(earlier + " already exists and is not empty", r.Stderr);
        Assert.Equal("{}", File.ReadAllText(Path.Combine(earlier, "config.json")));
    }
}

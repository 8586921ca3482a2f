using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Cli;

public sealed class PromptCliTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("squeeze-prompt-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Fact]
    public void Compress_writes_the_shortened_prompt_and_reports_its_ratio()
    {
        string story = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")).Split("\n\n\n\n")[0].Trim();
        string input = Write("story.txt", System.Text.Encoding.UTF8.GetBytes(story));
        string output = Path.Combine(dir, "short.txt");

        var r = CliRunner.Run("prompt", "compress", SharedData.Stories15M, input, "--ratio", "3", "--method", "llmlingua", "--question", "Who is Zipper?", "-o", output, "--json", "-t", "2");

        Assert.True(r.ExitCode == 0, r.Stderr);
        var report = r.Json;
        Assert.Equal("llmlingua", report.GetProperty("method").GetString());
        Assert.InRange(report.GetProperty("ratio").GetDouble(), 2.8, 3.2);
        Assert.True(report.GetProperty("scoredTokens").GetInt64() > 0);
        string text = File.ReadAllText(output);
        Assert.InRange(text.Length, 1, story.Length / 2);
        Assert.Equal(["short.txt", "story.txt"], Directory.EnumerateFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Bad_input_is_one_line_naming_the_problem()
    {
        string empty = Write("empty.txt", []);
        string binary = Write("binary.txt", [0x50, 0x4B, 0x03, 0x04, 0x41]);
        string invalid = Write("invalid.txt", [0x41, 0xFF, 0xFE]);
        string good = Write("good.txt", "Once upon a time there was a cat."u8.ToArray());
        string output = Path.Combine(dir, "out.txt");
        (string[] Args, string Message)[] cases =
        [
            ([empty, "-o", output], $"{empty}: the prompt is empty"),
            ([binary, "-o", output], $"{binary}: the prompt is not text: control character U+0003 at character 2"),
            ([invalid, "-o", output], $"{invalid}: not valid UTF-8 text (byte offset 1)"),
            ([Path.Combine(dir, "missing.txt"), "-o", output], $"{Path.Combine(dir, "missing.txt")}: no such file"),
            ([good, "--ratio", "0.5", "-o", output], "--ratio 0.5 must be a number of at least 1"),
            ([good, "--method", "lingua", "-o", output], "unknown prompt compression method 'lingua' (one of llmlingua, selective-context, extractive, keep-first, keep-last, random)"),
        ];
        foreach (var (args, message) in cases)
        {
            var r = CliRunner.Run(["prompt", "compress", SharedData.Stories15M, .. args]);
            Assert.Equal(1, r.ExitCode);
            Assert.Equal($"squeeze: error: {message}", r.Stderr.Trim());
        }
        Assert.False(File.Exists(output));
    }
}

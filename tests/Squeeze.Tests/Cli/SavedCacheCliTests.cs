using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Cli;

public sealed class SavedCacheCliTests : IDisposable
{
    private readonly string directory = Directory.CreateTempSubdirectory("squeeze-cachecli-").FullName;

    public void Dispose() => Directory.Delete(directory, recursive: true);

    [Fact]
    public void Generate_saves_a_cache_that_a_later_run_continues_with_the_same_text()
    {
        string file = Path.Combine(directory, "story.kv");
        string prompt = "Once upon a time, there was a little dog named Max. Max liked to run";
        var saved = CliRunner.Run("generate", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "-p", prompt, "--ctx", "96",
            "-n", "24", "--temp", "0", "--save-cache", file, "--cache-policy", "f32", "--json");
        Assert.True(saved.ExitCode == 0, saved.Stderr);
        Assert.Contains("saved the KV cache of", saved.Stderr);
        var loaded = CliRunner.Run("generate", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--ctx", "96",
            "-n", "24", "--temp", "0", "--load-cache", file, "--json");
        Assert.True(loaded.ExitCode == 0, loaded.Stderr);
        Assert.Equal(saved.Json.GetProperty("text").GetString(), loaded.Json.GetProperty("text").GetString());

        var longer = CliRunner.Run("generate", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--ctx", "96",
            "-p", prompt + " and jump", "-n", "4", "--temp", "0", "--load-cache", file, "--json");
        Assert.True(longer.ExitCode == 0, longer.Stderr);
        var other = CliRunner.Run("generate", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--ctx", "96",
            "-p", "A cat sat", "-n", "4", "--load-cache", file);
        Assert.Equal(1, other.ExitCode);
        Assert.StartsWith($"squeeze: error: {file}: the prompt does not begin with the ", other.Stderr.Trim());
    }

    [Fact]
    public void A_cache_from_another_model_is_one_line()
    {
        string file = Path.Combine(directory, "small.kv");
        var saved = CliRunner.Run("generate", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "-p", "Once upon a time", "-n", "1",
            "--save-cache", file, "--cache-policy", "q4");
        Assert.True(saved.ExitCode == 0, saved.Stderr);
        var r = CliRunner.Run("generate", SharedData.Golden("stories15M-Q8_0.gguf"), "-n", "4", "--load-cache", file);
        Assert.Equal(1, r.ExitCode);
        string line = r.Stderr.Trim();
        Assert.DoesNotContain('\n', line);
        Assert.StartsWith($"squeeze: error: {file}: saved from another model (fingerprint ", line);
    }
}

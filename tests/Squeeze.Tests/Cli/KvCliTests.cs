using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Cli;

public class KvCliTests
{
    [Fact]
    public void Eval_with_a_compressed_cache_compares_with_the_f32_cache()
    {
        var r = CliRunner.Run("eval", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--text", SharedData.Corpus("tinystories-eval.txt"),
            "--ctx", "128", "--chunks", "2", "--kv", "q2:sinks=2:window=16", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var result = r.Json.GetProperty("result");
        Assert.Equal("q2:sinks=2:window=16", result.GetProperty("kvCache").GetString());
        Assert.InRange(result.GetProperty("kvCacheBytesPerToken").GetDouble(), 100, 5 * 2 * 32 * 4 - 1);
        Assert.InRange(result.GetProperty("klDivergence").GetProperty("mean").GetDouble(), 1e-6, 1);
    }

    [Fact]
    public void Eval_sweep_prints_every_standard_policy()
    {
        var r = CliRunner.Run("eval", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--text", SharedData.Corpus("tinystories-eval.txt"),
            "--ctx", "64", "--chunks", "1", "--kv-sweep");
        Assert.True(r.ExitCode == 0, r.Stderr);
        foreach (var policy in Squeeze.Runtime.KvCachePolicy.Standard)
            Assert.Contains(policy.ToString(), r.Stdout);
        Assert.Contains("bytes/token", r.Stdout);
    }

    [Fact]
    public void A_bad_policy_is_one_line_naming_it()
    {
        var r = CliRunner.Run("generate", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--kv", "q3:window=4", "-n", "4");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("squeeze: error: KV-cache policy 'q3:window=4': unknown kind 'q3' (expected f32, f16, q8, q4, q2 or evict)", r.Stderr.Trim());
        var sweep = CliRunner.Run("eval", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--text", SharedData.Corpus("tinystories-eval.txt"), "--kv-sweep", "--kv", "q4");
        Assert.Equal(1, sweep.ExitCode);
        Assert.Contains("--kv-sweep", sweep.Stderr);
    }

    [Fact]
    public void Generate_and_bench_run_with_an_evicting_cache()
    {
        var g = CliRunner.Run("generate", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--kv", "evict:keep=0.25:sinks=2:window=8",
            "--ctx", "64", "-n", "40", "--temp", "0", "--json");
        Assert.True(g.ExitCode == 0, g.Stderr);
        Assert.Equal(40, g.Json.GetProperty("generatedTokens").GetInt32());
        var b = CliRunner.Run("bench", SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer, "--kv", "q4:window=8", "-p", "16", "-n", "16", "-t", "1", "-r", "1", "--json");
        Assert.True(b.ExitCode == 0, b.Stderr);
        Assert.Equal("q4:window=8", b.Json.GetProperty("kvCache").GetString());
    }
}

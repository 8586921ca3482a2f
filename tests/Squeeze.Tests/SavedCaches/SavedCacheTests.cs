using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.SavedCaches;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.SavedCaches;

/// <summary>Saved KV caches on stories260K (5 layers, 4 key/value heads of 8): round trips, loss, refusals.</summary>
public sealed class SavedCacheTests : IDisposable
{
    private const string Prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she saw a big red ball";
    private readonly string directory = Directory.CreateTempSubdirectory("squeeze-savedcache-").FullName;

    public void Dispose() => Directory.Delete(directory, recursive: true);

    private static Transformer Runtime(Model model) => new(model, new RuntimeOptions { Threads = 2, ContextLength = 128 });

    [Fact]
    public void Generation_after_loading_a_lossless_cache_gives_the_tokens_of_a_prefill()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var runtime = Runtime(model);
        int[] tokens = model.Tokenizer.Encode(Prompt, addBos: true);
        var greedy = new SamplingOptions { Temperature = 0 };
        var expected = Generator.Generate(runtime, Prompt, 40, new Sampler(greedy));

        string path = Path.Combine(directory, "prompt.kv");
        var saved = SavedCache.Save(runtime, tokens, SavedCacheStorage.Lossless, path);
        Assert.Equal(tokens.Length - 1, saved.Positions);
        Assert.Equal(new FileInfo(path).Length, saved.Bytes);
        Assert.Empty(Directory.EnumerateFiles(directory, "*.tmp"));

        using var fresh = Runtime(model);
        var loaded = SavedCache.Load(fresh, path);
        Assert.Equal(tokens, loaded.Tokens);
        Assert.Equal(tokens.Length - 1, fresh.Position);
        var generated = Generator.Continue(fresh, tokens.AsSpan(loaded.Positions), 40, new Sampler(greedy));
        Assert.Equal(expected, generated);
    }

    [Theory]
    [InlineData("f16", 0.0005, 1.99)]
    [InlineData("q8", 0.002, 1.8)]
    [InlineData("q4:sinks=2:window=8:group=16", 0.05, 2)]
    [InlineData("step:0.125", 0.05, 3)]
    public void A_lossy_cache_is_smaller_and_its_next_token_distribution_stays_close(string spec, double maxKld, double minRatio)
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var runtime = Runtime(model);
        int[] tokens = model.Tokenizer.Encode(Prompt, addBos: true);
        string exactPath = Path.Combine(directory, "exact.kv"), lossyPath = Path.Combine(directory, "lossy.kv");
        var exact = SavedCache.Save(runtime, tokens, SavedCacheStorage.Lossless, exactPath);
        var lossy = SavedCache.Save(runtime, tokens, SavedCacheStorage.Parse(spec), lossyPath);
        Assert.Equal(spec, lossy.Storage.ToString());
        Assert.True(exact.Bytes > minRatio * lossy.Bytes, $"{spec}: {lossy.Bytes} bytes against {exact.Bytes} in f32");

        float[] reference = NextTokenLogits(model, exactPath, tokens);
        float[] approximate = NextTokenLogits(model, lossyPath, tokens);
        double kld = Kld(reference, approximate);
        Assert.InRange(kld, 0, maxKld);
        Assert.NotEqual(reference, approximate);
    }

    private static float[] NextTokenLogits(Model model, string path, int[] tokens)
    {
        using var runtime = Runtime(model);
        var loaded = SavedCache.Load(runtime, path);
        return runtime.Forward(tokens.AsSpan(loaded.Positions)).ToArray();
    }

    private static double Kld(float[] p, float[] q)
    {
        var lp = new double[p.Length];
        var lq = new double[q.Length];
        double mp = p.Max(), mq = q.Max();
        double zp = Math.Log(p.Sum(x => Math.Exp(x - mp))), zq = Math.Log(q.Sum(x => Math.Exp(x - mq)));
        double kld = 0;
        for (int i = 0; i < p.Length; i++)
        {
            lp[i] = p[i] - mp - zp;
            lq[i] = q[i] - mq - zq;
            kld += Math.Exp(lp[i]) * (lp[i] - lq[i]);
        }
        return kld;
    }

    [Fact]
    public void A_cache_from_another_model_is_refused_in_one_line()
    {
        using var small = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var runtime = Runtime(small);
        string path = Path.Combine(directory, "small.kv");
        SavedCache.Save(runtime, small.Tokenizer.Encode(Prompt, addBos: true), SavedCacheStorage.Parse("q8"), path);
        using var other = ModelLoader.Load(SharedData.Stories15M, SharedData.Stories15MTokenizerBin);
        using var otherRuntime = new Transformer(other, new RuntimeOptions { Threads = 2, ContextLength = 128 });
        var e = Assert.Throws<ModelFormatException>(() => SavedCache.Load(otherRuntime, path));
        Assert.StartsWith($"{path}: saved from another model (fingerprint ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_truncated_or_corrupt_file_is_refused_naming_the_problem()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var runtime = Runtime(model);
        string path = Path.Combine(directory, "whole.kv");
        SavedCache.Save(runtime, model.Tokenizer.Encode(Prompt, addBos: true), SavedCacheStorage.Parse("q4"), path);
        byte[] whole = File.ReadAllBytes(path);

        string truncated = Path.Combine(directory, "truncated.kv");
        File.WriteAllBytes(truncated, whole[..(whole.Length / 2)]);
        var e = Assert.Throws<ModelFormatException>(() => SavedCache.Load(runtime, truncated));
        Assert.Equal($"{truncated}: checksum mismatch: the saved KV cache is truncated or corrupt", e.Message);

        string stub = Path.Combine(directory, "stub.kv");
        File.WriteAllBytes(stub, whole[..10]);
        Assert.Equal($"{stub}: truncated saved KV cache", Assert.Throws<ModelFormatException>(() => SavedCache.Load(runtime, stub)).Message);

        foreach (int offset in new[] { 40, whole.Length / 2, whole.Length - 3 })
        {
            byte[] corrupt = (byte[])whole.Clone();
            corrupt[offset] ^= 0x10;
            string bad = Path.Combine(directory, $"corrupt{offset}.kv");
            File.WriteAllBytes(bad, corrupt);
            Assert.Equal($"{bad}: checksum mismatch: the saved KV cache is truncated or corrupt", Assert.Throws<ModelFormatException>(() => SavedCache.Load(runtime, bad)).Message);
        }

        string text = Path.Combine(directory, "text.kv");
        File.WriteAllText(text, "Once upon a time there was a cache file that was not one.");
        Assert.Equal($"{text}: not a saved KV cache (no SQKV magic)", Assert.Throws<ModelFormatException>(() => SavedCache.Load(runtime, text)).Message);
    }

    [Theory]
    [InlineData("evict:keep=0.5")]
    [InlineData("q2:outliers=0.01")]
    [InlineData("q4:lowrank=2")]
    [InlineData("step:0")]
    [InlineData("step:0.5:window=3")]
    [InlineData("step:0.5:values=0")]
    public void Policies_a_file_cannot_hold_are_refused(string spec)
    {
        var e = Assert.Throws<ArgumentException>(() => SavedCacheStorage.Parse(spec));
        Assert.Contains(spec.Split(':')[0], e.Message, StringComparison.Ordinal);
    }
}

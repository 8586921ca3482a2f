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
    [InlineData("pre:0.0625", 0.05, 3)]
    [InlineData("pre:0.0625:window=0:sinks=1", 0.05, 3)]
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
    public void Rotating_keys_back_and_forward_again_gives_them_back_to_float_tolerance()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var runtime = Runtime(model);
        var config = model.Config;
        var codec = new PreRotaryCodec(SavedCacheStorage.Parse("pre:0.1"), config.KvHeadCount, config.HeadDim, config.RopeStyle);
        var (cos, sin) = runtime.RotaryTables(0);
        var random = new Random(42);
        const int first = 3, count = 100;
        float[] original = [.. Enumerable.Range(0, count * config.KvDim).Select(_ => (float)(random.NextDouble() * 8 - 4))];
        float[] rows = (float[])original.Clone();
        codec.Rotate(rows, first, cos, sin, inverse: true);
        Assert.True(MaxDifference(original, rows) > 0.5, "rotating back moves the keys");
        codec.Rotate(rows, first, cos, sin, inverse: false);
        Assert.InRange(MaxDifference(original, rows), 0, 4e-6);
        codec.Rotate(rows, first, cos, sin, inverse: false);
        codec.Rotate(rows, first, cos, sin, inverse: true);
        Assert.InRange(MaxDifference(original, rows), 0, 8e-6);
    }

    [Fact]
    public void A_pre_rope_cache_with_fine_steps_loads_the_keys_and_values_of_a_prefill()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var runtime = Runtime(model);
        int[] tokens = model.Tokenizer.Encode(Prompt, addBos: true);
        string exactPath = Path.Combine(directory, "exact.kv"), finePath = Path.Combine(directory, "fine.kv");
        SavedCache.Save(runtime, tokens, SavedCacheStorage.Lossless, exactPath);
        SavedCache.Save(runtime, tokens, SavedCacheStorage.Parse("pre:0.0001:values=0.0001:window=0:sinks=1"), finePath);
        var (exactKeys, exactValues) = Loaded(model, exactPath, tokens.Length - 1);
        var (keys, values) = Loaded(model, finePath, tokens.Length - 1);
        // position 0 (the sink) is stored in f16; the others rotated back, quantized in tiny steps and rotated again
        int kvDim = model.Config.KvDim, positions = tokens.Length - 1;
        bool quantized(int i) => i / kvDim % positions > 0;
        float[] Rest(float[] rows) => [.. rows.Where((_, i) => quantized(i))];
        Assert.InRange(MaxDifference(Rest(exactKeys), Rest(keys)), 0, 1e-4 * exactKeys.Max(Math.Abs));
        Assert.InRange(MaxDifference(Rest(exactValues), Rest(values)), 0, 1e-4 * exactValues.Max(Math.Abs));
        Assert.InRange(MaxDifference(exactKeys, keys), 0, 1e-3 * exactKeys.Max(Math.Abs));
    }

    /// <summary>The keys and values [layers, positions, kvDim] a fresh runtime's cache holds after loading <paramref name="path"/>.</summary>
    private static (float[] Keys, float[] Values) Loaded(Model model, string path, int positions)
    {
        using var runtime = Runtime(model);
        SavedCache.Load(runtime, path);
        var cache = Assert.IsType<Float32KvCache>(runtime.Cache);
        int kvDim = model.Config.KvDim, layers = model.Config.LayerCount;
        var keys = new float[layers * positions * kvDim];
        var values = new float[layers * positions * kvDim];
        for (int l = 0; l < layers; l++)
            cache.Read(l, 0, positions, keys.AsSpan(l * positions * kvDim, positions * kvDim), values.AsSpan(l * positions * kvDim, positions * kvDim));
        return (keys, values);
    }

    private static double MaxDifference(float[] a, float[] b)
    {
        double max = 0;
        for (int i = 0; i < a.Length; i++)
            max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    [Fact]
    public void Version_1_files_still_load_and_other_versions_are_refused_in_one_line()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var runtime = Runtime(model);
        int[] tokens = model.Tokenizer.Encode(Prompt, addBos: true);
        string path = Path.Combine(directory, "q4.kv"), prePath = Path.Combine(directory, "pre.kv");
        SavedCache.Save(runtime, tokens, SavedCacheStorage.Parse("q4"), path);
        SavedCache.Save(runtime, tokens, SavedCacheStorage.Parse("pre:0.0625"), prePath);
        var (expectedKeys, expectedValues) = Loaded(model, path, tokens.Length - 1);

        string old = WithVersion(path, 1);
        var (keys, values) = Loaded(model, old, tokens.Length - 1);
        Assert.Equal(expectedKeys, keys);
        Assert.Equal(expectedValues, values);

        string future = WithVersion(path, 3);
        Assert.Equal($"{future}: saved KV cache version 3; this Squeeze reads versions 1 to 2",
            Assert.Throws<ModelFormatException>(() => SavedCache.Load(runtime, future)).Message);
        string oldPre = WithVersion(prePath, 1);
        Assert.Equal($"{oldPre}: storage policy 'pre:0.0625' in a version-1 saved KV cache, which has no pre-RoPE storage",
            Assert.Throws<ModelFormatException>(() => SavedCache.Load(runtime, oldPre)).Message);
    }

    /// <summary>A copy of <paramref name="path"/> with another version number and a checksum that matches.</summary>
    private string WithVersion(string path, int version)
    {
        byte[] file = File.ReadAllBytes(path);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(file.AsSpan(4), version);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(file.Length - 8), System.IO.Hashing.XxHash64.HashToUInt64(file.AsSpan(0, file.Length - 8)));
        string copy = Path.Combine(directory, $"v{version}-{Path.GetFileName(path)}");
        File.WriteAllBytes(copy, file);
        return copy;
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
    [InlineData("pre:0")]
    [InlineData("pre:0.1:group=4")]
    public void Policies_a_file_cannot_hold_are_refused(string spec)
    {
        var e = Assert.Throws<ArgumentException>(() => SavedCacheStorage.Parse(spec));
        Assert.Contains(spec.Split(':')[0], e.Message, StringComparison.Ordinal);
    }
}

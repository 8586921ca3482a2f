using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Runtime;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Runtime;

/// <summary>Cache policies inside the forward pass of a real model (stories260K: 8 heads of 8, 4 key/value heads).</summary>
public class KvCacheModelTests
{
    [Theory]
    [InlineData("q4:sinks=2:window=8:group=16")]
    [InlineData("evict:keep=0.3:sinks=2:window=8")]
    public void A_prompt_batch_gives_the_logits_of_token_by_token_decoding(string spec)
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        int[] tokens = model.Tokenizer.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.", addBos: true);
        var options = new RuntimeOptions { Threads = 2, ContextLength = 64, KvCache = KvCachePolicy.Parse(spec) };
        using var batch = new Transformer(model, options);
        float[] batchLogits = batch.Forward(tokens).ToArray();
        using var single = new Transformer(model, options with { BatchSize = 1 });
        float[] singleLogits = [];
        foreach (int token in tokens)
            singleLogits = single.Forward([token]).ToArray();
        for (int i = 0; i < batchLogits.Length; i++)
            Assert.True(Math.Abs(batchLogits[i] - singleLogits[i]) < 1e-3f, $"logit {i}: batch {batchLogits[i]}, decoded {singleLogits[i]}");
    }

    [Fact]
    public void Sweeping_policies_scores_the_f32_cache_as_the_base_and_fewer_bits_further_from_it()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        string text = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"));
        var options = new EvaluationOptions { ContextLength = 256, MaxChunks = 2, Threads = 2 };
        var policies = new[] { "f32", "q8", "q4", "q2" }.Select(KvCachePolicy.Parse).ToArray();
        var results = Evaluator.EvaluateKvCaches(model, policies, text, options);
        var alone = Evaluator.Evaluate(model, text, options);
        Assert.Equal(alone.Perplexity, results[0].Perplexity);
        Assert.Equal(0, results[0].KlDivergence!.Mean);
        Assert.Equal(new[] { "f32", "q8", "q4", "q2" }, results.Select(r => r.KvCache));
        for (int i = 1; i < results.Count; i++)
        {
            Assert.True(results[i].KlDivergence!.Mean > results[i - 1].KlDivergence!.Mean, $"{results[i].KvCache}: {results[i].KlDivergence!.Mean}");
            Assert.True(results[i].KvCacheBytesPerToken < results[i - 1].KvCacheBytesPerToken);
        }
        Assert.Equal(5 * 2 * 32 * 4, results[0].KvCacheBytesPerToken); // 5 layers, keys and values, kvDim 32, f32
    }
}

using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Runtime;

/// <summary>The deterministic mode: close to the ordinary forward pass, and a sequence's logits the same bits whether it
/// runs as one prompt batch or one token per step beside other sequences.</summary>
public class DeterministicRuntimeTests
{
    private static float[] Prompt(Model model, int[] tokens, RuntimeOptions options)
    {
        using var runtime = new Transformer(model, options);
        return runtime.Forward(tokens, tokens.Length).ToArray();
    }

    /// <summary>Sequence a and b run side by side, one token of each per step (b two tokens in its first step), each in
    /// its own cache; returns a's logits.</summary>
    private static float[] Lockstep(Model model, int[] a, int[] b, RuntimeOptions options)
    {
        int vocab = model.Config.VocabSize;
        using var runtime = new Transformer(model, options);
        var cacheA = runtime.NewCache(64);
        var cacheB = runtime.NewCache(64);
        var result = new float[a.Length * vocab];
        int pb = 0;
        for (int t = 0; t < a.Length; t++)
        {
            var tokens = new List<int> { a[t] };
            var caches = new List<KvCache> { cacheA };
            var positions = new List<int> { t };
            for (int k = 0; k < (t == 0 ? 2 : 1) && pb < b.Length; k++, pb++)
            {
                tokens.Add(b[pb]);
                caches.Add(cacheB);
                positions.Add(pb);
            }
            runtime.ForwardSequences(tokens.ToArray(), caches.ToArray(), positions.ToArray(), [0]).CopyTo(result.AsSpan(t * vocab, vocab));
        }
        return result;
    }

    [Theory]
    [InlineData("F32")]
    [InlineData("Q8_0")]
    [InlineData("Q4_K_M")]
    public void Lockstep_rows_give_the_prompt_batch_bits(string mix)
    {
        using var original = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        string path = Path.Combine(Path.GetTempPath(), $"squeeze-det-{mix}-{Environment.ProcessId}.gguf");
        Model model = original;
        if (mix != "F32")
        {
            GgufQuantizer.Write(original, QuantizationMix.Plan(original, QuantizationMix.Parse(mix), [], pure: false), path);
            model = ModelLoader.Load(path);
        }
        try
        {
            int[] a = original.Tokenizer.Encode("Once upon a time, there was a little dog named Max.", addBos: true);
            int[] b = original.Tokenizer.Encode("Lily liked to play in the park with her ball.", addBos: true);
            var options = new RuntimeOptions { Deterministic = true, ContextLength = 64, Threads = 2 };
            float[] prompt = Prompt(model, a, options);
            Assert.Equal(prompt, Lockstep(model, a, b, options));
            Assert.Equal(prompt, Prompt(model, a, options with { Threads = 1 }));
            // Other summation orders: f32 logits differ by rounding only; quantized activations amplify that (a value on a
            // rounding boundary of the 8-bit grid moves by one step), so there the mean difference is bounded.
            float[] ordinary = Prompt(model, a, new RuntimeOptions { ContextLength = 64 });
            double meanDifference = prompt.Zip(ordinary, (p, o) => Math.Abs(p - o)).Average();
            Assert.True(meanDifference < (mix == "F32" ? 1e-4 : 1e-2), $"{mix}: mean |Δ logit| {meanDifference}");
        }
        finally
        {
            if (!ReferenceEquals(model, original))
                model.Dispose();
            File.Delete(path);
        }
    }
}

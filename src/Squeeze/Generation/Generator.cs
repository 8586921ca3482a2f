using Squeeze.Runtime;

namespace Squeeze.Generation;

/// <summary>Text generation: the prompt runs as one batch, then one token at a time from the KV cache.</summary>
public static class Generator
{
    /// <summary>
    /// Continues <paramref name="prompt"/> (encoded with BOS first) by up to <paramref name="maxTokens"/> tokens,
    /// stopping early at EOS or end-of-turn or at the end of the context. <paramref name="onToken"/> sees each new token id.
    /// Returns the new token ids.
    /// </summary>
    public static IReadOnlyList<int> Generate(Transformer runtime, string prompt, int maxTokens, Sampler sampler, Action<int>? onToken = null)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        return Generate(runtime, runtime.Model.Tokenizer.Encode(prompt, runtime.Model.Vocabulary.AddBos), maxTokens, sampler, onToken);
    }

    /// <summary>
    /// Continues the tokens <paramref name="promptTokens"/> (a chat template's, say) by up to <paramref name="maxTokens"/>
    /// tokens, stopping early at EOS or end-of-turn or at the end of the context. Returns the new token ids.
    /// </summary>
    public static IReadOnlyList<int> Generate(Transformer runtime, int[] promptTokens, int maxTokens, Sampler sampler, Action<int>? onToken = null)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(promptTokens);
        ArgumentNullException.ThrowIfNull(sampler);
        if (promptTokens.Length == 0)
            throw new ArgumentException("the prompt has no tokens", nameof(promptTokens));
        if (promptTokens.Length >= runtime.Cache.ContextLength)
            throw new ArgumentException($"the prompt has {promptTokens.Length} tokens; the context holds {runtime.Cache.ContextLength}", nameof(promptTokens));
        runtime.Reset();
        return Continue(runtime, promptTokens, maxTokens, sampler, onToken);
    }

    /// <summary>
    /// Runs <paramref name="tokens"/> after the <see cref="Transformer.Position"/> positions <paramref name="runtime"/>'s
    /// cache holds (a saved cache loaded, or nothing), then generates as <see cref="Generate(Transformer, int[], int, Sampler, Action{int}?)"/> does. Returns the new
    /// token ids.
    /// </summary>
    public static IReadOnlyList<int> Continue(Transformer runtime, ReadOnlySpan<int> tokens, int maxTokens, Sampler sampler, Action<int>? onToken = null)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens.Length, 1, nameof(tokens));
        var vocabulary = runtime.Model.Vocabulary;
        var generated = new List<int>();
        var logits = runtime.Forward(tokens);
        var single = new int[1];
        while (generated.Count < maxTokens)
        {
            int next = sampler.Sample(logits);
            if (vocabulary.EndsGeneration(next))
                break;
            generated.Add(next);
            onToken?.Invoke(next);
            if (runtime.Position >= runtime.Cache.ContextLength)
                break;
            single[0] = next;
            logits = runtime.Forward(single);
        }
        return generated;
    }
}

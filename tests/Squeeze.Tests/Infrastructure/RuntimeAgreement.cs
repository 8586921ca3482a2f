using Squeeze.Formats;
using Squeeze.Runtime;

namespace Squeeze.Tests.Infrastructure;

/// <summary>
/// How closely Squeeze's runtime follows llama.cpp on one file and one token sequence, over every position:
/// the share of positions whose most likely next token is the same, the mean and largest KL divergence
/// KL(llama.cpp ‖ Squeeze) between the two softmaxes (nats), and the largest |Δlogit|.
/// </summary>
public sealed record RuntimeAgreement(int Positions, double SameTopShare, double MeanKld, double MaxKld, double MaxAbsLogitDelta)
{
    /// <summary>Runs <paramref name="tokens"/> through llama.cpp and through Squeeze (<see cref="ModelLoader.Load"/>,
    /// <see cref="Transformer"/>, one thread) on the GGUF file <paramref name="path"/> and compares their logits.</summary>
    public static RuntimeAgreement Measure(string path, ReadOnlySpan<int> tokens)
    {
        float[] reference;
        int vocab;
        using (var llama = LlamaCpp.Load(path))
        {
            reference = llama.Logits(tokens);
            vocab = llama.VocabSize;
        }
        using var model = ModelLoader.Load(path);
        using var transformer = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = tokens.Length });
        var logits = transformer.Forward(tokens, logitCount: tokens.Length);
        return Compare(reference, logits, vocab);
    }

    /// <summary>Compares two [positions, vocab] logit matrices, <paramref name="reference"/> (llama.cpp's) first.</summary>
    public static RuntimeAgreement Compare(ReadOnlySpan<float> reference, ReadOnlySpan<float> candidate, int vocab)
    {
        if (reference.Length != candidate.Length || reference.Length % vocab != 0)
            throw new ArgumentException($"logits of {reference.Length} and {candidate.Length} values are not both [positions, {vocab}]");
        int positions = reference.Length / vocab;
        int sameTop = 0;
        double kldSum = 0, maxKld = 0, maxDelta = 0;
        var p = new double[vocab];
        var q = new double[vocab];
        for (int i = 0; i < positions; i++)
        {
            var r = reference.Slice(i * vocab, vocab);
            var c = candidate.Slice(i * vocab, vocab);
            if (ArgMax(r) == ArgMax(c))
                sameTop++;
            LogSoftmax(r, p);
            LogSoftmax(c, q);
            double kld = 0;
            for (int v = 0; v < vocab; v++)
            {
                kld += Math.Exp(p[v]) * (p[v] - q[v]);
                maxDelta = Math.Max(maxDelta, Math.Abs(r[v] - c[v]));
            }
            kldSum += kld;
            maxKld = Math.Max(maxKld, kld);
        }
        return new RuntimeAgreement(positions, (double)sameTop / positions, kldSum / positions, maxKld, maxDelta);
    }

    /// <inheritdoc/>
    public override string ToString()
        => $"{Positions} positions: same top token {SameTopShare:P2}, mean KLD {MeanKld:E3} (max {MaxKld:E3}), max |Δlogit| {MaxAbsLogitDelta:E3}";

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
                best = i;
        }
        return best;
    }

    private static void LogSoftmax(ReadOnlySpan<float> logits, double[] destination)
    {
        double max = double.NegativeInfinity;
        foreach (float l in logits)
            max = Math.Max(max, l);
        double sum = 0;
        foreach (float l in logits)
            sum += Math.Exp(l - max);
        double log = max + Math.Log(sum);
        for (int i = 0; i < logits.Length; i++)
            destination[i] = logits[i] - log;
    }
}

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Evaluation;

/// <summary>Log-probabilities from logits.</summary>
public static class LogSoftmax
{
    /// <summary><c>destination[i] = logits[i] − log Σ_j exp(logits[j])</c>, computed stably (shifted by the maximum).</summary>
    public static void Compute(ReadOnlySpan<float> logits, Span<float> destination)
    {
        float max = TensorPrimitives.Max(logits);
        TensorPrimitives.Subtract(logits, max, destination);
        // log Σ exp(l − max): exponentials into the destination, summed in double, then overwritten.
        Span<float> shifted = destination;
        float[] rented = System.Buffers.ArrayPool<float>.Shared.Rent(logits.Length);
        try
        {
            var exps = rented.AsSpan(0, logits.Length);
            TensorPrimitives.Exp(shifted, exps);
            double sum = 0;
            foreach (float e in exps)
                sum += e;
            TensorPrimitives.Subtract(shifted, (float)Math.Log(sum), destination);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }
}

using System.Runtime.CompilerServices;
using Squeeze.Calibration;
using Squeeze.LowRank;
using Squeeze.Runtime;

namespace Squeeze.Compression.Representations;

/// <summary>Whitenings of layer inputs for the low-rank levels, computed once per statistics entry.</summary>
internal static class LowRankWhitenings
{
    private const double Damping = 0.01;

    /// <summary>What <see cref="For"/> keeps per input for the truncation's Cholesky whitening (<see cref="NativeRepresentation.KeptPerInput"/>).</summary>
    public const string CholeskyWhitening = "Cholesky whitening";

    /// <summary>What <see cref="For"/> keeps per input for EoRA's eigenspace whitening.</summary>
    public const string EigenWhitening = "eigenspace whitening";
    private static readonly ConditionalWeakTable<ActivationStatistics, Whitening> Cholesky = [];
    private static readonly ConditionalWeakTable<ActivationStatistics, Whitening> Eigen = [];

    /// <summary>The whitening of <paramref name="name"/>'s input: from its Gram matrix when it is a linear layer's and
    /// was collected, else from the importance (a diagonal XᵀX); null without statistics.</summary>
    public static Whitening? For(ActivationStatistics? input, string name, bool eigen)
    {
        if (input is null)
            return null;
        var table = eigen ? Eigen : Cholesky;
        bool full = input.Gram is not null && LinearInputs.TryGet(name, out _, out _);
        if (full && table.TryGetValue(input, out var cached))
            return cached;
        double[] h;
        if (full)
        {
            h = input.Hessian();
        }
        else
        {
            int n = input.Width;
            var importance = input.Importance();
            h = new double[(long)n * n];
            for (int i = 0; i < n; i++)
                h[(long)i * n + i] = importance[i];
        }
        var whitening = eigen ? Whitening.Eigen(h, input.Width, Damping) : Whitening.Cholesky(h, input.Width, Damping);
        // Not kept for routed experts' inputs: a block would hold one whitening per expert (as TensorEncoder keeps no
        // expert's prepared Hessian).
        if (full && input.Kind is not (LinearInput.ExpertFeedForward or LinearInput.ExpertFeedForwardDown))
            table.AddOrUpdate(input, whitening);
        return whitening;
    }
}

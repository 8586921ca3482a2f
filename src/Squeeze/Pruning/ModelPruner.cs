using System.Globalization;
using Squeeze.Calibration;
using Squeeze.Models;
using Squeeze.Weights;

namespace Squeeze.Pruning;

/// <summary>What <see cref="ModelPruner"/> removes from every block: the same sparsity pattern in each linear weight
/// (<see cref="Matrices"/>), or whole attention heads or feed-forward units, coupled across a block's matrices
/// (<see cref="StructuredPruning"/>).</summary>
public abstract record PruningTarget
{
    private PruningTarget()
    {
    }

    /// <summary>Every linear weight of every block pruned to <paramref name="Pattern"/> (unstructured or N:M).</summary>
    public sealed record Matrices(SparsityPattern Pattern) : PruningTarget
    {
        /// <inheritdoc/>
        public override string ToString() => Pattern.ToString();
    }

    /// <summary>In every block, <c>round(Fraction · heads)</c> attention heads removed.</summary>
    public sealed record Heads(double Fraction) : PruningTarget
    {
        /// <inheritdoc/>
        public override string ToString() => $"{Fraction.ToString(CultureInfo.InvariantCulture)} of the attention heads";
    }

    /// <summary>In every block, <c>round(Fraction · hidden)</c> feed-forward units removed.</summary>
    public sealed record FeedForwardUnits(double Fraction) : PruningTarget
    {
        /// <inheritdoc/>
        public override string ToString() => $"{Fraction.ToString(CultureInfo.InvariantCulture)} of the feed-forward units";
    }

    /// <summary>The patterns' names on the command line.</summary>
    public const string Syntax = "unstructured, N:M (e.g. 2:4), heads or ffn";

    /// <summary>Parses <paramref name="pattern"/> (<see cref="Syntax"/>) with <paramref name="sparsity"/>, the fraction
    /// removed (N:M fixes it at 1 − N/M, so none may be given).</summary>
    /// <exception cref="FormatException">Not a pattern, a sparsity outside (0, 1), or a sparsity with N:M.</exception>
    public static PruningTarget Parse(string pattern, double? sparsity)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        string p = pattern.Trim().ToLowerInvariant();
        var parts = p.Split(':');
        if (parts.Length == 2)
        {
            if (sparsity is not null)
                throw new FormatException($"pattern {pattern} removes M − N of every M weights: give no sparsity with it");
            if (!int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int n) || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int m)
                || n < 1 || m > 16 || n >= m)
                throw new FormatException($"pattern {pattern}: N:M needs integers 1 ≤ N < M ≤ 16");
            return new Matrices(new SparsityPattern.NOfM(n, m));
        }
        double fraction = sparsity ?? 0.5;
        if (!(fraction > 0 && fraction < 1))
            throw new FormatException($"sparsity {fraction.ToString(CultureInfo.InvariantCulture)} must be a fraction between 0 and 1");
        return p switch
        {
            "unstructured" => new Matrices(new SparsityPattern.Unstructured(fraction)),
            "heads" => new Heads(fraction),
            "ffn" => new FeedForwardUnits(fraction),
            _ => throw new FormatException($"pattern '{pattern}' is not one of {Syntax}"),
        };
    }
}

/// <summary>
/// Prunes a whole model: the linear weights of every block (the token embedding and the classifier stay), one matrix at
/// a time, by magnitude, Wanda (the calibration's Σx²) or SparseGPT (its Gram matrix; one prepared Hessian per shared
/// input), each stored in the sparse representation of its pattern (<see cref="PrunedWeights"/>) with the kept values in
/// f16. The result replaces the model's weights (<see cref="Model.WithWeights"/>) or is written as a native model.
/// </summary>
public static class ModelPruner
{
    /// <summary>The pruned weights of <paramref name="model"/>, in block order.</summary>
    /// <exception cref="ArgumentException">The method needs statistics that are missing, or the pattern does not fit a
    /// matrix (N:M whose M does not divide a row, heads with a fraction that leaves …).</exception>
    public static IReadOnlyList<LinearWeight> Prune(Model model, PruningTarget target, PruningMethod method, CalibrationStatistics? statistics,
        PruningOptions? options = null, IProgress<(int Done, int Total)>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(target);
        options ??= new PruningOptions();
        if (method != PruningMethod.Magnitude && statistics is null)
            throw new ArgumentException($"{method} pruning needs calibration statistics", nameof(statistics));
        if (method == PruningMethod.SparseGpt && statistics!.Entries.Any(e => e.Layer >= 0 && e.Gram is null))
            throw new ArgumentException("SparseGPT needs calibration statistics with the Gram matrices", nameof(statistics));
        int layers = model.Config.LayerCount;
        var weights = new List<LinearWeight>();
        if (target is PruningTarget.Matrices matrices)
        {
            var names = Enumerable.Range(0, layers).SelectMany(l => (string[])[TensorNames.Query(l), TensorNames.Key(l), TensorNames.Value(l),
                TensorNames.AttentionOutput(l), TensorNames.Gate(l), TensorNames.Up(l), TensorNames.Down(l)]).Where(model.Contains).ToList();
            var hessians = new Dictionary<ActivationStatistics, GptqHessian>(ReferenceEqualityComparer.Instance);
            int hessianLayer = -1;
            foreach (string name in names)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var w = model.Weight(name);
                LinearInputs.TryGet(name, out int layer, out var kind);
                // A layer's prepared Hessians serve its own matrices only: one layer's worth is kept, not the model's.
                if (layer != hessianLayer)
                {
                    hessians.Clear();
                    hessianLayer = layer;
                }
                var input = statistics?.Get(layer, kind);
                PruningResult result;
                if (method == PruningMethod.SparseGpt)
                {
                    if (!hessians.TryGetValue(input!, out var hessian))
                        hessians[input!] = hessian = GptqHessian.Prepare(input!.Hessian(), input.Width, options.DampingFraction, activationOrder: false, Math.Max(1, options.Threads));
                    result = Pruner.SparseGpt(w.Decode(), w.Rows, hessian, matrices.Pattern, options);
                }
                else
                {
                    result = Pruner.Prune(w.Decode(), w.Rows, w.Columns, matrices.Pattern, method, input, options);
                }
                weights.Add(PrunedWeights.For(name, result, matrices.Pattern));
                progress?.Report((weights.Count, names.Count));
            }
            return weights;
        }
        for (int l = 0; l < layers; l++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var pruned = target switch
            {
                PruningTarget.Heads h => StructuredPruning.Heads(model, l, h.Fraction, method, statistics, options),
                PruningTarget.FeedForwardUnits f => StructuredPruning.FeedForwardUnits(model, l, f.Fraction, method, statistics, options),
                _ => throw new ArgumentOutOfRangeException(nameof(target), target, "unknown pruning target"),
            };
            weights.AddRange(pruned.Select(p => PrunedWeights.Structured(p.Name, p.Result)));
            progress?.Report((l + 1, layers));
        }
        return weights;
    }
}

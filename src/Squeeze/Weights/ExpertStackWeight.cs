using System.Buffers;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// The routed experts of one projection of a mixture of experts, stacked as llama.cpp stacks them (<c>ffn_gate_exps</c> …,
/// [experts, rows, columns]) and seen as one [experts · rows, columns] matrix: expert e is rows [e · rows, (e + 1) · rows),
/// each expert a weight of its own, in any representation (a GGUF tensor's row views, or a native representation
/// encoded with that expert's statistics). The runtime multiplies <see cref="Experts"/> one at a time, each with the
/// tokens routed to it; the product of the whole stack runs every expert on every token.
/// </summary>
public sealed class ExpertStackWeight : LinearWeight
{
    /// <exception cref="ArgumentException">No expert, or experts of different shapes.</exception>
    public ExpertStackWeight(string name, IReadOnlyList<LinearWeight> experts)
        : base(name, checked(Check(name, experts).Count * experts[0].Rows), experts[0].Columns)
    {
        Experts = [.. experts];
        ExpertRows = experts[0].Rows;
    }

    /// <summary>The experts, each [<see cref="ExpertRows"/>, Columns].</summary>
    public IReadOnlyList<LinearWeight> Experts { get; }

    /// <summary>Rows of one expert.</summary>
    public int ExpertRows { get; }

    /// <summary>Every expert's stored bytes.</summary>
    public override long StoredBytes => Experts.Sum(e => e.StoredBytes);

    /// <summary>The experts' schemes, each named once (<c>experts 8 × uniform b4 g64</c>).</summary>
    public override string Scheme => $"experts {Experts.Count} × {string.Join(" | ", Experts.Select(e => e.Scheme).Distinct())}";

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        Experts[row / ExpertRows].DecodeRow(row % ExpertRows, destination);
    }

    /// <summary>Each expert's product into a pooled buffer (the inner products use the context's scratch), copied to its
    /// rows: exact, so as deterministic as the experts' products.</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(context);
        CheckProduct(x, tokens, y);
        if (tokens == 0)
            return;
        int n = ExpertRows;
        var outputs = ArrayPool<float>.Shared.Rent(tokens * n);
        var rows = new int[n];
        try
        {
            for (int e = 0; e < Experts.Count; e++)
            {
                Experts[e].Multiply(x[..(tokens * Columns)], tokens, context, outputs.AsSpan(0, tokens * n));
                for (int k = 0; k < n; k++)
                    rows[k] = e * n + k;
                RowScatter.Scatter(outputs.AsSpan(0, tokens * n), tokens, rows, y, Rows);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(outputs);
        }
    }

    private static IReadOnlyList<LinearWeight> Check(string name, IReadOnlyList<LinearWeight> experts)
    {
        ArgumentNullException.ThrowIfNull(experts);
        if (experts.Count == 0)
            throw new ArgumentException($"{name}: a stack of experts needs at least one", nameof(experts));
        foreach (var e in experts)
        {
            ArgumentNullException.ThrowIfNull(e, nameof(experts));
            if (e.Rows != experts[0].Rows || e.Columns != experts[0].Columns)
                throw new ArgumentException($"{name}: expert {e} is [{e.Rows}, {e.Columns}], expert 0 [{experts[0].Rows}, {experts[0].Columns}]", nameof(experts));
        }
        return experts;
    }
}

using Squeeze.Compression;
using Squeeze.Models;
using Squeeze.Tuning;

namespace Squeeze.Allocation;

/// <summary>
/// Every 2-D tensor of a model encoded once in every representation it can take, for the searches of
/// <see cref="Allocator"/> and <see cref="EvolutionarySearch"/>: a selection (one option index per tensor) composes a
/// model to measure and has an exact file size. <see cref="GgufCandidateSet"/> holds GGUF types,
/// <see cref="NativeCandidateSet"/> the native format's representations.
/// </summary>
public abstract class CandidateSet<T> : IDisposable where T : Candidate
{
    /// <summary>The candidates <paramref name="tensors"/> of the 2-D tensors of <paramref name="source"/>, one list per
    /// tensor in the model's order; <paramref name="units"/> groups the tensors that must take one option index together
    /// (each tensor alone when null).</summary>
    /// <exception cref="ArgumentException">The units do not hold every tensor exactly once, or a unit's tensors do not
    /// have the same representations in the same order.</exception>
    protected CandidateSet(Model source, IReadOnlyList<TensorCandidates<T>> tensors, IReadOnlyList<int[]>? units = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(tensors);
        Source = source;
        Tensors = tensors;
        Units = units ?? [.. Enumerable.Range(0, tensors.Count).Select(i => new[] { i })];
        unitOf = new int[tensors.Count];
        Array.Fill(unitOf, -1);
        for (int u = 0; u < Units.Count; u++)
        {
            var first = tensors[Units[u][0]];
            foreach (int i in Units[u])
            {
                if (unitOf[i] != -1)
                    throw new ArgumentException($"tensor '{tensors[i].Name}' is in two units", nameof(units));
                unitOf[i] = u;
                if (!tensors[i].Options.Select(c => c.Format).SequenceEqual(first.Options.Select(c => c.Format)))
                    throw new ArgumentException($"tensors '{first.Name}' and '{tensors[i].Name}' take one representation together but have different candidates", nameof(units));
            }
        }
        int missing = Array.IndexOf(unitOf, -1);
        if (missing >= 0)
            throw new ArgumentException($"tensor '{tensors[missing].Name}' is in no unit", nameof(units));
    }

    private readonly int[] unitOf;

    /// <summary>The model the candidates were made from.</summary>
    public Model Source { get; }

    /// <summary>The tensors that take a representation, in the model's order.</summary>
    public IReadOnlyList<TensorCandidates<T>> Tensors { get; }

    /// <summary>The tensors that take one option index together, in the order of their first tensor: one per tensor,
    /// except where the file stores several model tensors as one (a GGUF file of Phi-3 fuses q, k and v, and gate and
    /// up), whose parts need one type. Searches choose per unit.</summary>
    public IReadOnlyList<int[]> Units { get; }

    /// <summary>The bytes unit <paramref name="unit"/> adds to the file with option <paramref name="option"/>: its one
    /// tensor's <see cref="Candidate.FileBytes"/>, or for fused parts their bytes together padded once to the grain.</summary>
    public long UnitBytes(int unit, int option)
    {
        var parts = Units[unit];
        if (parts.Length == 1)
            return Tensors[parts[0]].Options[option].FileBytes;
        long bytes = 0;
        foreach (int i in parts)
            bytes += Tensors[i].Options[option].Bytes;
        return (bytes + Grain - 1) / Grain * Grain;
    }

    /// <summary>File bytes that do not depend on the selection (at least; an upper bound for the native format), a
    /// multiple of <see cref="Grain"/>.</summary>
    public abstract long Overhead { get; }

    /// <summary>Every <see cref="Candidate.FileBytes"/> and <see cref="Overhead"/> is a multiple of this.</summary>
    public abstract long Grain { get; }

    /// <summary>Weights in the model (every tensor), the denominator of bits per weight.</summary>
    public long Parameters => Source.ParameterCount;

    /// <summary>The selection with every tensor in its smallest candidate.</summary>
    public int[] Smallest() => new int[Tensors.Count];

    /// <summary>The selection with every tensor in its largest candidate.</summary>
    public int[] Largest() => Tensors.Select(t => t.Options.Count - 1).ToArray();

    /// <summary>The exact size of the file (or directory) the set writes for <paramref name="selection"/>; at most
    /// <see cref="Overhead"/> + Σ <see cref="Candidate.FileBytes"/>, with equality for GGUF.</summary>
    public virtual long FileBytes(IReadOnlyList<int> selection) => BoundBytes(selection);

    /// <summary><see cref="Overhead"/> + Σ <see cref="UnitBytes"/> of the selection: what the knapsack counts.</summary>
    public long BoundBytes(IReadOnlyList<int> selection)
    {
        Check(selection);
        long total = Overhead;
        for (int u = 0; u < Units.Count; u++)
            total += UnitBytes(u, selection[Units[u][0]]);
        return total;
    }

    /// <summary>Bits per weight of a file of <paramref name="fileBytes"/>: 8 · file bytes / parameters (header and padding included).</summary>
    public double BitsPerWeight(long fileBytes) => 8.0 * fileBytes / Parameters;

    /// <summary>The candidate chosen for tensor <paramref name="tensor"/>.</summary>
    public T Chosen(IReadOnlyList<int> selection, int tensor) => Tensors[tensor].Options[selection[tensor]];

    /// <summary>Each tensor of <paramref name="selection"/> as the report of a compression shows it: its chosen format, size,
    /// output error and single-swap KLD.</summary>
    public IReadOnlyList<TensorReport> Report(IReadOnlyList<int> selection) => Tensors.Select((t, i) =>
    {
        var c = Chosen(selection, i);
        return new TensorReport(t.Name, Source[t.Name].Type.ToString(), c.Format, t.Shape, c.Bytes, 8.0 * c.Bytes / t.Elements, c.Encoding, "H",
            ErrorBefore: null, c.OutputError, c.SwapKld, "budget search", Seconds: null);
    }).ToList();

    /// <summary>
    /// A model whose 2-D tensors are the selected candidates and whose other tensors are the source's; a selection entry
    /// of −1 keeps that tensor as in the source (single swaps). Valid while this set is; disposing the model releases
    /// nothing of the set.
    /// </summary>
    public abstract Model Compose(IReadOnlyList<int> selection);

    /// <summary>Writes the model of <paramref name="selection"/> to <paramref name="path"/> (a GGUF file, or a native model
    /// directory; never half-written) and returns its size in bytes, which is <see cref="FileBytes"/>. With
    /// <paramref name="tuning"/> (a <see cref="Tuner"/> run on <see cref="Compose"/>'s model of the same selection) its
    /// norms and weights are written in place of the selection's: the same sizes, so the same file size.</summary>
    public abstract long Write(IReadOnlyList<int> selection, string path, TuningResult? tuning = null);

    /// <summary>Sets the measured single-swap KLD of a candidate (error model 2).</summary>
    internal void SetSwapKld(int tensor, int option, double kld)
    {
        var list = (List<T>)Tensors[tensor].Options;
        list[option] = (T)(list[option] with { SwapKld = kld });
    }

    /// <summary>Releases what the candidates are stored in.</summary>
    public abstract void Dispose();

    /// <summary>Tensor name → chosen candidate, skipping entries of −1.</summary>
    protected Dictionary<string, T> Selected(IReadOnlyList<int> selection)
    {
        ArgumentNullException.ThrowIfNull(selection);
        if (selection.Count != Tensors.Count)
            throw new ArgumentException($"a selection needs {Tensors.Count} entries, got {selection.Count}", nameof(selection));
        var chosen = new Dictionary<string, T>(StringComparer.Ordinal);
        for (int i = 0; i < Tensors.Count; i++)
        {
            if (selection[i] == -1)
                continue;
            if ((uint)selection[i] >= (uint)Tensors[i].Options.Count)
                throw new ArgumentException($"tensor '{Tensors[i].Name}' has {Tensors[i].Options.Count} candidates, not {selection[i] + 1}", nameof(selection));
            chosen[Tensors[i].Name] = Tensors[i].Options[selection[i]];
        }
        return chosen;
    }

    /// <summary>Throws an <see cref="ArgumentException"/> unless <paramref name="selection"/> holds one valid candidate
    /// index per tensor, the same for every tensor of a unit.</summary>
    protected void Check(IReadOnlyList<int> selection)
    {
        ArgumentNullException.ThrowIfNull(selection);
        if (selection.Count != Tensors.Count)
            throw new ArgumentException($"a selection needs {Tensors.Count} entries, got {selection.Count}", nameof(selection));
        for (int i = 0; i < selection.Count; i++)
        {
            if ((uint)selection[i] >= (uint)Tensors[i].Options.Count)
                throw new ArgumentException($"tensor '{Tensors[i].Name}' has {Tensors[i].Options.Count} candidates, not {selection[i] + 1}", nameof(selection));
            int first = Units[unitOf[i]][0];
            if (selection[i] != selection[first])
                throw new ArgumentException($"tensors '{Tensors[first].Name}' and '{Tensors[i].Name}' are stored as one tensor and need one representation, not {Tensors[first].Options[selection[first]].Format} and {Tensors[i].Options[selection[i]].Format}", nameof(selection));
        }
    }
}

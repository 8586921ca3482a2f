using Squeeze.Tensors;

namespace Squeeze.Allocation;

/// <summary>One representation a tensor can take, encoded once.</summary>
/// <param name="Bytes">Bytes of the encoded data.</param>
/// <param name="FileBytes">Bytes the tensor adds to the file (padding and, for the native format, an upper bound of
/// its header entries included), a multiple of the set's <see cref="CandidateSet{T}.Grain"/>.</param>
/// <param name="Encoding">How the values were chosen ("gptq", "imatrix", …).</param>
/// <param name="OutputError">Relative calibration-weighted output error tr(E H Eᵀ) / tr(W H Wᵀ) (error model 1).</param>
/// <param name="SwapKld">Mean KL divergence against the source model on calibration chunks with this tensor alone in
/// this representation and every other tensor as in the source (error model 2); NaN until measured.</param>
public abstract record Candidate(long Bytes, long FileBytes, string Encoding, double OutputError, double SwapKld)
{
    /// <summary>The representation, e.g. <c>Q4_K</c> or <c>uniform b3 g96 asym</c>.</summary>
    public abstract string Format { get; }
}

/// <summary>A tensor in a GGUF type, its bytes at <paramref name="Offset"/> of the candidate file.</summary>
public sealed record GgufCandidate(GgmlType Type, long Offset, long Bytes, long FileBytes, string Encoding, double OutputError, double SwapKld)
    : Candidate(Bytes, FileBytes, Encoding, OutputError, SwapKld)
{
    /// <inheritdoc/>
    public override string Format => Type.ToString();
}

/// <summary>A tensor in a native-format representation (<paramref name="Scheme"/>, <paramref name="Bytes"/> stored), made
/// by the level whose spec is <paramref name="Level"/> (<see cref="Compression.NativeRepresentation.Spec"/>); its weight
/// is kept by its <see cref="NativeCandidateSet"/> in a mapped file and read back when a selection is composed.</summary>
public sealed record NativeCandidate(string Scheme, long Bytes, string Level, long FileBytes, string Encoding, double OutputError, double SwapKld)
    : Candidate(Bytes, FileBytes, Encoding, OutputError, SwapKld)
{
    /// <inheritdoc/>
    public override string Format => Scheme;

    /// <summary>Where the set keeps the weight: the index of its tensor's file and its key in that file.</summary>
    internal (int File, string Key) Stored { get; init; }
}

/// <summary>The representations one tensor can take, ascending by size.</summary>
/// <param name="Name">llama.cpp's tensor name.</param>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="Options">The candidates, ascending by file bytes.</param>
public sealed record TensorCandidates<T>(string Name, long[] Shape, IReadOnlyList<T> Options) where T : Candidate
{
    /// <summary>Weights in the tensor.</summary>
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
}

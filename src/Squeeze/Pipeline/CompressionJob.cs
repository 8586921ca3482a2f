using Squeeze.Allocation;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Pruning;
using Squeeze.Quantization;
using Squeeze.Tuning;

namespace Squeeze.Pipeline;

/// <summary>What a compression makes: a named mix of GGUF types, or each tensor's format chosen under a size budget.</summary>
public abstract record CompressionTarget;

/// <summary>llama.cpp's named mix (<see cref="QuantizationMix"/>): each tensor's type by the mix's rules, written as GGUF.</summary>
/// <param name="Mix">The mix.</param>
/// <param name="Pure">Every 2-D tensor in the mix's base type (llama-quantize <c>--pure</c>).</param>
/// <param name="Overrides">Per-tensor type overrides, first match wins.</param>
public sealed record MixTarget(QuantizationMix Mix, bool Pure = false, IReadOnlyList<TensorTypeOverride>? Overrides = null) : CompressionTarget;

/// <summary>Each tensor's format chosen to fit a whole-output byte budget with the least measured damage.</summary>
/// <param name="Bytes">The budget in bytes, or null to take it from <paramref name="BitsPerWeight"/>.</param>
/// <param name="BitsPerWeight">The budget as output bytes × 8 / parameters, or null when <paramref name="Bytes"/> is given.</param>
/// <param name="Native">True for Squeeze's native representations (a directory), false for GGUF types (a file).</param>
/// <param name="Representations">The native levels the search may choose; null for <see cref="NativeRepresentation.Defaults"/>.</param>
/// <param name="Search">Knapsack alone, or evolution after it.</param>
/// <param name="Evolution">Settings of the evolutionary search.</param>
/// <param name="Swaps">Every candidate's single-swap KLD measured, or predicted from a sample (<see cref="Allocator.PredictSwaps"/>).</param>
/// <param name="Candidates">GGUF candidates encoded with the job's method, or by rounding with the method applied to the
/// chosen types only (<see cref="CandidateEncoding"/>).</param>
public sealed record BudgetTarget(long? Bytes, double? BitsPerWeight, bool Native = false, IReadOnlyList<NativeRepresentation>? Representations = null,
    SearchMethod Search = SearchMethod.Knapsack, EvolutionOptions? Evolution = null, SwapMeasurement Swaps = SwapMeasurement.Auto,
    CandidateEncoding Candidates = CandidateEncoding.Auto) : CompressionTarget;

/// <summary>Every block's linear weights pruned by <paramref name="Method"/> to <paramref name="Pattern"/>, the kept values
/// in f16, written as a native directory (GGUF has no sparse tensors); the embedding and classifier are kept as stored.</summary>
/// <param name="Pattern">What is removed: a fraction per row, N of every M, whole heads or feed-forward units.</param>
/// <param name="Method">Magnitude, Wanda (needs calibration) or SparseGPT (needs calibration with Gram matrices).</param>
public sealed record PruneTarget(PruningTarget Pattern, PruningMethod Method) : CompressionTarget;

/// <summary>Everything <see cref="CompressionPipeline.Run"/> needs besides the model.</summary>
public sealed record CompressionJob
{
    /// <summary>A named mix or a size budget.</summary>
    public required CompressionTarget Target { get; init; }

    /// <summary>How tensors (or every candidate of a budget search) are encoded.</summary>
    public CompressionMethod Method { get; init; } = CompressionMethod.Gptq;

    /// <summary>The calibration text; needed by every method but round-to-nearest, unless <see cref="Statistics"/> are given.</summary>
    public string? CalibrationText { get; init; }

    /// <summary>Statistics collected earlier (<c>squeeze calibrate</c>, or one calibration shared by several jobs) instead of
    /// calibrating again; with the Gram matrix for GPTQ.</summary>
    public CalibrationStatistics? Statistics { get; init; }

    /// <summary>Calibration tokens in whole chunks; 0 means the whole text.</summary>
    public long CalibrationTokens { get; init; }

    /// <summary>Tokens per calibration chunk.</summary>
    public int ContextLength { get; init; } = 256;

    /// <summary>GPTQ's damping, as a fraction of the Hessian's mean diagonal.</summary>
    public double Damping { get; init; } = 0.01;

    /// <summary>GPTQ processes columns by descending Hessian diagonal.</summary>
    public bool ActivationOrder { get; init; } = true;

    /// <summary>Refinement passes after GPTQ (a named mix only; null for the method's default).</summary>
    public int? RefinePasses { get; init; }

    /// <summary>Statistics of layer l collected on the model whose earlier layers are already compressed (a named mix only).</summary>
    public bool Sequential { get; init; }

    /// <summary>End-to-end tuning of what a budget search chose, before it is written; null for none.</summary>
    public TuningOptions? Tuning { get; init; }

    /// <summary>Keep the job's progress beside the output and continue an interrupted run of the same job (a named mix
    /// only; see <see cref="CompressionOptions.Resume"/>).</summary>
    public bool Resume { get; init; }

    /// <summary>Memory the job may use, in bytes (a named mix or a GGUF size target: refused before any work when
    /// estimated to need more; a native size target, which has no estimate, refuses a limit); 0 means what the machine
    /// has available.</summary>
    public long MemoryLimit { get; init; }

    /// <summary>Threads to compute with.</summary>
    public int Threads { get; init; } = 1;

    /// <summary>Where each block's tensors are encoded: a named mix's tensors, and a GGUF size target's candidates (every
    /// tensor in every type); see <see cref="CompressionOptions.Workers"/>.</summary>
    public ITensorWorkers Workers { get; init; } = TensorWorkers.InProcess;

    /// <summary>Where each block's shards of calibration chunks are calibrated; see <see cref="CompressionOptions.CalibrationWorkers"/>.</summary>
    public ICalibrationWorkers CalibrationWorkers { get; init; } = Calibration.CalibrationWorkers.InProcess;

    /// <summary>The GGUF file or native directory to write; null to choose without writing (a plan, budget targets only).</summary>
    public string? Output { get; init; }
}

using Squeeze.Tuning;

namespace Squeeze.Compression;

/// <summary>One tensor of a compressed model, whichever way it was made (a named mix or a budget search, GGUF or native).</summary>
/// <param name="Name">llama.cpp's tensor name.</param>
/// <param name="SourceType">The type in the source model (a GGUF type name).</param>
/// <param name="Format">What was written: a GGUF type name (<c>Q4_K</c>) or a native representation's scheme.</param>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="Bytes">Bytes of the tensor's data as written.</param>
/// <param name="BitsPerWeight">8 · bytes / elements.</param>
/// <param name="Encoding">How the values were chosen: "copy", "rtn", "imatrix", "gptq" … (possibly followed by why another method was used).</param>
/// <param name="ErrorMetric">"H" (calibration Hessian XᵀX / n of the tensor's input), "diag" (its diagonal, the imatrix) or "none" (plain squared error).</param>
/// <param name="ErrorBefore">Relative error of plain round-to-nearest in the same type, tr(E H Eᵀ) / tr(W H Wᵀ), E = W − Q; null where not measured (a budget search).</param>
/// <param name="ErrorAfter">The same relative error of the values written.</param>
/// <param name="SwapKld">Mean KLD on calibration chunks of the model with this tensor alone in this format; null where not measured (a named mix).</param>
/// <param name="Reason">Which rule chose <paramref name="Format"/>: a mix's rule, or "budget search".</param>
/// <param name="Seconds">Time spent encoding and measuring the tensor; null where candidates were encoded together.</param>
public sealed record TensorReport(string Name, string SourceType, string Format, long[] Shape, long Bytes, double BitsPerWeight,
    string Encoding, string ErrorMetric, double? ErrorBefore, double ErrorAfter, double? SwapKld, string Reason, double? Seconds);

/// <summary>What end-to-end tuning did before the model was written (<c>compress --tune</c>).</summary>
/// <param name="Scope">What was tuned: "norms", or "norms and weights".</param>
/// <param name="Parameters">Tuned values.</param>
/// <param name="TrainingTokens">Tokens trained on per epoch.</param>
/// <param name="Steps">Optimizer steps taken.</param>
/// <param name="BestStep">The step whose parameters were kept (0: none improved, written untuned).</param>
/// <param name="HeldOutKldBefore">Held-out calibration KLD of the untuned model.</param>
/// <param name="HeldOutKldAfter">Held-out calibration KLD of what was written.</param>
/// <param name="LearningRate">The first step size of the run that was kept.</param>
/// <param name="Seconds">Time spent tuning.</param>
public sealed record TuningSummary(string Scope, long Parameters, long TrainingTokens, int Steps, int BestStep, double HeldOutKldBefore, double HeldOutKldAfter,
    double LearningRate, double Seconds)
{
    /// <summary>The summary of <paramref name="result"/>.</summary>
    public static TuningSummary Of(TuningResult result, string scope)
    {
        ArgumentNullException.ThrowIfNull(result);
        return new TuningSummary(scope, result.Parameters, result.TrainingTokens, result.Steps, result.BestStep, result.HeldOutKldBefore, result.HeldOutKldAfter,
            result.LearningRate, result.Seconds);
    }
}

/// <summary>The time each stage of a compression took, in seconds (0 for a stage that did not run).</summary>
/// <param name="Calibration">Collecting activation statistics.</param>
/// <param name="Encoding">Encoding the tensors (every candidate of a budget search), AWQ included.</param>
/// <param name="Measuring">Measuring every candidate's single-swap KLD (a budget search).</param>
/// <param name="Search">Searching the budget (knapsack, evolution).</param>
/// <param name="Tuning">End-to-end tuning.</param>
/// <param name="Total">The whole job, writing included.</param>
public sealed record StageSeconds(double Calibration, double Encoding, double Measuring, double Search, double Tuning, double Total);

/// <summary>What a compression made: the one report of <c>squeeze compress</c> and <c>squeeze plan</c>, for a named mix or a
/// size budget, in GGUF or the native format.</summary>
/// <param name="Model">The source model's path.</param>
/// <param name="Output">The file or directory written, or null for a plan.</param>
/// <param name="Format">"gguf" or "native".</param>
/// <param name="Target">The mix's name, the budget as "N bytes" / "X bpw", or the pruning ("wanda 2:4").</param>
/// <param name="Method">How tensors were quantized; null for a pruned model (its <paramref name="Target"/> names the pruning).</param>
/// <param name="Sequential">True when statistics were collected layer by layer on the partly compressed model.</param>
/// <param name="FileBytes">Size of the output (every file of a native directory).</param>
/// <param name="Parameters">Weights in the model.</param>
/// <param name="BitsPerWeight">8 · file bytes / parameters.</param>
/// <param name="Budget">The byte budget of a size target, or null for a mix.</param>
/// <param name="Search">"knapsack" or "evo" for a size target.</param>
/// <param name="PredictedKld">Σ of the tensors' single-swap KLD (a size target).</param>
/// <param name="StartKld">Calibration KLD of the knapsack's answer before evolution, when evolution ran.</param>
/// <param name="SearchKld">Calibration KLD after evolution, when it ran.</param>
/// <param name="Generations">Generations of evolution, when it ran.</param>
/// <param name="CalibrationTokens">Tokens the statistics were collected on (per pass), 0 without calibration.</param>
/// <param name="CalibrationPasses">Calibration passes over the text.</param>
/// <param name="Seconds">Time of each stage.</param>
/// <param name="AwqAlphas">AWQ's α per group (layer 0 attention, layer 0 feed-forward, layer 1 …; a mixture of experts'
/// feed-forward: its gate and up, then each down of an expert that calibration tokens reached), empty unless AWQ ran.</param>
/// <param name="Tuning">What tuning did, when it ran.</param>
/// <param name="Note">What the caller should know (a budget above the largest file …), or empty.</param>
/// <param name="Tensors">Per tensor, in file order.</param>
public sealed record CompressionReport(string Model, string? Output, string Format, string Target, CompressionMethod? Method, bool Sequential, long FileBytes,
    long Parameters, double BitsPerWeight, long? Budget, string? Search, double? PredictedKld, double? StartKld, double? SearchKld, int? Generations,
    long CalibrationTokens, int CalibrationPasses, StageSeconds Seconds, IReadOnlyList<float> AwqAlphas, TuningSummary? Tuning, string Note,
    IReadOnlyList<TensorReport> Tensors)
{
    /// <summary>Seconds each block took to calibrate, encode and run (a named mix; empty otherwise), in layer order.</summary>
    public IReadOnlyList<double> LayerSeconds { get; init; } = [];

    /// <summary>The peak memory the job was estimated to allocate before it started (<see cref="ResourceEstimate"/>; a
    /// named mix or a size target), or null.</summary>
    public long? EstimatedMemoryBytes { get; init; }

    /// <summary>Each stage's estimated memory, in the job's order (<see cref="ResourceEstimate.Stages"/>: a size
    /// target's); empty when the job is one stage.</summary>
    public IReadOnlyList<StageEstimate> EstimatedStages { get; init; } = [];
}

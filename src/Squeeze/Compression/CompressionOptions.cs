using Squeeze.Calibration;
using Squeeze.Quantization;

namespace Squeeze.Compression;

/// <summary>How each quantized tensor's values are chosen.</summary>
public enum CompressionMethod
{
    /// <summary>Round-to-nearest with no calibration (what <c>squeeze convert</c> and llama-quantize without imatrix do).</summary>
    Rtn,

    /// <summary>Round-to-nearest with the importance matrix (mean x² per input column) weighting the scale fits, as llama.cpp's imatrix.</summary>
    Imatrix,

    /// <summary>GPTQ: columns quantized in turn, each one's error compensated on the rest through the input's Hessian XᵀX / n.</summary>
    Gptq,

    /// <summary>AWQ's per-channel scales folded into the RMSNorm weights first, then GPTQ on the scaled model.</summary>
    AwqGptq,
}

/// <summary>Settings of <see cref="Compressor.Compress"/>.</summary>
public sealed record CompressionOptions
{
    /// <summary>The named mix that chooses each tensor's type (llama.cpp's rules).</summary>
    public QuantizationMix Mix { get; init; } = QuantizationMix.Q4_0;

    /// <summary>Every 2-D tensor in the mix's base type (llama-quantize <c>--pure</c>).</summary>
    public bool Pure { get; init; }

    /// <summary>Per-tensor type overrides, first match wins.</summary>
    public IReadOnlyList<TensorTypeOverride> Overrides { get; init; } = [];

    /// <summary>How the values are chosen.</summary>
    public CompressionMethod Method { get; init; } = CompressionMethod.Gptq;

    /// <summary>Calibration tokens (whole chunks); 0 (the default) means every whole chunk of the text, as llama-imatrix reads it all.</summary>
    public long CalibrationTokens { get; init; }

    /// <summary>Tokens per calibration chunk; 0 means 256 or the model's context length, whichever is smaller.</summary>
    public int ContextLength { get; init; } = 256;

    /// <summary>GPTQ damping added to H's diagonal, as a fraction of its mean diagonal.</summary>
    public double Damping { get; init; } = 0.01;

    /// <summary>Refinement after GPTQ (<see cref="GptqOptions.RefinePasses"/>): coordinate-descent passes and scale re-fits; 0 is plain GPTQ.</summary>
    public int RefinePasses { get; init; } = 4;

    /// <summary>Measure plain round-to-nearest's output error for each tensor's report (<see cref="TensorReport.ErrorBefore"/>):
    /// with a calibrated method it costs one more rounding and output error per tensor, which the candidates of a budget
    /// search, reporting only their own error, do without.</summary>
    public bool MeasureErrorBefore { get; init; } = true;

    /// <summary>How the roundings (rtn and imatrix, and GPTQ's "before") choose the k-quants' and IQ4_NL's scales:
    /// refined (the default) or llama.cpp's search alone, which the rounded candidates of a large GPTQ budget job use
    /// (only their errors are kept: the chosen types are encoded again with GPTQ).</summary>
    public ScaleSearch ScaleSearch { get; init; } = ScaleSearch.Refined;

    /// <summary>GPTQ processes columns by descending H[i, i].</summary>
    public bool ActivationOrder { get; init; } = true;

    /// <summary>
    /// Calibrate each block on the output of the blocks before it as already compressed (and AWQ-scaled), GPTQ's
    /// sequential scheme, so each block compensates their error; otherwise each block is calibrated on the original
    /// model's activations. Either way the model runs block by block, once. Only for <see cref="CompressionMethod.Gptq"/>
    /// and <see cref="CompressionMethod.AwqGptq"/>; not with <see cref="Statistics"/>.
    /// </summary>
    public bool Sequential { get; init; }

    /// <summary>Settings of AWQ's scale search (<see cref="CompressionMethod.AwqGptq"/>).</summary>
    public AwqOptions Awq { get; init; } = new();

    /// <summary>Statistics collected before (a calibration file) instead of calibrating; they must be of the same model,
    /// with the Gram matrix for GPTQ and AWQ.</summary>
    public CalibrationStatistics? Statistics { get; init; }

    /// <summary>Keep the job's progress beside the output after each finished block (a hidden directory
    /// <c>.NAME.resume</c>) and, when one is there from an interrupted run of the same job, continue from its last finished
    /// block; the output is the same bytes as an uninterrupted run's. The directory is removed when the output is
    /// written. Without it, an interrupted job leaves nothing behind.</summary>
    public bool Resume { get; init; }

    /// <summary>Memory the job may use, in bytes; a job estimated to need more (<see cref="ResourceEstimate"/>) is refused
    /// before any work. 0 means what the machine has available when the job starts.</summary>
    public long MemoryLimit { get; init; }

    /// <summary>Threads for calibration and quantization; results do not depend on it.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>Values per band of rows in which a tensor is encoded in a GGUF type (at least one row per band): rows are
    /// encoded independently, so a large tensor (a 151,936-token classifier) holds one band's f32 copies, not its own;
    /// the bytes do not depend on it. Tests set it small to encode small tensors in several bands.</summary>
    internal int EncodingBandValues { get; init; } = TensorEncoder.BandValues;

    /// <summary>Where each block's tensors are encoded: in this process (the default), or as independent work items
    /// elsewhere (a cluster); the file written is the same bytes.</summary>
    public ITensorWorkers Workers { get; init; } = TensorWorkers.InProcess;

    /// <summary>Where each block's shards of calibration chunks are calibrated (<see cref="CalibrationOptions.Workers"/>): in
    /// this process (the default), or as independent work items elsewhere; the statistics are the same bits.</summary>
    public ICalibrationWorkers CalibrationWorkers { get; init; } = Calibration.CalibrationWorkers.InProcess;
}

/// <summary>Progress of a compression: the stage ("calibrating", "awq", "quantizing", "writing"), steps done of the stage's total, and a note.</summary>
public readonly record struct CompressionProgress(string Stage, int Done, int Total, string Note);

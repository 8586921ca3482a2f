using Squeeze.Calibration;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;

namespace Squeeze.Compression;

/// <summary>One tensor encoded in one type by <see cref="TensorEncoder"/>: the bytes to write and the same report
/// <see cref="Compressor.Compress"/> gives (error before and after, encoding used).</summary>
public sealed record EncodedTensorData(byte[] Data, TensorReport Report);

/// <summary>
/// <see cref="Compressor"/>'s per-tensor step on its own: encodes any tensor of a model in any type with the options'
/// method (RTN, imatrix RTN or GPTQ with one prepared Hessian per shared input, kept between calls), so a caller can
/// try several types per tensor. Statistics are given (calibrate first); sequential mode and AWQ are not available here.
/// </summary>
public sealed class TensorEncoder
{
    private readonly Model model;
    private readonly Compressor.Run run;
    private readonly Dictionary<(int, LinearInput), ActivationStatistics>? stats;
    private readonly Dictionary<ActivationStatistics, GptqHessian> hessians = new(ReferenceEqualityComparer.Instance);

    /// <exception cref="ArgumentException">AWQ or sequential options, statistics missing for a calibrated method, or
    /// statistics of another model or without the Gram matrix GPTQ needs.</exception>
    public TensorEncoder(Model model, CalibrationStatistics? statistics, CompressionOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Method == CompressionMethod.AwqGptq || options.Sequential)
            throw new ArgumentException("per-tensor encoding supports rtn, imatrix and gptq, not AWQ or sequential mode", nameof(options));
        if (options.Method != CompressionMethod.Rtn)
        {
            if (statistics is null)
                throw new ArgumentException($"{options.Method} needs calibration statistics", nameof(statistics));
            Compressor.CheckStatistics(model, statistics, options.Method == CompressionMethod.Gptq);
            stats = statistics.Entries.ToDictionary(e => (e.Layer, e.Kind));
        }
        this.model = model;
        run = new Compressor.Run(model, options, null, CancellationToken.None);
    }

    /// <summary>Encodes tensor <paramref name="name"/> in <paramref name="type"/> (copied when it is the tensor's own type).</summary>
    /// <exception cref="ArgumentException">The tensor's rows do not fit <paramref name="type"/>'s blocks.</exception>
    public EncodedTensorData Encode(string name, GgmlType type)
    {
        var tensor = model[name];
        if (tensor.Columns % GgmlTypes.BlockSize(type) != 0)
            throw new ArgumentException($"tensor '{name}' has rows of {tensor.Columns} values, not a multiple of {type}'s block of {GgmlTypes.BlockSize(type)}", nameof(type));
        var target = new TensorPlan(name, tensor.Shape, tensor.Type, type, Quantized: true, "requested");
        return run.Encode(target, tensor, stats, hessians).Encoded;
    }
}

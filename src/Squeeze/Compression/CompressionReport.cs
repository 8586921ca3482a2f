using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Compression;

/// <summary>One tensor of a compressed file.</summary>
/// <param name="Name">llama.cpp's tensor name.</param>
/// <param name="SourceType">The type in the source model.</param>
/// <param name="Type">The type written.</param>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="Bytes">Bytes of the tensor's data in <paramref name="Type"/>.</param>
/// <param name="BitsPerWeight">8 · bytes / elements.</param>
/// <param name="Encoding">How the values were chosen: "copy", "rtn", "imatrix", "gptq" (possibly followed by why another method was used).</param>
/// <param name="ErrorMetric">"H" (calibration Hessian XᵀX / n of the tensor's input), "diag" (its diagonal, the imatrix) or "none" (plain squared error).</param>
/// <param name="ErrorBefore">Relative error of plain round-to-nearest: tr(E H Eᵀ) / tr(W H Wᵀ), E = W − Q, W the tensor as given to the quantizer.</param>
/// <param name="ErrorAfter">The same relative error of the values written.</param>
/// <param name="Reason">Which rule of the mix chose <paramref name="Type"/>.</param>
/// <param name="Seconds">Time spent encoding and measuring the tensor.</param>
public sealed record CompressedTensorReport(string Name, GgmlType SourceType, GgmlType Type, long[] Shape, long Bytes, double BitsPerWeight,
    string Encoding, string ErrorMetric, double ErrorBefore, double ErrorAfter, string Reason, double Seconds);

/// <summary>What <see cref="Compressor.Compress"/> wrote and how long each stage took.</summary>
/// <param name="Output">The file written.</param>
/// <param name="Mix">The mix's name.</param>
/// <param name="Method">The method.</param>
/// <param name="Sequential">True when statistics were collected layer by layer on the partly quantized model.</param>
/// <param name="FileBytes">Size of the file.</param>
/// <param name="Parameters">Weights in the model.</param>
/// <param name="BitsPerWeight">8 · tensor bytes / parameters.</param>
/// <param name="CalibrationTokens">Tokens the statistics were collected on (per pass), 0 without calibration.</param>
/// <param name="CalibrationPasses">Calibration passes over the text (1, or one per layer in sequential mode; 0 with given statistics or RTN).</param>
/// <param name="CalibrationSeconds">Time spent collecting statistics.</param>
/// <param name="QuantizationSeconds">Time spent on AWQ, quantizing, measuring and writing.</param>
/// <param name="Seconds">Total time.</param>
/// <param name="AwqAlphas">AWQ's α per group (layer 0 attention, layer 0 feed-forward, layer 1 …), empty unless AWQ ran.</param>
/// <param name="Tensors">Per-tensor report in file order.</param>
public sealed record CompressionReport(string Output, string Mix, CompressionMethod Method, bool Sequential, long FileBytes, long Parameters, double BitsPerWeight,
    long CalibrationTokens, int CalibrationPasses, double CalibrationSeconds, double QuantizationSeconds, double Seconds,
    IReadOnlyList<float> AwqAlphas, IReadOnlyList<CompressedTensorReport> Tensors);

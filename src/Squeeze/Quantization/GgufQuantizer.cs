using System.Diagnostics;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Tensors;

namespace Squeeze.Quantization;

/// <summary>One tensor of a written file: its type, size and how far its decoded values are from the source's.</summary>
public sealed record TensorReport(string Name, GgmlType SourceType, GgmlType Type, long[] Shape, long Bytes, double BitsPerWeight, double RelativeRmsError, string Reason, double Seconds);

/// <summary>What <see cref="GgufQuantizer.Write"/> wrote, and with which scale search.</summary>
public sealed record ConversionReport(string Output, string Mix, ScaleSearch Search, long FileBytes, long Parameters, double BitsPerWeight, double Seconds, IReadOnlyList<TensorReport> Tensors);

/// <summary>Writes a model as a GGUF file with every tensor in the type a <see cref="QuantizationPlan"/> gave it.
/// Tensors are encoded one at a time while the file streams out, so memory holds one tensor at most.</summary>
public static class GgufQuantizer
{
    /// <summary>llama.cpp's <c>llama_ftype</c> for a mix (the value of <c>general.file_type</c>).</summary>
    public static uint FileType(QuantizationMix mix)
    {
        ArgumentNullException.ThrowIfNull(mix);
        return mix.Name switch
        {
            "F32" => 0,
            "F16" => 1,
            "Q4_0" => 2,
            "Q4_1" => 3,
            "Q8_0" => 7,
            "Q5_0" => 8,
            "Q5_1" => 9,
            "Q2_K" => 10,
            "Q3_K_S" => 11,
            "Q3_K_M" => 12,
            "Q3_K_L" => 13,
            "Q4_K_S" => 14,
            "Q4_K_M" => 15,
            "Q5_K_S" => 16,
            "Q5_K_M" => 17,
            "Q6_K" => 18,
            "IQ4_NL" => 25,
            "BF16" => 32,
            _ => throw new ArgumentException($"no llama.cpp file type for mix {mix.Name}", nameof(mix)),
        };
    }

    /// <summary>
    /// Writes <paramref name="model"/> to <paramref name="path"/> with the types of <paramref name="plan"/>;
    /// <paramref name="importance"/> optionally gives per-column weights by tensor name. Reports progress as
    /// (tensors done, tensors in all, name of the tensor being encoded). <paramref name="search"/>: how the k-quants and
    /// IQ4_NL choose their scales (<see cref="ScaleSearch.LlamaCpp"/> without importance: llama-quantize's bytes).
    /// </summary>
    public static ConversionReport Write(Model model, QuantizationPlan plan, string path, IReadOnlyDictionary<string, float[]>? importance = null,
        int threads = 0, IProgress<(int Done, int Total, string Tensor)>? progress = null, ScaleSearch search = ScaleSearch.Refined)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(plan);
        var clock = Stopwatch.StartNew();
        var reports = new List<TensorReport>();
        int total = model.Tensors.Count;
        byte[] buffer = [];
        GgufModelWriter.Write(model, path, FileType(plan.Mix), tensor =>
        {
            var target = plan[tensor.Name];
            return new EncodedTensor(target.Type, stream =>
            {
                progress?.Report((reports.Count, total, tensor.Name));
                long start = Stopwatch.GetTimestamp();
                double error = 0;
                if (target.Type == tensor.Type)
                {
                    EncodedTensor.Copy(tensor).WriteData(stream);
                }
                else
                {
                    // One buffer for every tensor's encoding, grown to the largest: no per-tensor large allocation.
                    if (buffer.Length < target.ByteLength)
                        buffer = new byte[target.ByteLength];
                    var bytes = buffer.AsSpan(0, checked((int)target.ByteLength));
                    float[]? weights = importance is not null && importance.TryGetValue(tensor.Name, out var w) ? w : null;
                    var (errorSquares, signalSquares) = Quantize.Tensor(tensor, target.Type, weights, bytes, threads, search);
                    error = signalSquares > 0 ? Math.Sqrt(errorSquares / signalSquares) : 0;
                    stream.Write(bytes);
                }
                reports.Add(new TensorReport(tensor.Name, tensor.Type, target.Type, tensor.Shape, target.ByteLength,
                    8.0 * target.ByteLength / tensor.ElementCount, error, target.Reason, Stopwatch.GetElapsedTime(start).TotalSeconds));
            });
        });
        progress?.Report((total, total, ""));
        long parameters = model.ParameterCount;
        long fileBytes = new FileInfo(path).Length;
        return new ConversionReport(path, plan.Mix.Name, search, fileBytes, parameters, 8.0 * reports.Sum(r => r.Bytes) / parameters, clock.Elapsed.TotalSeconds, reports);
    }
}

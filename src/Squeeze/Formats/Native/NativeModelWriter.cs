using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.Native;

/// <summary>
/// Writes a <see cref="Model"/> as a Squeeze native model directory (docs/FORMAT.md): <c>config.json</c> in Hugging
/// Face's shape, <c>model.safetensors</c> whose chosen 2-D weights are stored in the uniform scheme (every other tensor
/// as plain F32/F16/BF16; block-quantized GGUF tensors are dequantized to F32), and <c>tokenizer.model</c> plus
/// <c>tokenizer_config.json</c>. Tensor names are llama.cpp's GGUF names, rows in the model's own order. Everything is
/// written into a temporary directory beside the destination, which is renamed into place only when complete.
/// </summary>
public static class NativeModelWriter
{
    /// <summary>Writes <paramref name="model"/> to <paramref name="directory"/>, which must not exist or be empty.</summary>
    /// <param name="model">The model to write.</param>
    /// <param name="directory">Destination directory.</param>
    /// <param name="schemes">Tensor name → scheme, for each tensor to store quantized (2-D, rows divisible by the group).</param>
    /// <param name="importance">Optional tensor name → per-column importance (length = columns, values ≥ 0); a tensor
    /// listed here is encoded with the importance-weighted shrink search (<see cref="UniformCodec.EncodeRow"/>).</param>
    /// <returns>The files written, relative to <paramref name="directory"/>.</returns>
    /// <exception cref="ArgumentException">A scheme names a missing or non-2-D tensor, or its group does not divide the row; an importance vector has the wrong length.</exception>
    /// <exception cref="NotSupportedException">The vocabulary is not SentencePiece, or the architecture has no Hugging Face config.</exception>
    /// <exception cref="IOException">The destination exists and is not empty.</exception>
    public static IReadOnlyList<string> Write(Model model, string directory, IReadOnlyDictionary<string, UniformScheme> schemes,
        IReadOnlyDictionary<string, float[]>? importance = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(schemes);
        importance ??= new Dictionary<string, float[]>();
        HuggingFaceWriter.HuggingFaceArchitecture(model.Config); // refuses an architecture with no config shape before any work
        if (model.Vocabulary.Kind != TokenizerKind.SentencePiece)
            throw new NotSupportedException($"{model.Source}: the vocabulary is {model.Vocabulary.Kind}; format version 1 writes only SentencePiece tokenizers (tokenizer.model)");
        foreach (var (name, scheme) in schemes)
        {
            ArgumentNullException.ThrowIfNull(scheme, nameof(schemes));
            if (!model.TryGetTensor(name, out var t))
                throw new ArgumentException($"{model.Source}: no tensor '{name}' to quantize", nameof(schemes));
            if (t.Shape.Length != 2)
                throw new ArgumentException($"tensor '{name}' has shape [{string.Join(", ", t.Shape)}]; only 2-D weights can be quantized", nameof(schemes));
            if (t.Columns % scheme.Group != 0)
                throw new ArgumentException($"tensor '{name}': group size {scheme.Group} does not divide the row length {t.Columns}", nameof(schemes));
        }
        foreach (var (name, weights) in importance)
        {
            if (!schemes.ContainsKey(name))
                throw new ArgumentException($"importance is given for '{name}', which is not quantized", nameof(importance));
            if (weights.Length != model[name].Columns)
                throw new ArgumentException($"importance for '{name}' has {weights.Length} values but its rows have {model[name].Columns}", nameof(importance));
        }

        string target = Path.GetFullPath(directory);
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new IOException($"{target} already exists and is not empty; refusing to overwrite it");
        string trimmed = target.TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(trimmed) ?? ".";
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, $".{Path.GetFileName(trimmed)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        try
        {
            BuildWeights(model, schemes, importance).Write(Path.Combine(temp, NativeFormat.WeightsFile));
            HuggingFaceWriter.WriteConfig(Path.Combine(temp, NativeFormat.ConfigFile), model, torchDtype: "float32");
            HuggingFaceWriter.WriteTokenizer(model.Vocabulary, temp);
            if (Directory.Exists(target))
                Directory.Delete(target); // empty, checked above
            Directory.Move(temp, target);
            return [NativeFormat.WeightsFile, NativeFormat.ConfigFile, "tokenizer.model", "tokenizer_config.json"];
        }
        catch
        {
            if (Directory.Exists(temp))
                Directory.Delete(temp, recursive: true);
            throw;
        }
    }

    /// <summary>Encodes a 2-D tensor: packed codes [rows, RowBytes(cols)], f16 scales [rows, cols/group] and (asymmetric)
    /// f16 mins, as raw little-endian bytes. Deterministic: the same input always gives the same bytes.</summary>
    /// <exception cref="ArgumentException">The tensor holds a NaN or infinity, or the group does not divide the row.</exception>
    public static (byte[] Codes, byte[] Scales, byte[] Mins) Encode(Tensor tensor, UniformScheme scheme, ReadOnlySpan<float> importance, bool search)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentNullException.ThrowIfNull(scheme);
        long rows = tensor.Rows;
        int columns = checked((int)tensor.Columns);
        scheme.CheckColumns(columns);
        int groups = columns / scheme.Group;
        int rowBytes = (int)scheme.RowBytes(columns);
        var codes = new byte[checked(rows * rowBytes)];
        var scales = new ushort[checked(rows * groups)];
        var mins = new ushort[scheme.Symmetric ? 0 : rows * groups];
        var values = new float[columns];
        var rowCodes = new byte[columns];
        for (long r = 0; r < rows; r++)
        {
            Dequantize.Row(tensor.Type, tensor.Row(r), values);
            try
            {
                UniformCodec.EncodeRow(values, importance, scheme, search, rowCodes,
                    scales.AsSpan((int)(r * groups), groups), scheme.Symmetric ? default : mins.AsSpan((int)(r * groups), groups));
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"tensor '{tensor.Name}' row {r}: {e.Message}", nameof(tensor), e);
            }
            UniformCodec.Pack(rowCodes, scheme.Bits, codes.AsSpan((int)(r * rowBytes), rowBytes));
        }
        return (codes, ToBytes(scales), ToBytes(mins));
    }

    private static SafetensorsWriter BuildWeights(Model model, IReadOnlyDictionary<string, UniformScheme> schemes, IReadOnlyDictionary<string, float[]> importance)
    {
        var writer = new SafetensorsWriter();
        writer.Metadata[NativeFormat.FormatKey] = NativeFormat.FormatName;
        writer.Metadata[NativeFormat.VersionKey] = NativeFormat.Version.ToString(CultureInfo.InvariantCulture);
        foreach (var tensor in model.Tensors)
        {
            if (schemes.TryGetValue(tensor.Name, out var scheme))
            {
                bool search = importance.TryGetValue(tensor.Name, out var weights);
                var (codes, scales, mins) = Encode(tensor, scheme, weights, search);
                long rows = tensor.Rows, groups = tensor.Columns / scheme.Group;
                writer.Metadata[NativeFormat.SchemeKeyPrefix + tensor.Name] = scheme.ToJson();
                writer.Add(tensor.Name + NativeFormat.CodesSuffix, SafetensorsDType.U8, [rows, scheme.RowBytes(tensor.Columns)], codes);
                writer.Add(tensor.Name + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [rows, groups], scales);
                if (!scheme.Symmetric)
                    writer.Add(tensor.Name + NativeFormat.MinsSuffix, SafetensorsDType.F16, [rows, groups], mins);
            }
            else if (SafetensorsDTypes.TryFromGgmlType(tensor.Type, out _))
            {
                writer.Add(tensor);
            }
            else
            {
                var values = new float[tensor.ElementCount];
                Dequantize.Tensor(tensor, values);
                writer.Add(tensor.Name, SafetensorsDType.F32, tensor.Shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
            }
        }
        return writer;
    }

    private static byte[] ToBytes(ushort[] values)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("the native writer runs on little-endian machines only");
        return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
    }
}

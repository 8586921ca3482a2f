using System.Globalization;
using System.Runtime.InteropServices;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>
/// Writes a <see cref="Model"/> as a Squeeze native model directory (docs/FORMAT.md): <c>config.json</c> in Hugging
/// Face's shape, <c>model.safetensors</c> holding every weight in its representation (the model's own
/// <see cref="Model.Weights"/> and any replacements, each through its scheme; every other tensor plain F32/F16/BF16,
/// block-quantized GGUF tensors dequantized to F32), and the tokenizer as <see cref="HuggingFaceWriter"/> writes it:
/// <c>tokenizer.model</c> (SentencePiece) or <c>tokenizer.json</c> (byte-level BPE: Llama 3, Qwen 2.5/3, GPT-2, read
/// from a tokenizer.json or a GGUF file; the unused padding ids past the tokenizer's tokens are left out, as in Qwen's
/// own checkpoints, and the reader pads to config.json's vocab_size again), plus <c>tokenizer_config.json</c>.
/// The file says the lowest format version that expresses it. Everything is written into a temporary directory beside
/// the destination, which is renamed into place only when complete.
/// </summary>
public static class NativeModelWriter
{
    /// <summary>Writes <paramref name="model"/> with the weights named in <paramref name="replacements"/> replaced, to
    /// <paramref name="directory"/>, which must not exist or be empty.</summary>
    /// <returns>The files written, relative to <paramref name="directory"/>.</returns>
    /// <exception cref="ArgumentException">A replacement names no 2-D tensor of the model, or has another shape.</exception>
    /// <exception cref="NotSupportedException">The architecture has no Hugging Face config, a weight's representation
    /// has no native scheme, or a byte-level vocabulary has a token a tokenizer.json cannot say (unknown, byte or
    /// undefined type, unused other than a "[PAD{id}]" padding piece).</exception>
    /// <exception cref="IOException">The destination exists and is not empty.</exception>
    public static IReadOnlyList<string> Write(Model model, string directory, IReadOnlyDictionary<string, LinearWeight>? replacements = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        replacements ??= new Dictionary<string, LinearWeight>();
        HuggingFaceWriter.HuggingFaceArchitecture(model.Config); // refuses an architecture with no config shape before any work
        foreach (var (name, weight) in replacements)
        {
            ArgumentNullException.ThrowIfNull(weight, nameof(replacements));
            if (!model.Contains(name))
                throw new ArgumentException($"{model.Source}: no tensor '{name}' to replace", nameof(replacements));
            var original = model.Weight(name);
            if (original.Rows != weight.Rows || original.Columns != weight.Columns)
                throw new ArgumentException($"tensor '{name}' is [{original.Rows}, {original.Columns}] but its replacement {weight} is [{weight.Rows}, {weight.Columns}]", nameof(replacements));
            if (original is ExpertStackWeight stack && (weight is not ExpertStackWeight stacked || stacked.Experts.Count != stack.Experts.Count))
                throw new ArgumentException($"tensor '{name}' holds {stack.Experts.Count} experts; its replacement {weight.Scheme} is not a stack of as many", nameof(replacements));
            NativeSchemes.For(weight);
        }

        string target = HuggingFaceWriter.CheckDestination(directory);
        string trimmed = target.TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(trimmed) ?? ".";
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, $".{Path.GetFileName(trimmed)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        try
        {
            // The small files first: a vocabulary the tokenizer files cannot hold is refused before the weights are written.
            var tokenizerFiles = HuggingFaceWriter.WriteTokenizer(model.Vocabulary, model.Source, temp);
            HuggingFaceWriter.WriteConfig(Path.Combine(temp, NativeFormat.ConfigFile), model, torchDtype: "float32");
            BuildWeights(model, replacements).Write(Path.Combine(temp, NativeFormat.WeightsFile));
            if (Directory.Exists(target))
                Directory.Delete(target); // empty, checked above
            Directory.Move(temp, target);
            return [NativeFormat.WeightsFile, NativeFormat.ConfigFile, .. tokenizerFiles];
        }
        catch
        {
            if (Directory.Exists(temp))
                Directory.Delete(temp, recursive: true);
            throw;
        }
    }

    /// <summary>Writes <paramref name="model"/> with the tensors named in <paramref name="schemes"/> quantized in the
    /// uniform scheme (<see cref="UniformWeight.Encode(Tensor, UniformScheme, ReadOnlySpan{float})"/>; with the
    /// importance-weighted search for the tensors listed in <paramref name="importance"/>).</summary>
    /// <exception cref="ArgumentException">A scheme names a missing or non-2-D tensor, or its group does not divide the
    /// row; an importance vector has the wrong length or names a tensor that is not quantized.</exception>
    public static IReadOnlyList<string> Write(Model model, string directory, IReadOnlyDictionary<string, UniformScheme> schemes,
        IReadOnlyDictionary<string, float[]>? importance = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(schemes);
        importance ??= new Dictionary<string, float[]>();
        foreach (var name in importance.Keys)
        {
            if (!schemes.ContainsKey(name))
                throw new ArgumentException($"importance is given for '{name}', which is not quantized", nameof(importance));
        }
        var replacements = new Dictionary<string, LinearWeight>(StringComparer.Ordinal);
        foreach (var (name, scheme) in schemes)
        {
            ArgumentNullException.ThrowIfNull(scheme, nameof(schemes));
            if (!model.TryGetTensor(name, out var t))
                throw new ArgumentException($"{model.Source}: no tensor '{name}' to quantize", nameof(schemes));
            if (t.Shape.Length != 2)
                throw new ArgumentException($"tensor '{name}' has shape [{string.Join(", ", t.Shape)}]; only 2-D weights can be quantized", nameof(schemes));
            if (t.Columns % scheme.Group != 0)
                throw new ArgumentException($"tensor '{name}': group size {scheme.Group} does not divide the row length {t.Columns}", nameof(schemes));
            float[]? weights = importance.GetValueOrDefault(name);
            if (weights is not null && weights.Length != t.Columns)
                throw new ArgumentException($"importance for '{name}' has {weights.Length} values but its rows have {t.Columns}", nameof(importance));
            replacements[name] = UniformWeight.Encode(t, scheme, weights);
        }
        return Write(model, directory, replacements);
    }

    /// <summary>The exact size of the <c>model.safetensors</c> <see cref="Write(Model, string, IReadOnlyDictionary{string, LinearWeight}?)"/>
    /// writes for these replacements, computed without writing.</summary>
    public static long WeightsFileLength(Model model, IReadOnlyDictionary<string, LinearWeight> replacements)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(replacements);
        return BuildWeights(model, replacements).FileLength();
    }

    /// <summary>An upper bound of the bytes <paramref name="weight"/> adds to <c>model.safetensors</c> when it replaces a
    /// tensor: its data plus its header entries (scheme metadata, one entry per companion with the widest offsets a file
    /// can have, separators).</summary>
    public static long WeightBytesBound(LinearWeight weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        var writer = new SafetensorsWriter();
        var sink = new NativeTensorSink(writer);
        int companions;
        if (weight is BlockWeight plain && SafetensorsDTypes.TryFromGgmlType(plain.Type, out _))
        {
            writer.Add(plain.Tensor, weight.Name);
            companions = 1;
        }
        else
        {
            writer.Metadata[NativeFormat.SchemeKeyPrefix + weight.Name] = sink.Store(weight.Name, weight).ToJsonString();
            companions = writer.Count;
        }
        // The lone entry's offsets have few digits, a real file's at most 19 each; the lone and empty headers' padding
        // (each < 8) is covered by the slack. The real file's own padding is in the caller's overhead.
        const int WidestOffsets = 2 * 19, Separators = 2, Slack = 16;
        return writer.FileLength() - EmptyFileBytes + companions * (WidestOffsets + Separators) + Slack;
    }

    private static readonly long EmptyFileBytes = new SafetensorsWriter().FileLength();

    private static SafetensorsWriter BuildWeights(Model model, IReadOnlyDictionary<string, LinearWeight> replacements)
    {
        var writer = new SafetensorsWriter();
        var sink = new NativeTensorSink(writer);
        writer.Metadata[NativeFormat.FormatKey] = NativeFormat.FormatName;
        void Store(LinearWeight weight)
        {
            if (weight is BlockWeight plain && SafetensorsDTypes.TryFromGgmlType(plain.Type, out _))
                writer.Add(plain.Tensor, weight.Name); // a plain top-level tensor needs no scheme entry
            else
                writer.Metadata[NativeFormat.SchemeKeyPrefix + weight.Name] = sink.Store(weight.Name, weight).ToJsonString();
        }
        foreach (var weight in model.Weights)
            Store(replacements.GetValueOrDefault(weight.Name) ?? weight);
        foreach (var tensor in model.Tensors)
        {
            if (replacements.TryGetValue(tensor.Name, out var replacement))
            {
                Store(replacement);
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
        writer.Metadata[NativeFormat.VersionKey] = sink.Version.ToString(CultureInfo.InvariantCulture);
        return writer;
    }
}

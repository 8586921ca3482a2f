using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tokenizers;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>
/// Reads a Squeeze native model directory (docs/FORMAT.md): <c>config.json</c>, <c>model.safetensors</c> (mapped) and
/// <c>tokenizer.model</c> or <c>tokenizer.json</c>. Describes every logical tensor, decodes any row to f32, and gives
/// the <see cref="Model"/> the runtime runs directly: plain tensors mapped, every other weight in its representation.
/// </summary>
public sealed class NativeModelReader : IDisposable
{
    private readonly NativeWeights weights;
    private readonly Dictionary<string, LinearWeight> schemed;
    private readonly Dictionary<string, Tensor> plain;

    private NativeModelReader(string directory, ModelConfig config, Vocabulary vocabulary, NativeWeights weights)
    {
        Directory = directory;
        Config = config;
        Vocabulary = vocabulary;
        this.weights = weights;
        schemed = weights.Weights.ToDictionary(w => w.Name, StringComparer.Ordinal);
        plain = weights.Plain.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var order = HuggingFaceReader.ExpectedTensors(config).Select(e => e.Name).ToList();
        Tensors = order.Select(n => weights.Infos.First(i => i.Name == n)).ToList();
    }

    /// <summary>The directory read.</summary>
    public string Directory { get; }

    /// <summary>The hyperparameters from config.json.</summary>
    public ModelConfig Config { get; }

    /// <summary>The vocabulary from the tokenizer file.</summary>
    public Vocabulary Vocabulary { get; }

    /// <summary>The file's format version.</summary>
    public int Version => weights.Version;

    /// <summary>Every logical tensor, in the order the architecture lists them.</summary>
    public IReadOnlyList<NativeTensorInfo> Tensors { get; }

    /// <summary>True when <paramref name="directory"/> holds a Squeeze native model: its weights file says
    /// <c>format = "squeeze"</c> in the safetensors metadata (a Hugging Face checkpoint says "pt").</summary>
    public static bool IsNativeDirectory(string directory)
    {
        string weightsPath = Path.Combine(directory, NativeFormat.WeightsFile);
        if (!File.Exists(weightsPath))
            return false;
        using var file = SafetensorsFile.Open(weightsPath);
        return file.Metadata.TryGetValue(NativeFormat.FormatKey, out string? format) && format == NativeFormat.FormatName;
    }

    /// <summary>Opens and validates <paramref name="directory"/>.</summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="ModelFormatException">A file is missing, malformed, of a newer format version, or does not
    /// match config.json; the message names the file and the problem.</exception>
    public static NativeModelReader Open(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!System.IO.Directory.Exists(directory))
            throw new DirectoryNotFoundException($"native model directory {directory} does not exist");
        var config = HuggingFaceReader.ReadConfig(Path.Combine(directory, NativeFormat.ConfigFile), llama3DivisorsStored: true, out _, out _);
        string weightsPath = Path.Combine(directory, NativeFormat.WeightsFile);
        if (!File.Exists(weightsPath))
            throw new ModelFormatException(directory, $"no {NativeFormat.WeightsFile}");
        var file = SafetensorsFile.Open(weightsPath);
        try
        {
            var expected = HuggingFaceReader.ExpectedTensors(config);
            var weights = NativeWeights.Parse(file, expected.ToDictionary(e => e.Name, e => e.Shape, StringComparer.Ordinal));
            CheckAgainstConfig(weightsPath, expected, weights);
            var vocabulary = ReadVocabulary(directory);
            if (vocabulary.Count > config.VocabSize)
                throw new ModelFormatException(directory, $"the tokenizer has {vocabulary.Count} tokens but config.json's vocab_size is {config.VocabSize}");
            vocabulary = vocabulary.PaddedTo(config.VocabSize); // a token for every embedding row, as llama.cpp pads it
            return new NativeModelReader(directory, config, vocabulary, weights);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>The description of tensor <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public NativeTensorInfo GetTensor(string name)
        => Tensors.FirstOrDefault(t => t.Name == name) ?? throw new KeyNotFoundException($"{Directory}: no tensor '{name}'");

    /// <summary>Decodes row <paramref name="row"/> of tensor <paramref name="name"/>: <c>destination[c] = W[row, c]</c>
    /// (for a 1-D tensor, row 0 is the whole tensor).</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="ArgumentException">The row is out of range or the destination is not one row long.</exception>
    public void DecodeRow(string name, long row, Span<float> destination)
    {
        if (schemed.TryGetValue(name, out var weight))
        {
            weight.DecodeRow(checked((int)row), destination);
            return;
        }
        if (!plain.TryGetValue(name, out var tensor))
            throw new KeyNotFoundException($"{Directory}: no tensor '{name}'");
        if ((ulong)row >= (ulong)tensor.Rows)
            throw new ArgumentOutOfRangeException(nameof(row), row, $"tensor '{name}' has {tensor.Rows} rows");
        if (destination.Length != tensor.Columns)
            throw new ArgumentException($"tensor '{name}' has rows of {tensor.Columns} values; destination has {destination.Length}", nameof(destination));
        Dequantize.Row(tensor.Type, tensor.Row(row), destination);
    }

    /// <summary>
    /// Reads <paramref name="directory"/> (validated as <see cref="Open"/> does, each scheme decoded once) into the model
    /// the runtime runs: plain tensors mapped from the weights file and every schemed weight in its own representation
    /// (codes, codebooks, factors … are multiplied directly, never expanded to f32 as a whole; companions the runtime
    /// reads as stored are views of the mapping, not copies: <see cref="NativeTensorSource.Companion{T}"/>). The model
    /// owns the file; its weights must not be used after it is disposed.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="ModelFormatException">As for <see cref="Open"/>.</exception>
    public static Model Load(string directory)
    {
        var reader = Open(directory);
        try
        {
            return new Model(reader.Config, reader.Vocabulary, reader.weights.Plain, reader.Directory, [reader], reader.weights.Weights);
        }
        catch
        {
            reader.Dispose();
            throw;
        }
    }

    /// <summary><see cref="Load"/> of this reader's directory: a model of its own (the directory is read again), so it may
    /// outlive this reader.</summary>
    public Model ToModel() => Load(Directory);

    /// <summary>Releases the mapped weights file.</summary>
    public void Dispose() => weights.File.Dispose();

    private static void CheckAgainstConfig(string path, List<(string Name, long[] Shape, int PermuteHeads)> expected, NativeWeights weights)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape, _) in expected)
        {
            names.Add(name);
            var info = weights.Infos.FirstOrDefault(i => i.Name == name)
                       ?? throw new ModelFormatException(path, $"tensor '{name}' is missing (config.json expects it)");
            if (!info.Shape.SequenceEqual(shape))
                throw new ModelFormatException(path, $"tensor '{name}' has shape [{string.Join(", ", info.Shape)}] but config.json implies [{string.Join(", ", shape)}]");
        }
        var extra = weights.Infos.FirstOrDefault(i => !names.Contains(i.Name));
        if (extra is not null)
            throw new ModelFormatException(path, $"tensor '{extra.Name}' is not expected by config.json");
    }

    private static Vocabulary ReadVocabulary(string directory)
    {
        string model = Path.Combine(directory, "tokenizer.model");
        if (File.Exists(model))
            return VocabularyReader.FromSentencePieceModel(model);
        string json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(json))
            return VocabularyReader.FromTokenizerJson(json);
        throw new ModelFormatException(directory, $"no tokenizer found; looked for {model} and {json}");
    }
}

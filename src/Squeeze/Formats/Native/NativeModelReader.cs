using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.Native;

/// <summary>
/// Reads a Squeeze native model directory (docs/FORMAT.md): <c>config.json</c>, <c>model.safetensors</c> (mapped, not
/// copied) and <c>tokenizer.model</c> or <c>tokenizer.json</c>. Describes every logical tensor and decodes any row to
/// f32. <see cref="ToModel"/> is the interim path to evaluation: it decodes everything into a plain f32
/// <see cref="Model"/> until the runtime computes with native tensors directly.
/// </summary>
public sealed class NativeModelReader : IDisposable
{
    private readonly NativeWeights weights;

    private NativeModelReader(string directory, ModelConfig config, Vocabulary vocabulary, NativeWeights weights)
    {
        Directory = directory;
        Config = config;
        Vocabulary = vocabulary;
        this.weights = weights;
        Tensors = weights.Entries.Select(e => e.Info).ToList();
    }

    /// <summary>The directory read.</summary>
    public string Directory { get; }

    /// <summary>The hyperparameters from config.json.</summary>
    public ModelConfig Config { get; }

    /// <summary>The vocabulary from the tokenizer file.</summary>
    public Vocabulary Vocabulary { get; }

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
        var config = HuggingFaceReader.ReadConfig(Path.Combine(directory, NativeFormat.ConfigFile));
        string weightsPath = Path.Combine(directory, NativeFormat.WeightsFile);
        if (!File.Exists(weightsPath))
            throw new ModelFormatException(directory, $"no {NativeFormat.WeightsFile}");
        var file = SafetensorsFile.Open(weightsPath);
        try
        {
            var weights = NativeWeights.Parse(file);
            CheckAgainstConfig(weightsPath, config, weights);
            var vocabulary = ReadVocabulary(directory);
            if (vocabulary.Count > config.VocabSize)
                throw new ModelFormatException(directory, $"the tokenizer has {vocabulary.Count} tokens but config.json's vocab_size is {config.VocabSize}");
            return new NativeModelReader(directory, config, vocabulary, Ordered(weights, config));
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
        => weights.TryGet(name, out var e) ? e.Info : throw new KeyNotFoundException($"{Directory}: no tensor '{name}'");

    /// <summary>Decodes row <paramref name="row"/> of tensor <paramref name="name"/>: <c>destination[c] = W[row, c]</c>
    /// (for a 1-D tensor, row 0 is the whole tensor).</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="ArgumentException">The row is out of range or the destination is not one row long.</exception>
    public void DecodeRow(string name, long row, Span<float> destination)
    {
        if (!weights.TryGet(name, out var e))
            throw new KeyNotFoundException($"{Directory}: no tensor '{name}'");
        weights.DecodeRow(e, row, destination);
    }

    /// <summary>
    /// Decodes every tensor into a new plain f32 <see cref="Model"/> owning its buffers. This is the interim path for
    /// evaluation: it costs 4 bytes per weight, where the runtime will later compute with the codes directly.
    /// </summary>
    public Model ToModel()
    {
        var owned = new List<IDisposable>();
        try
        {
            var tensors = new List<Tensor>();
            foreach (var e in weights.Entries)
            {
                var info = e.Info;
                long count = info.Rows * info.Columns;
                var buffer = NativeBuffer.Allocate(count * sizeof(float));
                owned.Add(buffer);
                unsafe
                {
                    var all = (float*)buffer.Pointer;
                    for (long r = 0; r < info.Rows; r++)
                        weights.DecodeRow(e, r, new Span<float>(all + r * info.Columns, (int)info.Columns));
                }
                long[] shape = info.Shape.Length == 0 ? [1] : info.Shape;
                tensors.Add(new Tensor(info.Name, GgmlType.F32, shape, buffer, 0));
            }
            return new Model(Config, Vocabulary, tensors, Directory, owned);
        }
        catch
        {
            foreach (var d in owned)
                d.Dispose();
            throw;
        }
    }

    /// <summary>Releases the mapped weights file.</summary>
    public void Dispose() => weights.File.Dispose();

    private static void CheckAgainstConfig(string path, ModelConfig config, NativeWeights weights)
    {
        var expected = HuggingFaceReader.ExpectedTensors(config);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape, _) in expected)
        {
            names.Add(name);
            if (!weights.TryGet(name, out var e))
                throw new ModelFormatException(path, $"tensor '{name}' is missing (config.json expects it)");
            if (!e.Info.Shape.SequenceEqual(shape))
                throw new ModelFormatException(path, $"tensor '{name}' has shape [{string.Join(", ", e.Info.Shape)}] but config.json implies [{string.Join(", ", shape)}]");
        }
        var extra = weights.Entries.FirstOrDefault(e => !names.Contains(e.Info.Name));
        if (extra is not null)
            throw new ModelFormatException(path, $"tensor '{extra.Info.Name}' is not expected by config.json");
    }

    private static NativeWeights Ordered(NativeWeights weights, ModelConfig config)
        => weights.WithOrder(HuggingFaceReader.ExpectedTensors(config).Select(e => e.Name));

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

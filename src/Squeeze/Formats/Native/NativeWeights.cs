using System.Globalization;
using System.Text.Json;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>
/// The validated view of a native <c>model.safetensors</c>: the format keys, every weight stored in a scheme (read into
/// its <see cref="LinearWeight"/>) and every plain tensor (mapped, not copied). Validation is complete on construction:
/// every companion's dtype and shape is checked against its scheme, so decoding cannot fail on a file that parsed.
/// </summary>
internal sealed class NativeWeights
{
    private NativeWeights(SafetensorsFile file, int version, List<LinearWeight> weights, List<Tensor> plain, List<NativeTensorInfo> infos)
    {
        File = file;
        Version = version;
        Weights = weights;
        Plain = plain;
        Infos = infos;
    }

    public SafetensorsFile File { get; }

    /// <summary>The file's format version.</summary>
    public int Version { get; }

    /// <summary>Weights stored in a scheme, in metadata order.</summary>
    public IReadOnlyList<LinearWeight> Weights { get; }

    /// <summary>Plain F32/F16/BF16 tensors, mapped from the file.</summary>
    public IReadOnlyList<Tensor> Plain { get; }

    /// <summary>Every logical tensor.</summary>
    public IReadOnlyList<NativeTensorInfo> Infos { get; }

    /// <summary>Validates <paramref name="file"/> as a native weights file whose schemed weights have the logical
    /// shapes in <paramref name="shapes"/> (from config.json).</summary>
    /// <exception cref="ModelFormatException">Not a native file of a version this reader supports, or inconsistent; the
    /// message names the problem.</exception>
    public static NativeWeights Parse(SafetensorsFile file, IReadOnlyDictionary<string, long[]> shapes)
    {
        string path = file.Path;
        var meta = file.Metadata;
        if (!meta.TryGetValue(NativeFormat.FormatKey, out string? format) || format != NativeFormat.FormatName)
            throw new ModelFormatException(path, $"metadata \"{NativeFormat.FormatKey}\" is {(format is null ? "missing" : $"\"{format}\"")}, not \"{NativeFormat.FormatName}\"; not a Squeeze native file");
        if (!meta.TryGetValue(NativeFormat.VersionKey, out string? versionText))
            throw new ModelFormatException(path, $"metadata \"{NativeFormat.VersionKey}\" is missing");
        if (!int.TryParse(versionText, NumberStyles.None, CultureInfo.InvariantCulture, out int version) || version < 1)
            throw new ModelFormatException(path, $"format version \"{versionText}\" is not a positive integer");
        if (version > NativeFormat.Version)
            throw new ModelFormatException(path, $"format version {version} is newer than version {NativeFormat.Version}, the newest this reader supports; upgrade Squeeze to read it");

        var source = new NativeTensorSource(file, version);
        var weights = new List<LinearWeight>();
        var infos = new List<NativeTensorInfo>();
        foreach (var (key, json) in meta.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (key is NativeFormat.FormatKey or NativeFormat.VersionKey)
                continue;
            if (!key.StartsWith(NativeFormat.SchemeKeyPrefix, StringComparison.Ordinal))
            {
                if (key.StartsWith("squeeze.", StringComparison.Ordinal))
                    throw new ModelFormatException(path, $"metadata key \"{key}\" is not defined by format version {version}");
                continue; // foreign metadata is allowed and ignored
            }
            string name = key[NativeFormat.SchemeKeyPrefix.Length..];
            if (name.Length == 0)
                throw new ModelFormatException(path, $"metadata key \"{key}\" names no tensor");
            if (!shapes.TryGetValue(name, out long[]? shape))
                throw new ModelFormatException(path, $"tensor '{name}' is not expected by config.json");
            if (shape.Length is not (2 or 3))
                throw new ModelFormatException(path, $"tensor '{name}' has shape [{string.Join(", ", shape)}]; only 2-D weights and 3-D stacks of experts are stored in a scheme");
            if (file.TryGetInfo(name, out _))
                throw new ModelFormatException(path, $"tensor '{name}' is stored both plain and in a scheme");
            JsonElement root;
            try
            {
                root = NativeSchemes.Parse(json);
            }
            catch (JsonException e)
            {
                throw new ModelFormatException(path, $"tensor '{name}': scheme is not valid JSON: {e.Message}", e);
            }
            // A stack of experts [experts, rows, columns] is the matrix [experts · rows, columns], in the "experts" scheme.
            var weight = source.Read(root, name, name, checked((int)(shape.Length == 3 ? shape[0] * shape[1] : shape[0])), checked((int)shape[^1]));
            if ((shape.Length == 3) != weight is ExpertStackWeight || (weight is ExpertStackWeight stack && stack.Experts.Count != shape[0]))
                throw new ModelFormatException(path, $"tensor '{name}' of shape [{string.Join(", ", shape)}] is stored as {weight.Scheme}; {(shape.Length == 3 ? $"a stack of {shape[0]} experts is stored in the \"experts\" scheme, one nested weight per expert" : "the \"experts\" scheme stores only 3-D stacks of experts")}");
            weights.Add(weight);
            infos.Add(new NativeTensorInfo(name, shape, weight.Scheme, weight.StoredBytes));
        }

        var schemed = weights.Select(w => w.Name + ".").ToList();
        var plain = new List<Tensor>();
        foreach (var t in file.Tensors)
        {
            if (source.Claimed.Contains(t.Name))
                continue;
            string? owner = schemed.FirstOrDefault(p => t.Name.StartsWith(p, StringComparison.Ordinal));
            if (owner is not null)
                throw new ModelFormatException(path, $"tensor '{t.Name}' looks like a companion tensor of '{owner[..^1]}' but its scheme does not use it");
            foreach (string suffix in (string[])[NativeFormat.CodesSuffix, NativeFormat.ScalesSuffix, NativeFormat.MinsSuffix])
            {
                if (t.Name.EndsWith(suffix, StringComparison.Ordinal))
                    throw new ModelFormatException(path, $"tensor '{t.Name}' looks like a companion tensor but no \"{NativeFormat.SchemeKeyPrefix}{t.Name[..^suffix.Length]}\" metadata entry claims it");
            }
            if (t.ElementCount == 0)
                throw new ModelFormatException(path, $"plain tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}], which holds no values");
            if (!t.IsFloat)
                throw new ModelFormatException(path, $"plain tensor '{t.Name}' is {t.DType}; plain tensors must be F32, F16 or BF16");
            if (!shapes.ContainsKey(t.Name))
                throw new ModelFormatException(path, $"tensor '{t.Name}' is not expected by config.json");
            var tensor = file.GetTensor(t.Name);
            plain.Add(tensor);
            infos.Add(new NativeTensorInfo(t.Name, t.Shape, null, tensor.ByteLength));
        }
        return new NativeWeights(file, version, weights, plain, infos);
    }
}

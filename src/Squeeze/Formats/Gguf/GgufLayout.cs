using Squeeze.Models;
using Squeeze.Tensors;

namespace Squeeze.Formats.Gguf;

/// <summary>
/// How a model's tensors lie in a GGUF file of its architecture: one file tensor per model tensor, except Phi-3's, whose
/// converter stores each layer's q, k and v projections as one <c>attn_qkv</c> and its gate and up projections as one
/// <c>ffn_up</c> (rows in that order). A model always holds the parts; the writer fuses them (their rows side by side:
/// every GGUF type quantizes rows independently, so the fused tensor's bytes are its parts' bytes one after the other)
/// and the reader splits them into views of their rows.
/// </summary>
public static class GgufLayout
{
    /// <summary>The fused file tensors of <paramref name="config"/>'s architecture, each with its parts and their rows
    /// in order; empty for every architecture but phi3.</summary>
    public static IReadOnlyDictionary<string, (string Name, long Rows)[]> FusedTensors(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var fused = new Dictionary<string, (string Name, long Rows)[]>(StringComparer.Ordinal);
        if (config.Architecture != "phi3")
            return fused;
        for (int l = 0; l < config.LayerCount; l++)
        {
            fused[TensorNames.QueryKeyValue(l)] = [(TensorNames.Query(l), config.QDim), (TensorNames.Key(l), config.KvDim), (TensorNames.Value(l), config.KvDim)];
            fused[TensorNames.Up(l)] = [(TensorNames.Gate(l), config.HiddenDim), (TensorNames.Up(l), config.HiddenDim)];
        }
        return fused;
    }

    /// <summary>The name of the file tensor model tensor <paramref name="tensorName"/> goes into (its own name unless fused).</summary>
    public static string FileName(ModelConfig config, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensorName);
        foreach (var (name, parts) in FusedTensors(config))
        {
            if (Array.Exists(parts, p => p.Name == tensorName))
                return name;
        }
        return tensorName;
    }

    /// <summary>The file tensors of <paramref name="model"/>, in the model's order (a fused one where its first part is),
    /// each with the model tensors it is made of.</summary>
    /// <exception cref="NotSupportedException">A fused tensor's part is missing or has another row length.</exception>
    public static IReadOnlyList<(string Name, long[] Shape, Tensor[] Parts)> FileTensors(Model model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var fused = FusedTensors(model.Config);
        var partOf = fused.SelectMany(f => f.Value.Select(p => (Part: p.Name, File: f.Key))).ToDictionary(p => p.Part, p => p.File, StringComparer.Ordinal);
        var result = new List<(string, long[], Tensor[])>();
        var done = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in model.Tensors)
        {
            if (!partOf.TryGetValue(tensor.Name, out string? file))
            {
                result.Add((tensor.Name, tensor.Shape, [tensor]));
                continue;
            }
            if (!done.Add(file))
                continue;
            var parts = fused[file].Select(p => model.TryGetTensor(p.Name, out Tensor t) && t.Shape.Length == 2 && t.Shape[0] == p.Rows && t.Columns == tensor.Columns ? t
                : throw new NotSupportedException($"{model.Source}: '{file}' is made of {string.Join(", ", fused[file].Select(f => f.Name))}, and '{p.Name}' is missing or not [{p.Rows}, {tensor.Columns}]")).ToArray();
            result.Add((file, [parts.Sum(p => p.Shape[0]), tensor.Columns], parts));
        }
        return result;
    }

    /// <summary>The model tensors of a file's <paramref name="tensors"/>: each fused one replaced by views of its parts' rows.</summary>
    public static List<Tensor> Split(IReadOnlyList<Tensor> tensors, ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var fused = FusedTensors(config);
        var result = new List<Tensor>(tensors.Count);
        foreach (var t in tensors)
        {
            if (!fused.TryGetValue(t.Name, out var parts))
            {
                result.Add(t);
                continue;
            }
            long firstRow = 0;
            foreach (var (name, rows) in parts)
            {
                result.Add(new Tensor(name, t.Type, [rows, t.Columns], t.Buffer, t.Offset + firstRow * t.RowBytes));
                firstRow += rows;
            }
        }
        return result;
    }
}

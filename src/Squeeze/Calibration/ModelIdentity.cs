using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Squeeze.Models;

namespace Squeeze.Calibration;

/// <summary>
/// Which model a set of calibration statistics belongs to: an XxHash64 of the architecture (the config's shape
/// hyperparameters) and of every tensor's name and shape, in name order. Tensor types and bytes are left out, so a
/// model and its quantized versions share an identity; two different architectures (stories15M, stories260K) do not.
/// </summary>
/// <param name="Hash">XxHash64 of the config and the tensors' names and shapes.</param>
/// <param name="Description">The model's file name and shape, for messages.</param>
public readonly record struct ModelIdentity(ulong Hash, string Description)
{
    /// <summary>Computes the identity of <paramref name="model"/>; the description names the source and the shape.</summary>
    public static ModelIdentity Of(Model model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        var hash = new XxHash64();
        string config = $"{c.Architecture}|dim={c.Dim}|hidden={c.HiddenDim}|layers={c.LayerCount}|heads={c.HeadCount}|kv={c.KvHeadCount}|headDim={c.HeadDim}|vocab={c.VocabSize}|tied={c.TiedEmbeddings}|bias={c.AttentionBias}|qknorm={c.QkNorm}{(c.ForwardVariant.Length > 0 ? "|" + c.ForwardVariant : "")}";
        hash.Append(Encoding.UTF8.GetBytes(config));
        Span<byte> number = stackalloc byte[8];
        foreach (var t in model.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            hash.Append(Encoding.UTF8.GetBytes(t.Name));
            foreach (long d in t.Shape)
            {
                BinaryPrimitives.WriteInt64LittleEndian(number, d);
                hash.Append(number);
            }
        }
        string description = $"{Path.GetFileName(model.Source.TrimEnd('/', '\\'))} ({c.Architecture}, dim {c.Dim}, {c.LayerCount} layers, vocab {c.VocabSize})";
        return new ModelIdentity(hash.GetCurrentHashAsUInt64(), description);
    }

    /// <summary>The description and the hash in hexadecimal.</summary>
    public override string ToString() => $"{Description} [{Hash:x16}]";
}

using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Squeeze.Tensors;

namespace Squeeze.Models;

/// <summary>
/// What a .sqz file must be decoded with: an XxHash128 of everything that shapes the model's probabilities — the
/// architecture's hyperparameters (not the declared context length), every tensor's name, type, shape and bytes in
/// name order, and the vocabulary (pieces, scores, types, special ids, space prefix). Two files holding the same
/// weights in the same types (a llama2.c checkpoint and its F32 GGUF) share a fingerprint; a quantized copy does not.
/// </summary>
public static class ModelFingerprint
{
    /// <summary>The 16-byte fingerprint of <paramref name="model"/>.</summary>
    public static unsafe byte[] Of(Model model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var hash = new XxHash128();
        var c = model.Config;
        Text(hash, c.Architecture);
        foreach (int value in new[] { c.Dim, c.HiddenDim, c.LayerCount, c.HeadCount, c.KvHeadCount, c.HeadDim, c.VocabSize, (int)c.RopeStyle,
                     BitConverter.SingleToInt32Bits(c.RopeTheta), BitConverter.SingleToInt32Bits(c.RmsNormEps), c.TiedEmbeddings ? 1 : 0, c.AttentionBias ? 1 : 0, c.QkNorm ? 1 : 0 })
            Number(hash, value);
        if (c.ForwardVariant.Length > 0)
            Text(hash, c.ForwardVariant);
        foreach (var t in model.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            Text(hash, t.Name);
            Number(hash, (int)t.Type);
            foreach (long d in t.Shape)
                Number(hash, d);
            for (long offset = 0; offset < t.ByteLength; offset += int.MaxValue)
                hash.Append(new ReadOnlySpan<byte>(t.Data + offset, (int)Math.Min(int.MaxValue, t.ByteLength - offset)));
        }
        // Weights in other representations (a native model's): name, scheme, shape and every decoded value as f32 bits.
        var row = Array.Empty<float>();
        foreach (var w in model.Weights.OrderBy(w => w.Name, StringComparer.Ordinal))
        {
            Text(hash, w.Name);
            Text(hash, w.Scheme);
            Number(hash, w.Rows);
            Number(hash, w.Columns);
            if (row.Length != w.Columns)
                row = new float[w.Columns];
            for (int r = 0; r < w.Rows; r++)
            {
                w.DecodeRow(r, row);
                hash.Append(System.Runtime.InteropServices.MemoryMarshal.AsBytes(row.AsSpan()));
            }
        }
        var v = model.Vocabulary;
        Number(hash, (int)v.Kind);
        Number(hash, v.Count);
        for (int id = 0; id < v.Count; id++)
        {
            Text(hash, v.Tokens[id]);
            Number(hash, BitConverter.SingleToInt32Bits(v.Scores[id]));
            Number(hash, (int)v.Types[id]);
        }
        foreach (string merge in v.Merges ?? [])
            Text(hash, merge);
        Text(hash, v.PreTokenizer ?? "");
        foreach (int value in new[] { v.BosId, v.EosId, v.UnknownId, v.AddSpacePrefix ? 1 : 0 })
            Number(hash, value);
        return hash.GetCurrentHash();
    }

    private static void Text(XxHash128 hash, string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        Number(hash, bytes.Length);
        hash.Append(bytes);
    }

    private static void Number(XxHash128 hash, long value)
    {
        Span<byte> buffer = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(buffer, value);
        hash.Append(buffer);
    }
}

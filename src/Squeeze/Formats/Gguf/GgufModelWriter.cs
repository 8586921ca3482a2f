using Squeeze.Models;
using Squeeze.Tensors;

namespace Squeeze.Formats.Gguf;

/// <summary>How one tensor goes into the file: its type and a callback that writes its encoded bytes.</summary>
public sealed record EncodedTensor(GgmlType Type, Action<Stream> WriteData)
{
    /// <summary>The tensor's bytes unchanged.</summary>
    public static EncodedTensor Copy(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return new EncodedTensor(tensor.Type, stream =>
        {
            for (long r = 0; r < tensor.Rows; r++)
                stream.Write(tensor.Row(r));
        });
    }
}

/// <summary>
/// Writes a <see cref="Model"/> as a GGUF v3 file that llama.cpp runs: the architecture's metadata and vocabulary
/// (<see cref="GgufModelMetadata"/>), llama.cpp's tensor names, q/k rows in the model's rotary order (interleaved for
/// llama, as llama.cpp expects), Phi-3's fused tensors as its converter writes them (<see cref="GgufLayout"/>: the parts
/// of one must share one type), 32-byte alignment. The file is written to a temporary file and renamed.
/// </summary>
public static class GgufModelWriter
{
    /// <summary>Writes <paramref name="model"/> to <paramref name="path"/>, each tensor encoded by <paramref name="encode"/>.</summary>
    /// <exception cref="NotSupportedException">The parts of a fused tensor are encoded in different types.</exception>
    public static void Write(Model model, string path, uint fileType, Func<Tensor, EncodedTensor> encode, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(encode);
        OutputPaths.RequireDirectory(path);
        Build(model, fileType, encode, name).Write(path);
    }

    /// <summary>Starts <paramref name="path"/> for <paramref name="model"/> with each tensor in the type
    /// <paramref name="typeOf"/> gives it: metadata and tensor infos now, each tensor's bytes later and in any order through
    /// the returned file (see <see cref="GgufWriter.Begin"/>, which also says how a file begun earlier is continued), which
    /// must be committed. The file takes every model tensor under its own name, the parts of a fused one too.</summary>
    /// <exception cref="NotSupportedException">The parts of a fused tensor are given different types.</exception>
    public static GgufPartialFile Begin(Model model, string path, uint fileType, Func<Tensor, GgmlType> typeOf, string? name = null, string? temporaryPath = null,
        IReadOnlyCollection<string>? alreadyWritten = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(typeOf);
        OutputPaths.RequireDirectory(path);
        var writer = new GgufWriter();
        writer.AddMetadata(GgufModelMetadata.Build(model, fileType, name));
        foreach (var (fileName, shape, parts) in GgufLayout.FileTensors(model))
        {
            var type = SharedType(model, fileName, parts, parts.Select(typeOf).ToArray());
            if (parts.Length == 1 && parts[0].Name == fileName)
                writer.AddTensor(fileName, type, shape);
            else
                writer.AddTensor(fileName, type, shape, parts.Select(p => (p.Name, p.Rows)).ToArray());
        }
        return writer.Begin(path, temporaryPath, alreadyWritten);
    }

    /// <summary>The exact size in bytes of the file <see cref="Write"/> writes for <paramref name="model"/> with each tensor
    /// in the type <paramref name="typeOf"/> gives it, computed without encoding anything.</summary>
    public static long FileLength(Model model, uint fileType, Func<Tensor, GgmlType> typeOf, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(typeOf);
        return Build(model, fileType, tensor => new EncodedTensor(typeOf(tensor), _ => throw new InvalidOperationException("sizing only")), name).FileLength();
    }

    private static GgufWriter Build(Model model, uint fileType, Func<Tensor, EncodedTensor> encode, string? name)
    {
        var writer = new GgufWriter();
        writer.AddMetadata(GgufModelMetadata.Build(model, fileType, name));
        foreach (var (fileName, shape, parts) in GgufLayout.FileTensors(model))
        {
            var encoded = parts.Select(encode).ToArray();
            var type = SharedType(model, fileName, parts, encoded.Select(e => e.Type).ToArray());
            writer.AddTensor(fileName, type, shape, stream =>
            {
                foreach (var part in encoded)
                    part.WriteData(stream);
            });
        }
        return writer;
    }

    /// <summary>The one type of a file tensor's parts.</summary>
    private static GgmlType SharedType(Model model, string fileName, Tensor[] parts, GgmlType[] types)
    {
        if (types.Distinct().Count() > 1)
            throw new NotSupportedException($"{model.Source}: {model.Config.Architecture} stores {string.Join(", ", parts.Select(p => p.Name))} as one tensor '{fileName}', so they need one type, not {string.Join(", ", types)}");
        return types[0];
    }
}

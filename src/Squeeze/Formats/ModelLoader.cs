using Squeeze.Formats.Gguf;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;

namespace Squeeze.Formats;

/// <summary>Loads a model from any supported checkpoint, detecting the format.</summary>
public static class ModelLoader
{
    public static Model Load(string path, string? tokenizerPath = null)
    {
        if (Directory.Exists(path))
            return HuggingFaceReader.Load(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path}: no such file or directory", path);
        Span<byte> magic = stackalloc byte[4];
        using (var stream = File.OpenRead(path))
            stream.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
        if (magic.SequenceEqual("GGUF"u8))
            return GgufModelReader.Load(path);
        return Llama2cReader.Load(path, tokenizerPath);
    }
}

using Squeeze.Formats.Gguf;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Llama2c;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Formats;

/// <summary>Loads a model from any supported format, detected from the path: a directory (or a <c>.safetensors</c>,
/// <c>model.safetensors.index.json</c> or <c>config.json</c> file inside one) is a Hugging Face checkpoint, or a
/// Squeeze native model when its weights say <c>format = "squeeze"</c> (docs/FORMAT.md); a file
/// starting with the "GGUF" magic is GGUF, and any other file is a llama2.c checkpoint.</summary>
public static class ModelLoader
{
    /// <summary>Loads <paramref name="path"/>. <paramref name="tokenizerPath"/> overrides the tokenizer found beside
    /// the checkpoint (llama2.c <c>.bin</c>, SentencePiece <c>.model</c>, or <c>tokenizer.json</c>); GGUF files
    /// carry their own and reject it.</summary>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="path"/>.</exception>
    /// <exception cref="ModelFormatException">The format is not recognized, or the checkpoint is malformed.</exception>
    public static Model Load(string path, string? tokenizerPath = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (tokenizerPath is not null && !File.Exists(tokenizerPath))
            throw new FileNotFoundException($"tokenizer {tokenizerPath} does not exist", tokenizerPath);
        if (Directory.Exists(path))
            return LoadHuggingFace(path, tokenizerPath);
        if (!File.Exists(path))
            throw new FileNotFoundException($"no model file or directory at {path}", path);

        string name = Path.GetFileName(path);
        if (name.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
            || name.Equals(HuggingFaceReader.WeightsIndexFile, StringComparison.OrdinalIgnoreCase)
            || name.Equals(HuggingFaceReader.ConfigFile, StringComparison.OrdinalIgnoreCase))
            return LoadHuggingFace(Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".", tokenizerPath);

        if (StartsWithGgufMagic(path))
        {
            if (tokenizerPath is not null)
                throw new ArgumentException($"{path} is GGUF, which carries its own tokenizer; do not pass a tokenizer path", nameof(tokenizerPath));
            return GgufModelReader.Load(path);
        }

        try
        {
            Llama2cReader.ReadHeader(path);
        }
        catch (ModelFormatException e)
        {
            throw new ModelFormatException(path, $"not a recognized model: no GGUF magic, not a Hugging Face directory or .safetensors file, and not a llama2.c checkpoint ({e.Problem})", e);
        }
        return Llama2cReader.Load(path, tokenizerPath);
    }

    private static bool StartsWithGgufMagic(string path)
    {
        Span<byte> magic = stackalloc byte[4];
        using var stream = File.OpenRead(path);
        return stream.ReadAtLeast(magic, 4, throwOnEndOfStream: false) == 4 && magic.SequenceEqual("GGUF"u8);
    }

    private static Model LoadHuggingFace(string directory, string? tokenizerPath)
    {
        if (NativeModelReader.IsNativeDirectory(directory))
        {
            if (tokenizerPath is not null)
                throw new ArgumentException($"{directory} is a Squeeze native model, which carries its own tokenizer; do not pass a tokenizer path", nameof(tokenizerPath));
            return NativeModelReader.Load(directory);
        }
        if (tokenizerPath is null)
            return HuggingFaceReader.Load(directory);
        var config = HuggingFaceReader.ReadConfig(Path.Combine(directory, HuggingFaceReader.ConfigFile));
        var vocabulary = Path.GetExtension(tokenizerPath).ToLowerInvariant() switch
        {
            ".json" => VocabularyReader.FromTokenizerJson(tokenizerPath),
            ".model" => VocabularyReader.FromSentencePieceModel(tokenizerPath),
            _ => VocabularyReader.FromLlama2cTokenizer(tokenizerPath, config.VocabSize),
        };
        return HuggingFaceReader.Load(directory, vocabulary);
    }
}

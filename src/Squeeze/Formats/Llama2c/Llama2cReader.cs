using Squeeze.Models;

namespace Squeeze.Formats.Llama2c;

/// <summary>Loads a llama2.c checkpoint as a <see cref="Model"/>.</summary>
public static class Llama2cReader
{
    /// <summary>Reads <paramref name="path"/>; the tokenizer is <paramref name="tokenizerPath"/> or found beside the checkpoint.</summary>
    public static Model Load(string path, string? tokenizerPath = null) => throw new NotImplementedException("being written on branch hf");
}

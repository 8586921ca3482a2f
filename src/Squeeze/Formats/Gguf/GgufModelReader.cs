using Squeeze.Models;

namespace Squeeze.Formats.Gguf;

/// <summary>Loads a GGUF file as a <see cref="Model"/>.</summary>
public static class GgufModelReader
{
    public static Model Load(string path) => throw new NotImplementedException("being written on branch gguf");
}

using Squeeze.Models;

namespace Squeeze.Formats.HuggingFace;

/// <summary>Loads a Hugging Face checkpoint directory (config.json, safetensors, tokenizer) as a <see cref="Model"/>.</summary>
public static class HuggingFaceReader
{
    public static Model Load(string directory) => throw new NotImplementedException("being written on branch hf");
}

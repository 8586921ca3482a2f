using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Runtime;

/// <summary>The same model read from different checkpoint formats runs to the same logits.</summary>
public class CheckpointEquivalenceTests(ITestOutputHelper output)
{
    [Fact]
    public void Hugging_Face_directory_in_rotate_half_order_gives_the_llama2c_logits()
    {
        using var llama2c = ModelLoader.Load(SharedData.Stories260K);
        using var temp = new TempDirectory();
        string directory = temp.File("stories260K-hf");
        HuggingFaceWriter.Write(llama2c, directory);
        using var hf = ModelLoader.Load(directory);
        Assert.Equal(llama2c.Config, hf.Config);
        int[] tokens = llama2c.Tokenizer.Encode("Once upon a time, a cat sat on a mat. The cat was happy.", addBos: true);
        Assert.Equal(tokens, hf.Tokenizer.Encode("Once upon a time, a cat sat on a mat. The cat was happy.", addBos: true));
        LogitAssert.Close(GoldenRuntimeTests.Logits(llama2c, tokens), GoldenRuntimeTests.Logits(hf, tokens), tolerance: 1e-5f, output);
    }

    [Fact]
    public void Stories260K_llama2c_and_gguf_give_the_same_logits()
    {
        using var llama2c = ModelLoader.Load(SharedData.Stories260K);
        using var gguf = ModelLoader.Load(SharedData.Golden("stories260K-f32.gguf"));
        int[] tokens = llama2c.Tokenizer.Encode("Lily and Ben played with a red ball.", addBos: true);
        LogitAssert.Close(GoldenRuntimeTests.Logits(llama2c, tokens), GoldenRuntimeTests.Logits(gguf, tokens), tolerance: 1e-5f, output);
    }
}

using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>
/// A small random Hugging Face checkpoint of one architecture (stories15M's SentencePiece tokenizer, so the native
/// format can hold it too) and its GGUF conversions by Squeeze in the five types the issue names, made once for a test
/// class. The proof of an architecture: llama.cpp loads each file and its logits agree with Squeeze's on the same file.
/// </summary>
public abstract class ArchitectureCheckpoint : IDisposable
{
    /// <summary>The GGUF types every architecture is converted to.</summary>
    public static readonly string[] Mixes = ["F32", "F16", "Q8_0", "Q4_K_M", "IQ4_NL"];

    private readonly TempDirectory directory = new();
    private readonly Dictionary<string, string> converted = [];
    private readonly Lock gate = new();

    protected ArchitectureCheckpoint(RandomCheckpoint description)
    {
        Description = description;
        HuggingFace = description.Write(directory.File("hf"));
    }

    public RandomCheckpoint Description { get; }

    /// <summary>The checkpoint directory.</summary>
    public string HuggingFace { get; }

    /// <summary>The GGUF file of type <paramref name="mix"/>, converted on first use (the library path of <c>squeeze convert</c>).</summary>
    public string Gguf(string mix)
    {
        lock (gate)
        {
            if (!converted.TryGetValue(mix, out string? path))
            {
                path = directory.File($"{Description.ModelType}-{mix}.gguf");
                using var model = ModelLoader.Load(HuggingFace);
                GgufQuantizer.Write(model, QuantizationMix.Plan(model, QuantizationMix.Parse(mix), [], pure: false), path, importance: null, threads: 2);
                converted[mix] = path;
            }
            return path;
        }
    }

    /// <summary>The checkpoint written in Squeeze's native format (F32, as read), once.</summary>
    public string Native
    {
        get
        {
            lock (gate)
            {
                string path = directory.File("native");
                if (!Directory.Exists(path))
                {
                    using var model = ModelLoader.Load(HuggingFace);
                    NativeModelWriter.Write(model, path);
                }
                return path;
            }
        }
    }

    public void Dispose()
    {
        directory.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>llama.cpp loads the <paramref name="mix"/> file and agrees with Squeeze on it (limits of
    /// <see cref="LlamaCppAgreementTests"/>: F32/F16 mean KLD ≤ 1e-4 and the same top token at ≥ 99 % of 256 positions).</summary>
    public RuntimeAgreement AssertLlamaCppAgrees(string mix, ITestOutputHelper output)
    {
        string path = Gguf(mix);
        return LlamaCppAgreementTests.AssertAgreement(path, LlamaCppAgreementTests.Tokens(path), floats: mix is "F32" or "F16", output);
    }

    /// <summary>Squeeze's logits of every position of <paramref name="tokens"/> on the model at <paramref name="source"/>.</summary>
    public static float[] Logits(string source, int[] tokens)
    {
        using var model = ModelLoader.Load(source);
        return Logits(model, tokens);
    }

    /// <summary>Squeeze's logits of every position of <paramref name="tokens"/> on <paramref name="model"/>.</summary>
    public static float[] Logits(Model model, int[] tokens)
    {
        using var transformer = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = tokens.Length });
        return transformer.Forward(tokens, tokens.Length).ToArray();
    }

    /// <summary>The Hugging Face checkpoint and its native copy: the same config and the same logits, bit for bit.</summary>
    public void AssertNativeRunsAlike()
    {
        int[] tokens = LlamaCppAgreementTests.Tokens(Gguf("F32"));
        using var hf = ModelLoader.Load(HuggingFace);
        using var native = ModelLoader.Load(Native);
        Assert.Equal(hf.Config, native.Config);
        Assert.Equal(Logits(hf, tokens), Logits(native, tokens));
    }
}

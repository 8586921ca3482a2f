using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tests.Formats.HuggingFace;
using Squeeze.Tests.Formats.Llama2c;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Native;

/// <summary>
/// Two small random checkpoints with the real byte-level BPE tokenizers, made once for the class: Llama 3.2's shape
/// (<see cref="Llama3Checkpoint.Llama32"/>: 128,256 rows, llama3 rope scaling, the Llama 3 tokenizer with ignore_merges
/// and 256 special tokens) and Qwen3 (151,936 rows for 151,669
/// tokens, q/k norms, the Qwen3 tokenizer), each with its F32 GGUF conversion by Squeeze.
/// </summary>
public sealed class ByteLevelCheckpoints : IDisposable
{
    private readonly TempDirectory directory = new();
    private readonly Dictionary<string, (string HuggingFace, string Gguf)> made = [];
    private readonly Lock gate = new();

    /// <summary>The checkpoint directory and its F32 GGUF file, written on first use.</summary>
    public (string HuggingFace, string Gguf) this[string name]
    {
        get
        {
            lock (gate)
            {
                if (!made.TryGetValue(name, out var paths))
                {
                    string hf = Description(name).Write(directory.File(name + "-hf"));
                    paths = (hf, RopeScalingTests.ConvertToF32(hf, directory.File(name + "-F32.gguf")));
                    made[name] = paths;
                }
                return paths;
            }
        }
    }

    /// <summary>A directory of its own for a test's output.</summary>
    public string Output(string name) => directory.File(name + "-" + Guid.NewGuid().ToString("N"));

    private static RandomCheckpoint Description(string name) => name switch
    {
        "llama3" => Llama3Checkpoint.Llama32,
        "qwen3" => QwenVocabularyPaddingTests.Qwen3,
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "llama3 or qwen3"),
    };

    public void Dispose() => directory.Dispose();
}

/// <summary>
/// The native format and Squeeze's Hugging Face writer hold byte-level BPE models (Llama 3, Qwen3): the tokenizer is
/// written as tokenizer.json (<see cref="TokenizerJsonWriter"/>), and what is read back runs as what was written — same
/// config, same vocabulary, same token ids, same logits bit for bit — from the checkpoint and from Squeeze's GGUF file alike.
/// </summary>
public class ByteLevelNativeTests(ByteLevelCheckpoints checkpoints, ITestOutputHelper output) : IClassFixture<ByteLevelCheckpoints>
{
    public static TheoryData<string> Models => ["llama3", "qwen3"];

    /// <summary>A plain copy (every tensor F32, as read; Llama 3's rope_freqs.weight among them, config.json's
    /// rope_scaling naming the type alone): tokenizer.json with the tokens alone — for Qwen3 151,669, fewer
    /// than config.json's vocab_size 151,936, as in Qwen's own checkpoints — read back padded to the rows.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Native_copy_runs_as_the_checkpoint(string name)
    {
        using var source = ModelLoader.Load(checkpoints[name].HuggingFace);
        string native = checkpoints.Output(name + "-native");
        var files = NativeModelWriter.Write(source, native);
        Assert.Equal([NativeFormat.WeightsFile, NativeFormat.ConfigFile, "tokenizer.json", "tokenizer_config.json"], files);
        Assert.False(File.Exists(Path.Combine(native, "tokenizer.model")));
        int fileTokens = Squeeze.Tokenizers.VocabularyReader.FromTokenizerJson(Path.Combine(native, "tokenizer.json")).Count;
        Assert.Equal(name == "qwen3" ? 151669 : 128256, fileTokens);
        AssertRunsAlike(source, native, source);
    }

    /// <summary>Compressed: the 2-D weights whose rows a group of 32 divides in 4-bit uniform codes; the directory runs as
    /// the same replacements do in memory, bit for bit, and tokenizes as the checkpoint.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Uniform_compressed_native_runs_as_the_compressed_model(string name)
    {
        using var source = ModelLoader.Load(checkpoints[name].HuggingFace);
        var replacements = source.Tensors.Where(t => t.Shape.Length == 2 && t.Columns % 32 == 0)
            .Select(t => (LinearWeight)UniformWeight.Encode(t, new UniformScheme(4, 32, symmetric: false)))
            .ToDictionary(w => w.Name, StringComparer.Ordinal);
        Assert.Contains(TensorNames.TokenEmbedding, replacements.Keys);
        string native = checkpoints.Output(name + "-uniform");
        NativeModelWriter.Write(source, native, replacements);
        using var compressed = source.WithWeights(replacements.Values);
        AssertRunsAlike(compressed, native, source);
    }

    /// <summary>From Squeeze's GGUF file (tokenizer.ggml.model "gpt2": tokens, types and merges, tokenizer.ggml.pre,
    /// the padding tokens of the rows past the tokenizer) to the native format: runs as the GGUF file does.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Native_copy_of_the_gguf_runs_as_the_gguf(string name)
    {
        using var gguf = ModelLoader.Load(checkpoints[name].Gguf);
        string native = checkpoints.Output(name + "-from-gguf");
        NativeModelWriter.Write(gguf, native);
        AssertRunsAlike(gguf, native, gguf);
    }

    /// <summary>Squeeze's Hugging Face writer writes the same tokenizer files, and its checkpoint runs as the source.
    /// (Of Llama 3.2 it writes nothing: the model holds rope_freqs.weight's divisors, not the rope_scaling parameters
    /// transformers needs; the native format holds them.)</summary>
    [Fact]
    public void Hugging_Face_copy_of_qwen3_runs_as_the_checkpoint()
    {
        using var source = ModelLoader.Load(checkpoints["qwen3"].HuggingFace);
        string copy = checkpoints.Output("qwen3-hf-copy");
        var files = HuggingFaceWriter.Write(source, copy);
        Assert.Equal([HuggingFaceReader.WeightsFile, HuggingFaceReader.ConfigFile, "tokenizer.json", "tokenizer_config.json"], files);
        AssertRunsAlike(source, copy, source);
        using var llama3 = ModelLoader.Load(checkpoints["llama3"].HuggingFace);
        var e = Assert.Throws<NotSupportedException>(() => HuggingFaceWriter.Write(llama3, checkpoints.Output("llama3-hf-copy")));
        Assert.Contains("rope_freqs.weight (Llama 3 rope scaling)", e.Message, StringComparison.Ordinal);
    }

    /// <summary>The directory at <paramref name="path"/> loads with <paramref name="expected"/>'s config and vocabulary,
    /// tokenizes a real text to the ids <paramref name="tokenizerSource"/> gives, and its logits over those tokens are
    /// <paramref name="expected"/>'s, bit for bit.</summary>
    private void AssertRunsAlike(Model expected, string path, Model tokenizerSource)
    {
        using var loaded = ModelLoader.Load(path);
        Assert.Equal(expected.Config, loaded.Config);
        TokenizerJsonWriterTests.AssertSameVocabulary(expected.Vocabulary, loaded.Vocabulary);
        string text = string.Join('\n', File.ReadLines(SharedData.Corpus("tinystories-eval.txt")).Take(40)) + " 12345 <|im_end|> 😀";
        int[] ids = tokenizerSource.Tokenizer.Encode(text, addBos: tokenizerSource.Vocabulary.AddBos);
        Assert.Equal(ids, loaded.Tokenizer.Encode(text, addBos: loaded.Vocabulary.AddBos));
        int[] tokens = ids[..24];
        var a = Logits(expected, tokens);
        var b = Logits(loaded, tokens);
        Assert.Equal(a, b);
        output.WriteLine($"{Path.GetFileName(path)}: {ids.Length} tokens alike, logits of {tokens.Length} positions × {loaded.Config.VocabSize} bit for bit");
    }

    private static float[] Logits(Model model, int[] tokens)
    {
        using var transformer = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = tokens.Length });
        return transformer.Forward(tokens, tokens.Length).ToArray();
    }
}

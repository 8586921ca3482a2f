using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Squeeze.Kernels;

namespace Squeeze.Bench;

/// <summary>
/// Randomly initialised Hugging Face checkpoints of real models' shapes, for measuring time and memory at scale
/// (their quality means nothing). Each is a directory of config.json, bf16 safetensors (one file up to 4 GB, above that
/// shards with <c>model.safetensors.index.json</c>, as real checkpoints come) and a tokenizer (stories15M's Llama-2
/// <c>tokenizer.model</c>, or a real one's <c>tokenizer.json</c> from <c>tokenizers/hf</c>), written into a cache
/// directory once and reused.
/// <para>Values: every matrix N(0, 0.02²) as bf16, every norm 1. With the final norm's unit RMS the classifier's logits
/// have a standard deviation of about 0.02·√dim (0.9 at dim 2048, 1.3 at 4096): spread out, not degenerate, and a
/// quantized copy's KLD against the bf16 model is a finite, comparable figure.</para>
/// <para>Vocabulary: 32,000 with stories15M's tokenizer for the dense shapes (Llama-3's real 128,256 would add 197M
/// parameters to the embedding and to the 8B's classifier; the layers, where the time goes, have their real shapes).
/// Qwen3-30B-A3B's layers come with its real 151,936 embedding rows and Qwen3's tokenizer (151,669 tokens, padded to
/// the rows as llama.cpp's converter pads them): at that shape the classifier is the largest tensor.</para>
/// </summary>
internal static class ShapesSuite
{
    /// <summary>One checkpoint shape; with <see cref="Experts"/>, a Qwen3-MoE (every layer's feed-forward <see cref="Experts"/>
    /// routed experts of width <see cref="ExpertHidden"/>, top <see cref="ExpertsUsed"/>, q/k norms, heads of
    /// <see cref="HeadDim"/>). <see cref="Vocabulary"/> embedding rows, with the tokenizer of <c>tokenizers/hf/</c><see cref="Tokenizer"/>
    /// when it is set, else stories15M's (32,000 tokens).</summary>
    internal sealed record Shape(string Name, int Dim, int Hidden, int Layers, int Heads, int KvHeads, bool Tied, double RopeTheta, int Context,
        int Experts = 0, int ExpertsUsed = 0, int ExpertHidden = 0, int HeadDim = 0, int Vocabulary = 32000, string? Tokenizer = null)
    {
        public int ResolvedHeadDim => HeadDim > 0 ? HeadDim : Dim / Heads;
    }

    internal static readonly Shape[] Shapes =
    [
        new("tinyllama-1.1b", 2048, 5632, 22, 32, 4, Tied: false, RopeTheta: 10000, Context: 2048),
        new("llama-3.2-1b", 2048, 8192, 16, 32, 8, Tied: true, RopeTheta: 500000, Context: 8192),
        new("llama-3.1-8b", 4096, 14336, 32, 32, 8, Tied: false, RopeTheta: 500000, Context: 8192),
    ];

    /// <summary>Mixture-of-experts shapes, written only when named: Qwen3-30B-A3B's layers (dim 2048, 128 experts of 768,
    /// top 8, 32 query heads and 4 KV heads of 128; its 151,936-row vocabulary with Qwen3's tokenizer) two of its 48, and
    /// the same layout at half the widths and experts (vocabulary 32,000).</summary>
    internal static readonly Shape[] ExpertShapes =
    [
        new("qwen3-30b-a3b-2l", 2048, 6144, 2, 32, 4, Tied: false, RopeTheta: 1000000, Context: 40960, Experts: 128, ExpertsUsed: 8, ExpertHidden: 768, HeadDim: 128,
            Vocabulary: 151_936, Tokenizer: "qwen3"),
        new("qwen3-moe-half-2l", 1024, 3072, 2, 16, 2, Tied: false, RopeTheta: 1000000, Context: 40960, Experts: 64, ExpertsUsed: 8, ExpertHidden: 384, HeadDim: 64),
    ];

    /// <summary>The shape named <paramref name="name"/>, dense or mixture of experts.</summary>
    internal static Shape Find(string name) => Shapes.Concat(ExpertShapes).FirstOrDefault(s => s.Name == name)
        ?? throw new ArgumentException($"unknown shape {name}; known: {string.Join(", ", Shapes.Concat(ExpertShapes).Select(s => s.Name))}");

    private const float Std = 0.02f;
    private const long ShardLimit = 4L << 30;
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary><c>shapes [--shape NAME[,NAME]] [--cache DIR] [--seed N]</c>: writes the named shapes (default: all)
    /// into the cache and prints where they are.</summary>
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        string cache = CacheDirectory(args);
        ulong seed = (ulong)Program.Option(args, "--seed", 1);
        string[] names = Program.Value(args, "--shape")?.Split(',') ?? Shapes.Select(s => s.Name).ToArray();
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- shapes {string.Join(' ', args)}`");
        Console.WriteLine();
        Console.WriteLine("| shape | parameters | files | bytes on disk | directory |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (string name in names)
        {
            var shape = Find(name);
            string dir = Ensure(shape, cache, shared, seed);
            var files = Directory.GetFiles(dir);
            Console.WriteLine($"| {shape.Name} | {Tensors(shape).Sum(t => t.Rows * t.Columns):N0} | {files.Length} | {files.Sum(f => new FileInfo(f).Length):N0} | {dir} |");
        }
    }

    /// <summary><c>--cache DIR</c>, else <c>~/.cache/squeeze/shapes</c>.</summary>
    internal static string CacheDirectory(string[] args)
        => Program.Value(args, "--cache")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "squeeze", "shapes");

    /// <summary>The directory of <paramref name="shape"/> in <paramref name="cache"/>, written first when absent. It is
    /// built under a temporary name and renamed when complete, so a directory that exists is whole.</summary>
    internal static string Ensure(Shape shape, string cache, string shared, ulong seed)
    {
        string dir = Path.Combine(cache, seed == 1 ? shape.Name : $"{shape.Name}-seed{seed}");
        if (Directory.Exists(dir))
            return dir;
        var tensors = Tensors(shape);
        long bytes = tensors.Sum(t => 2 * t.Rows * t.Columns);
        Directory.CreateDirectory(cache);
        long free = new DriveInfo(Path.GetFullPath(cache)).AvailableFreeSpace;
        if (free < bytes + (1L << 30))
            throw new IOException($"{cache}: {bytes / 1e9:0.0} GB needed for {shape.Name}, {free / 1e9:0.0} GB free; pass --cache DIR on a larger disk");
        string temp = $"{dir}.{Environment.ProcessId}.tmp";
        if (Directory.Exists(temp))
            Directory.Delete(temp, recursive: true);
        Directory.CreateDirectory(temp);
        var clock = Stopwatch.StartNew();
        try
        {
            WriteConfig(shape, Path.Combine(temp, "config.json"));
            if (shape.Tokenizer is { } tokenizer)
            {
                foreach (string file in new[] { "tokenizer.json", "tokenizer_config.json" })
                    File.Copy(Path.Combine(shared, "tokenizers", "hf", tokenizer, file), Path.Combine(temp, file));
            }
            else
            {
                File.Copy(Path.Combine(shared, "models", "stories15M", "tokenizer.model"), Path.Combine(temp, "tokenizer.model"));
            }
            WriteWeights(tensors, temp, seed);
            Directory.Move(temp, dir);
        }
        catch
        {
            Directory.Delete(temp, recursive: true);
            throw;
        }
        Console.Error.WriteLine($"wrote {dir}: {bytes / 1e9:0.00} GB in {clock.Elapsed.TotalSeconds:0} s");
        return dir;
    }

    /// <summary>A tensor as the checkpoint stores it: HF name, [rows, columns], and whether it is a norm (all ones).</summary>
    internal sealed record TensorSpec(string Name, long Rows, long Columns, bool Norm)
    {
        public long[] Shape => Rows == 1 ? [Columns] : [Rows, Columns];
    }

    /// <summary>The tensors of <paramref name="shape"/> in the order a transformers checkpoint lists them.</summary>
    internal static List<TensorSpec> Tensors(Shape shape)
    {
        int headDim = shape.ResolvedHeadDim, q = shape.Heads * headDim, kv = shape.KvHeads * headDim;
        var list = new List<TensorSpec> { new("model.embed_tokens.weight", shape.Vocabulary, shape.Dim, false) };
        for (int l = 0; l < shape.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            list.Add(new(p + "self_attn.q_proj.weight", q, shape.Dim, false));
            list.Add(new(p + "self_attn.k_proj.weight", kv, shape.Dim, false));
            list.Add(new(p + "self_attn.v_proj.weight", kv, shape.Dim, false));
            list.Add(new(p + "self_attn.o_proj.weight", shape.Dim, q, false));
            if (shape.Experts > 0)
            {
                list.Add(new(p + "self_attn.q_norm.weight", 1, headDim, true));
                list.Add(new(p + "self_attn.k_norm.weight", 1, headDim, true));
                list.Add(new(p + "mlp.gate.weight", shape.Experts, shape.Dim, false));
                for (int e = 0; e < shape.Experts; e++)
                {
                    list.Add(new($"{p}mlp.experts.{e}.gate_proj.weight", shape.ExpertHidden, shape.Dim, false));
                    list.Add(new($"{p}mlp.experts.{e}.up_proj.weight", shape.ExpertHidden, shape.Dim, false));
                    list.Add(new($"{p}mlp.experts.{e}.down_proj.weight", shape.Dim, shape.ExpertHidden, false));
                }
            }
            else
            {
                list.Add(new(p + "mlp.gate_proj.weight", shape.Hidden, shape.Dim, false));
                list.Add(new(p + "mlp.up_proj.weight", shape.Hidden, shape.Dim, false));
                list.Add(new(p + "mlp.down_proj.weight", shape.Dim, shape.Hidden, false));
            }
            list.Add(new(p + "input_layernorm.weight", 1, shape.Dim, true));
            list.Add(new(p + "post_attention_layernorm.weight", 1, shape.Dim, true));
        }
        list.Add(new("model.norm.weight", 1, shape.Dim, true));
        if (!shape.Tied)
            list.Add(new("lm_head.weight", shape.Vocabulary, shape.Dim, false));
        return list;
    }

    internal static void WriteConfig(Shape shape, string path)
    {
        // The special tokens' ids as the real models' config.json gives them.
        var (bos, eos) = shape.Tokenizer switch
        {
            null => (1, 2),
            "qwen3" => (151_643, 151_645),
            _ => throw new ArgumentException($"{shape.Name}: no special token ids known for tokenizer {shape.Tokenizer}"),
        };
        var config = new Dictionary<string, object>
        {
            ["architectures"] = new[] { "LlamaForCausalLM" },
            ["model_type"] = "llama",
            ["hidden_size"] = shape.Dim,
            ["intermediate_size"] = shape.Hidden,
            ["num_hidden_layers"] = shape.Layers,
            ["num_attention_heads"] = shape.Heads,
            ["num_key_value_heads"] = shape.KvHeads,
            ["vocab_size"] = shape.Vocabulary,
            ["max_position_embeddings"] = shape.Context,
            ["rope_theta"] = shape.RopeTheta,
            ["rms_norm_eps"] = 1e-5,
            ["hidden_act"] = "silu",
            ["tie_word_embeddings"] = shape.Tied,
            ["torch_dtype"] = "bfloat16",
            ["bos_token_id"] = bos,
            ["eos_token_id"] = eos,
        };
        if (shape.Experts > 0)
        {
            config["architectures"] = new[] { "Qwen3MoeForCausalLM" };
            config["model_type"] = "qwen3_moe";
            config["head_dim"] = shape.ResolvedHeadDim;
            config["num_experts"] = shape.Experts;
            config["num_experts_per_tok"] = shape.ExpertsUsed;
            config["moe_intermediate_size"] = shape.ExpertHidden;
            config["norm_topk_prob"] = true;
            config["attention_bias"] = false;
        }
        File.WriteAllText(path, JsonSerializer.Serialize(config, Indented));
    }

    // Shards: consecutive tensors up to ShardLimit bytes each; one file named model.safetensors when all fit in one.
    private static void WriteWeights(List<TensorSpec> tensors, string dir, ulong seed)
    {
        var shards = new List<List<int>> { new() };
        long size = 0;
        for (int i = 0; i < tensors.Count; i++)
        {
            long bytes = 2 * tensors[i].Rows * tensors[i].Columns;
            if (size > 0 && size + bytes > ShardLimit)
            {
                shards.Add([]);
                size = 0;
            }
            shards[^1].Add(i);
            size += bytes;
        }
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        long total = 0;
        for (int s = 0; s < shards.Count; s++)
        {
            string file = shards.Count == 1 ? "model.safetensors" : $"model-{s + 1:00000}-of-{shards.Count:00000}.safetensors";
            WriteShard(tensors, shards[s], Path.Combine(dir, file), seed);
            foreach (int i in shards[s])
            {
                weightMap[tensors[i].Name] = file;
                total += 2 * tensors[i].Rows * tensors[i].Columns;
            }
        }
        if (shards.Count > 1)
        {
            var index = new Dictionary<string, object> { ["metadata"] = new Dictionary<string, long> { ["total_size"] = total }, ["weight_map"] = weightMap };
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), JsonSerializer.Serialize(index, Indented));
        }
    }

    // safetensors: 8-byte little-endian header length, the JSON header (padded with spaces to 8 bytes), the data.
    private static void WriteShard(List<TensorSpec> tensors, List<int> members, string path, ulong seed)
    {
        var header = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
        long offset = 0;
        foreach (int i in members)
        {
            var t = tensors[i];
            long bytes = 2 * t.Rows * t.Columns;
            header.Append(CultureInfo.InvariantCulture, $",\"{t.Name}\":{{\"dtype\":\"BF16\",\"shape\":[{string.Join(',', t.Shape)}],\"data_offsets\":[{offset},{offset + bytes}]}}");
            offset += bytes;
        }
        header.Append('}');
        while ((header.Length + 8) % 8 != 0)
            header.Append(' ');
        byte[] headerBytes = Encoding.UTF8.GetBytes(header.ToString());
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)headerBytes.Length);
        stream.Write(length);
        stream.Write(headerBytes);
        foreach (int i in members)
        {
            var t = tensors[i];
            var values = new ushort[t.Rows * t.Columns];
            Fill(t, (ulong)i, seed, values);
            stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
        }
    }

    // Norms: bf16 1.0. Matrices: N(0, Std²) by Box–Muller, in chunks of 64K values each seeded by (seed, tensor, chunk),
    // so the values do not depend on the thread count.
    private static void Fill(TensorSpec t, ulong index, ulong seed, ushort[] values)
    {
        if (t.Norm)
        {
            Array.Fill(values, (ushort)0x3F80);
            return;
        }
        const int Chunk = 1 << 16;
        int chunks = (values.Length + Chunk - 1) / Chunk;
        Parallel.For(0, chunks, c =>
        {
            var random = new SplitMix64(seed * 0x9E3779B97F4A7C15UL ^ (index << 32) ^ (ulong)c);
            int from = c * Chunk, to = Math.Min(values.Length, from + Chunk);
            for (int k = from; k < to; k += 2)
            {
                double u1 = ((random.Next() >> 11) + 1) * (1.0 / (1UL << 53));
                double u2 = (random.Next() >> 11) * (1.0 / (1UL << 53));
                double r = Std * Math.Sqrt(-2 * Math.Log(u1));
                values[k] = Bf16((float)(r * Math.Cos(2 * Math.PI * u2)));
                if (k + 1 < to)
                    values[k + 1] = Bf16((float)(r * Math.Sin(2 * Math.PI * u2)));
            }
        });
    }

    // Round to nearest even (the values are finite).
    private static ushort Bf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }
}

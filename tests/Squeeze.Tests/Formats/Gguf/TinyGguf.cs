using System.Text;
using Squeeze.Formats.Gguf;
using Squeeze.Tensors;

namespace Squeeze.Tests.Formats.Gguf;

/// <summary>Small GGUF files built in memory: a valid tiny llama model (seed for the mutation tests) and raw byte builders.</summary>
internal static class TinyGguf
{
    /// <summary>A 1-layer llama model, dim 32, 4 heads / 2 kv heads, vocab 8, every metadata value type and many tensor types.</summary>
    public static byte[] Model()
    {
        var w = new GgufWriter();
        var rng = new Random(42);
        void U32(string k, uint v) => w.AddMetadata(k, GgufValue.Scalar(GgufValueType.UInt32, v));
        w.AddMetadata("general.architecture", GgufValue.String("llama"));
        w.AddMetadata(GgufFile.AlignmentKey, GgufValue.Scalar(GgufValueType.UInt32, 32u));
        U32("llama.context_length", 64);
        U32("llama.embedding_length", 32);
        U32("llama.block_count", 1);
        U32("llama.feed_forward_length", 64);
        U32("llama.attention.head_count", 4);
        U32("llama.attention.head_count_kv", 2);
        w.AddMetadata("llama.rope.freq_base", GgufValue.Scalar(GgufValueType.Float32, 10000f));
        w.AddMetadata("llama.attention.layer_norm_rms_epsilon", GgufValue.Scalar(GgufValueType.Float32, 1e-5f));
        w.AddMetadata("test.u8", GgufValue.Scalar(GgufValueType.UInt8, (byte)200));
        w.AddMetadata("test.i8", GgufValue.Scalar(GgufValueType.Int8, (sbyte)-100));
        w.AddMetadata("test.u16", GgufValue.Scalar(GgufValueType.UInt16, (ushort)60000));
        w.AddMetadata("test.i16", GgufValue.Scalar(GgufValueType.Int16, (short)-30000));
        w.AddMetadata("test.i32", GgufValue.Scalar(GgufValueType.Int32, -5));
        w.AddMetadata("test.u64", GgufValue.Scalar(GgufValueType.UInt64, ulong.MaxValue));
        w.AddMetadata("test.i64", GgufValue.Scalar(GgufValueType.Int64, long.MinValue));
        w.AddMetadata("test.f64", GgufValue.Scalar(GgufValueType.Float64, Math.PI));
        w.AddMetadata("test.nested", GgufValue.Array(GgufValueType.Array, new[]
        {
            GgufValue.Array(GgufValueType.Int16, new short[] { 1, -2 }),
            GgufValue.Array(GgufValueType.String, new[] { "a", "bc" }),
            GgufValue.Array(GgufValueType.Bool, new[] { true, false }),
        }));
        w.AddMetadata("tokenizer.ggml.model", GgufValue.String("llama"));
        w.AddMetadata("tokenizer.ggml.tokens", GgufValue.Array(GgufValueType.String, new[] { "<unk>", "<s>", "</s>", "▁a", "▁b", "c", "d", "▁ab" }));
        w.AddMetadata("tokenizer.ggml.scores", GgufValue.Array(GgufValueType.Float32, new[] { 0f, 0, 0, -1, -2, -3, -4, -5 }));
        w.AddMetadata("tokenizer.ggml.token_type", GgufValue.Array(GgufValueType.Int32, new[] { 2, 3, 3, 1, 1, 1, 1, 1 }));
        U32("tokenizer.ggml.bos_token_id", 1);
        U32("tokenizer.ggml.eos_token_id", 2);
        w.AddMetadata("tokenizer.ggml.add_bos_token", GgufValue.Scalar(GgufValueType.Bool, true));

        void T(string name, GgmlType type, params long[] shape)
        {
            long rows = shape[..^1].Aggregate(1L, (a, b) => a * b);
            var data = new byte[GgmlTypes.RowBytes(type, shape[^1]) * rows];
            rng.NextBytes(data);
            w.AddTensor(name, type, shape, data);
        }
        T("token_embd.weight", GgmlType.Q8_0, 8, 32);
        T("output_norm.weight", GgmlType.F32, 32);
        T("blk.0.attn_norm.weight", GgmlType.F32, 32);
        T("blk.0.attn_q.weight", GgmlType.Q4_0, 32, 32);
        T("blk.0.attn_k.weight", GgmlType.F16, 16, 32);
        T("blk.0.attn_v.weight", GgmlType.BF16, 16, 32);
        T("blk.0.attn_output.weight", GgmlType.IQ4_NL, 32, 32);
        T("blk.0.ffn_norm.weight", GgmlType.F32, 32);
        T("blk.0.ffn_gate.weight", GgmlType.Q5_0, 64, 32);
        T("blk.0.ffn_up.weight", GgmlType.Q5_1, 64, 32);
        T("blk.0.ffn_down.weight", GgmlType.Q4_1, 32, 64);
        var ms = new MemoryStream();
        w.Write(ms);
        return ms.ToArray();
    }
}

/// <summary>Writes GGUF fields one by one, little-endian, with no checks: for hand-made corrupt files.</summary>
internal sealed class RawGguf
{
    private readonly List<byte> bytes = [];

    public RawGguf Header(uint version, ulong tensors, ulong kvs) => U32(0x46554747).U32(version).U64(tensors).U64(kvs);

    public RawGguf U32(uint v) { bytes.AddRange(BitConverter.GetBytes(v)); return this; }

    public RawGguf U64(ulong v) { bytes.AddRange(BitConverter.GetBytes(v)); return this; }

    public RawGguf Str(string s) { var b = Encoding.UTF8.GetBytes(s); U64((ulong)b.Length); bytes.AddRange(b); return this; }

    public RawGguf KvString(string key, string value) => Str(key).U32((uint)GgufValueType.String).Str(value);

    public RawGguf KvU32(string key, uint value) => Str(key).U32((uint)GgufValueType.UInt32).U32(value);

    /// <summary>A tensor info: name, dims (innermost first, as GGUF stores them), type, offset.</summary>
    public RawGguf Tensor(string name, GgmlType type, ulong offset, params ulong[] ne)
    {
        Str(name).U32((uint)ne.Length);
        foreach (var d in ne)
            U64(d);
        return U32((uint)type).U64(offset);
    }

    public RawGguf PadTo(int alignment) { while (bytes.Count % alignment != 0) bytes.Add(0); return this; }

    public RawGguf Zeros(int count) { bytes.AddRange(new byte[count]); return this; }

    public byte[] Bytes() => [.. bytes];
}

using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tensors;

namespace Squeeze.SavedCaches;

/// <summary>What <see cref="SavedCache.Save"/> wrote: the prompt's tokens, the positions whose keys and values are
/// stored (all but the last token's), their storage and the file's size.</summary>
/// <param name="Tokens">Prompt tokens (BOS first).</param>
/// <param name="Positions">Positions stored: <c>Tokens.Count − 1</c>.</param>
/// <param name="Storage">How the keys and values are stored.</param>
/// <param name="Bytes">Size of the file.</param>
public sealed record SavedCacheInfo(IReadOnlyList<int> Tokens, int Positions, SavedCacheStorage Storage, long Bytes)
{
    /// <summary>File bytes per prompt token.</summary>
    public double BytesPerToken => (double)Bytes / Math.Max(1, Tokens.Count);
}

/// <summary>
/// A prompt's KV cache saved to a file and loaded instead of recomputed (CacheGen). The file holds the keys and values
/// of every prompt position but the last, quantized as a <see cref="SavedCacheStorage"/> says and range-coded
/// (<c>LayerCodec</c>), and the prompt's tokens; loading appends them to a runtime's cache and leaves the last token to run,
/// which gives the logits the generation starts from.
/// <para>Layout (little-endian): "SQKV", version (u32) = 2 (1 before the <c>pre</c> storage; still read), the model's <see cref="ModelFingerprint"/> (16 bytes),
/// layers, key/value heads, head size (i32 each), token count n (i32), the storage spec (u16 length + UTF-8), the n
/// tokens (i32 each), then for each layer its stream's length (i32) and bytes, and last an XxHash64 (u64) of every byte
/// before it. A file is refused whole, in one line, when it is truncated, corrupt or from another model.</para>
/// </summary>
public static class SavedCache
{
    private static ReadOnlySpan<byte> Magic => "SQKV"u8;

    /// <summary>The format version this code writes; it reads it and version 1 (the same layout, without the <c>pre</c> storage).</summary>
    public const int Version = 2;

    /// <summary>
    /// Runs <paramref name="tokens"/> but the last through <paramref name="runtime"/>'s model into an f32 cache of its
    /// own (the runtime's <see cref="Transformer.Cache"/> and position are untouched), then writes their keys and values as
    /// <paramref name="storage"/> says to <paramref name="path"/> (a temporary file beside it, renamed when complete).
    /// </summary>
    public static SavedCacheInfo Save(Transformer runtime, ReadOnlySpan<int> tokens, SavedCacheStorage storage, string path)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(storage);
        if (tokens.Length < 1)
            throw new ArgumentException("a saved cache needs a prompt of at least one token", nameof(tokens));
        var config = runtime.Model.Config;
        int positions = tokens.Length - 1;
        if (tokens.Length > runtime.Cache.ContextLength)
            throw new ArgumentException($"the prompt has {tokens.Length} tokens; the context holds {runtime.Cache.ContextLength}", nameof(tokens));
        var cache = new Float32KvCache(config, runtime.Cache.ContextLength);
        var sensitivities = new Sensitivities(runtime.Model, positions, storage.Window);
        if (positions > 0)
        {
            var caches = new KvCache[positions];
            var at = new int[positions];
            for (int p = 0; p < positions; p++)
            {
                caches[p] = cache;
                at[p] = p;
            }
            var observer = runtime.Observer;
            runtime.Observer = storage.PreRotary ? sensitivities : observer;
            try
            {
                runtime.ForwardSequences(tokens[..positions], caches, at, []);
            }
            finally
            {
                runtime.Observer = observer;
            }
        }
        return Write(runtime, tokens, cache, storage, sensitivities, path);
    }

    /// <summary>Writes the first <c>tokens.Length − 1</c> positions of <paramref name="cache"/> (computed from
    /// <paramref name="tokens"/> by <paramref name="runtime"/>'s model, whose attention inputs
    /// <paramref name="sensitivities"/> has seen for the <c>pre</c> storage) to <paramref name="path"/>.</summary>
    private static SavedCacheInfo Write(Transformer runtime, ReadOnlySpan<int> tokens, Float32KvCache cache, SavedCacheStorage storage, Sensitivities sensitivities, string path)
    {
        var model = runtime.Model;
        int positions = tokens.Length - 1;
        var config = model.Config;
        Formats.OutputPaths.RequireDirectory(path);
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            long bytes;
            using (var output = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                var hash = new XxHash64();
                void Put(ReadOnlySpan<byte> data)
                {
                    hash.Append(data);
                    output.Write(data);
                }
                var number = new byte[8];
                void PutInt(int value)
                {
                    BinaryPrimitives.WriteInt32LittleEndian(number, value);
                    Put(number.AsSpan(0, 4));
                }
                Put(Magic);
                PutInt(Version);
                Put(ModelFingerprint.Of(model));
                PutInt(config.LayerCount);
                PutInt(config.KvHeadCount);
                PutInt(config.HeadDim);
                PutInt(tokens.Length);
                byte[] spec = Encoding.UTF8.GetBytes(storage.ToString());
                BinaryPrimitives.WriteUInt16LittleEndian(number, (ushort)spec.Length);
                Put(number.AsSpan(0, 2));
                Put(spec);
                foreach (int token in tokens)
                    PutInt(token);
                var codec = new LayerCodec(storage, config.KvHeadCount, config.HeadDim);
                var preRotary = new PreRotaryCodec(storage, config.KvHeadCount, config.HeadDim, config.RopeStyle);
                var keys = new float[positions * config.KvDim];   // [positions, kvDim]
                var values = new float[positions * config.KvDim]; // [positions, kvDim]
                for (int l = 0; l < config.LayerCount; l++)
                {
                    cache.Read(l, 0, positions, keys, values);
                    var (cos, sin) = runtime.RotaryTables(l);
                    byte[] stream = storage.PreRotary
                        ? preRotary.Encode(keys, values, positions, cos, sin, sensitivities.Keys(l), storage.Window > 0 ? sensitivities.Attention(l, keys, cos, sin) : null)
                        : codec.Encode(keys, values, positions);
                    PutInt(stream.Length);
                    Put(stream);
                }
                BinaryPrimitives.WriteUInt64LittleEndian(number, hash.GetCurrentHashAsUInt64());
                output.Write(number);
                bytes = output.Length;
            }
            File.Move(temp, full, overwrite: true);
            return new SavedCacheInfo(tokens.ToArray(), positions, storage, bytes);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    /// <summary>
    /// Loads <paramref name="path"/> into <paramref name="runtime"/>: its cache is emptied, then holds the saved
    /// positions, and <see cref="Transformer.Position"/> is after them. Returns the prompt's tokens: the last one (and
    /// whatever follows it) is still to run. A truncated or corrupt file, or one saved from another model, is a
    /// <see cref="ModelFormatException"/> naming the file and the problem.
    /// </summary>
    public static SavedCacheInfo Load(Transformer runtime, string path)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(path);
        if (runtime.Cache.AttendsInOrder)
            throw new NotSupportedException($"a saved cache cannot be loaded into an evicting KV cache ({runtime.Cache.Policy}): eviction needs the queries of every position");
        byte[] file = File.ReadAllBytes(path);
        var model = runtime.Model;
        var config = model.Config;
        if (file.Length < 4 + 4 + 16 + 5 * 4 + 2 + 8 || !file.AsSpan(0, 4).SequenceEqual(Magic))
            throw new ModelFormatException(path, file.Length >= 4 && file.AsSpan(0, 4).SequenceEqual(Magic) ? "truncated saved KV cache" : "not a saved KV cache (no SQKV magic)");
        int version = BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(4));
        if (version != 1 && version != Version)
            throw new ModelFormatException(path, $"saved KV cache version {version}; this Squeeze reads versions 1 to {Version}");
        ulong expected = BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(file.Length - 8));
        if (XxHash64.HashToUInt64(file.AsSpan(0, file.Length - 8)) != expected)
            throw new ModelFormatException(path, "checksum mismatch: the saved KV cache is truncated or corrupt");
        byte[] fingerprint = ModelFingerprint.Of(model);
        if (!file.AsSpan(8, 16).SequenceEqual(fingerprint))
            throw new ModelFormatException(path, $"saved from another model (fingerprint {Convert.ToHexStringLower(file.AsSpan(8, 16))}); " +
                $"{Path.GetFileName(model.Source.TrimEnd('/', '\\'))} has fingerprint {Convert.ToHexStringLower(fingerprint)}");
        var reader = new Reader(file, path);
        reader.Skip(24);
        int layers = reader.Int(), kvHeads = reader.Int(), headDim = reader.Int(), count = reader.Int();
        if (layers != config.LayerCount || kvHeads != config.KvHeadCount || headDim != config.HeadDim)
            throw new ModelFormatException(path, $"holds {layers} layers of {kvHeads} × {headDim}; the model has {config.LayerCount} of {config.KvHeadCount} × {config.HeadDim}");
        if (count < 1 || count > runtime.Cache.ContextLength)
            throw new ModelFormatException(path, $"holds a prompt of {count} tokens; the context holds {runtime.Cache.ContextLength}");
        string spec = Encoding.UTF8.GetString(reader.Bytes(reader.UShort()));
        SavedCacheStorage storage;
        try
        {
            storage = SavedCacheStorage.Parse(spec);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(path, $"storage policy '{spec}': {e.Message}", e);
        }
        if (storage.PreRotary && version < 2)
            throw new ModelFormatException(path, $"storage policy '{spec}' in a version-{version} saved KV cache, which has no pre-RoPE storage");
        var tokens = new int[count];
        for (int i = 0; i < count; i++)
        {
            tokens[i] = reader.Int();
            if ((uint)tokens[i] >= (uint)config.VocabSize)
                throw new ModelFormatException(path, $"token {i} is {tokens[i]}, outside the vocabulary of {config.VocabSize}");
        }
        int positions = count - 1;
        var codec = new LayerCodec(storage, kvHeads, headDim);
        var preRotary = new PreRotaryCodec(storage, kvHeads, headDim, config.RopeStyle);
        var keys = new float[positions * config.KvDim];   // [positions, kvDim]
        var values = new float[positions * config.KvDim]; // [positions, kvDim]
        runtime.Reset();
        for (int l = 0; l < layers; l++)
        {
            int length = reader.Int();
            var stream = reader.Memory(length);
            if (positions == 0)
                continue;
            if (storage.PreRotary)
            {
                var (cos, sin) = runtime.RotaryTables(l);
                preRotary.Decode(stream, positions, cos, sin, keys, values);
            }
            else
            {
                codec.Decode(stream, positions, keys, values);
            }
            runtime.Cache.Append(l, 0, keys, values);
        }
        if (reader.Remaining != 8)
            throw new ModelFormatException(path, $"{reader.Remaining - 8} bytes after the last layer");
        runtime.Resume(positions);
        return new SavedCacheInfo(tokens, positions, storage, file.Length);
    }

    /// <summary>Reads the header and layers in order; running past the checksum is a truncated file.</summary>
    private sealed class Reader(byte[] file, string path)
    {
        private int at;

        public int Remaining => file.Length - at;

        public void Skip(int count) => Take(count);

        public int Int() => BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(Take(4), 4));

        public int UShort() => BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan(Take(2), 2));

        public ReadOnlySpan<byte> Bytes(int count) => file.AsSpan(Take(count), count);

        public ReadOnlyMemory<byte> Memory(int count) => file.AsMemory(Take(count), count);

        private int Take(int count)
        {
            if (count < 0 || count > file.Length - 8 - at)
                throw new ModelFormatException(path, $"truncated saved KV cache: {count} bytes wanted at offset {at} of {file.Length - 8}");
            int start = at;
            at += count;
            return start;
        }
    }
}

using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Squeeze.Tensors;

namespace Squeeze.Embeddings;

/// <summary>
/// A compressed store of embedding vectors and the search over it (inner product; cosine for normalized embeddings).
/// <para>File layout (little-endian): "SQEM", version (u32) = 1, the method spec (u16 length + UTF-8), dimension and
/// vector count (i32 each), the method's payload, then an XxHash64 (u64) of every byte before it.</para>
/// </summary>
public abstract class EmbeddingStore
{
    private static ReadOnlySpan<byte> Magic => "SQEM"u8;

    /// <summary>The format version this code writes and reads.</summary>
    public const int Version = 1;

    /// <summary>A store of <paramref name="count"/> vectors of <paramref name="dim"/> values.</summary>
    protected EmbeddingStore(EmbeddingMethod method, int dim, int count)
    {
        Method = method;
        Dim = dim;
        Count = count;
    }

    /// <summary>How the vectors are stored.</summary>
    public EmbeddingMethod Method { get; }

    /// <summary>Values per vector.</summary>
    public int Dim { get; }

    /// <summary>Vectors held.</summary>
    public int Count { get; }

    /// <summary>Bytes per vector that the search scans (for <c>binary+int8</c>, the bits alone: the int8 copies are
    /// read only for the candidates re-scored).</summary>
    public abstract double IndexBytesPerVector { get; }

    /// <summary>Bytes per vector of everything the store keeps: per-vector payload plus its shared tables (means,
    /// codebooks, projection) divided by the count.</summary>
    public double StoredBytesPerVector => (double)(PayloadBytes + SharedBytes) / Count;

    /// <summary>Bytes of the per-vector payload (all vectors).</summary>
    protected abstract long PayloadBytes { get; }

    /// <summary>Bytes of the tables every vector shares.</summary>
    protected abstract long SharedBytes { get; }

    /// <summary>Compresses <paramref name="vectors"/> ([count, dim] row-major) with <paramref name="method"/>; k-means
    /// and any sampling are seeded with <paramref name="seed"/>.</summary>
    public static EmbeddingStore Build(ReadOnlySpan<float> vectors, int dim, EmbeddingMethod method, int seed = 42)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        if (vectors.Length == 0 || vectors.Length % dim != 0)
            throw new ArgumentException($"{vectors.Length} values are not a whole, non-zero number of {dim}-dimensional vectors", nameof(vectors));
        return method.Kind switch
        {
            EmbeddingMethodKind.Int8 => Int8Store.Build(vectors, dim),
            EmbeddingMethodKind.Binary => BinaryStore.Build(vectors, dim, method),
            EmbeddingMethodKind.ProductQuantization => ProductQuantizationStore.Fit(vectors, dim, method, seed),
            _ => PcaStore.Build(vectors, dim, method),
        };
    }

    /// <summary>The best <paramref name="k"/> vectors for <paramref name="query"/> ([dim]), best first.</summary>
    public Neighbor[] Search(ReadOnlySpan<float> query, int k)
    {
        if (query.Length != Dim)
            throw new ArgumentException($"a query of {query.Length} values searches a store of {Dim}-dimensional vectors", nameof(query));
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        return SearchCore(query, Math.Min(k, Count));
    }

    /// <summary>Searches every query of <paramref name="queries"/> ([count, dim]) in parallel.</summary>
    public Neighbor[][] SearchAll(float[] queries, int k, int threads = 0)
    {
        ArgumentNullException.ThrowIfNull(queries);
        if (queries.Length % Dim != 0)
            throw new ArgumentException($"{queries.Length} values are not a whole number of {Dim}-dimensional queries", nameof(queries));
        var results = new Neighbor[queries.Length / Dim][];
        Parallel.For(0, results.Length, new ParallelOptions { MaxDegreeOfParallelism = threads > 0 ? threads : Environment.ProcessorCount },
            q => results[q] = Search(queries.AsSpan(q * Dim, Dim), k));
        return results;
    }

    /// <summary>The search of a query of the right length for k ≤ <see cref="Count"/>.</summary>
    protected abstract Neighbor[] SearchCore(ReadOnlySpan<float> query, int k);

    /// <summary>Writes the method's payload.</summary>
    protected abstract void WritePayload(BinaryWriter writer);

    /// <summary>Writes the store to <paramref name="path"/> (a temporary file beside it, renamed when complete).</summary>
    public void Save(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        Formats.OutputPaths.RequireDirectory(path);
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16))
            {
                using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
                {
                    writer.Write(Magic);
                    writer.Write((uint)Version);
                    byte[] spec = Encoding.UTF8.GetBytes(Method.ToString());
                    writer.Write((ushort)spec.Length);
                    writer.Write(spec);
                    writer.Write(Dim);
                    writer.Write(Count);
                    WritePayload(writer);
                }
                stream.Position = 0;
                var hash = new XxHash64();
                hash.Append(stream);
                Span<byte> trailer = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(trailer, hash.GetCurrentHashAsUInt64());
                stream.Write(trailer);
            }
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    /// <summary>Reads a store <see cref="Save"/> wrote; a file that is not one, truncated or corrupt is a
    /// <see cref="ModelFormatException"/> naming it and the problem.</summary>
    public static EmbeddingStore Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] file = File.ReadAllBytes(path);
        if (file.Length < 4 || !file.AsSpan(0, 4).SequenceEqual(Magic))
            throw new ModelFormatException(path, "not an embedding store (no SQEM magic)");
        if (file.Length < 4 + 4 + 2 + 8 + 8)
            throw new ModelFormatException(path, "truncated embedding store");
        if (XxHash64.HashToUInt64(file.AsSpan(0, file.Length - 8)) != BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(file.Length - 8)))
            throw new ModelFormatException(path, "checksum mismatch: the embedding store is truncated or corrupt");
        using var reader = new BinaryReader(new MemoryStream(file, 0, file.Length - 8, writable: false));
        try
        {
            reader.ReadBytes(4);
            uint version = reader.ReadUInt32();
            if (version != Version)
                throw new ModelFormatException(path, $"embedding store version {version}; this Squeeze reads version {Version}");
            string spec = Encoding.UTF8.GetString(reader.ReadBytes(reader.ReadUInt16()));
            EmbeddingMethod method;
            try
            {
                method = EmbeddingMethod.Parse(spec);
            }
            catch (ArgumentException e)
            {
                throw new ModelFormatException(path, e.Message, e);
            }
            int dim = reader.ReadInt32(), count = reader.ReadInt32();
            if (dim < 1 || count < 1)
                throw new ModelFormatException(path, $"{count} vectors of {dim} values");
            EmbeddingStore store = method.Kind switch
            {
                EmbeddingMethodKind.Int8 => Int8Store.Read(reader, dim, count),
                EmbeddingMethodKind.Binary => BinaryStore.Read(reader, method, dim, count),
                EmbeddingMethodKind.ProductQuantization => ProductQuantizationStore.Read(reader, method, dim, count),
                _ => PcaStore.Read(reader, method, dim, count),
            };
            if (reader.BaseStream.Position != reader.BaseStream.Length)
                throw new ModelFormatException(path, $"{reader.BaseStream.Length - reader.BaseStream.Position} bytes after the {method} payload");
            return store;
        }
        catch (EndOfStreamException e)
        {
            throw new ModelFormatException(path, "truncated embedding store", e);
        }
    }

    /// <summary>Reads <paramref name="count"/> f32 values.</summary>
    protected static float[] ReadFloats(BinaryReader reader, int count)
    {
        ArgumentNullException.ThrowIfNull(reader);
        byte[] bytes = reader.ReadBytes(checked(4 * count));
        if (bytes.Length != 4 * count)
            throw new EndOfStreamException();
        var values = new float[count];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return values;
    }

    /// <summary>Writes f32 values.</summary>
    protected static void WriteFloats(BinaryWriter writer, ReadOnlySpan<float> values)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes.</summary>
    protected static byte[] ReadExactly(BinaryReader reader, long count)
    {
        ArgumentNullException.ThrowIfNull(reader);
        byte[] bytes = reader.ReadBytes(checked((int)count));
        if (bytes.Length != count)
            throw new EndOfStreamException();
        return bytes;
    }
}

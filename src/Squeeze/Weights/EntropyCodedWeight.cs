using Squeeze.Coding;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// A <see cref="UniformWeight"/> whose codes are stored entropy-coded (the native "entropy" scheme): every code of the
/// tensor, row-major, is one symbol of an alphabet of 2^bits, coded by <see cref="ChunkedRans"/> with one frequency
/// table per tensor in chunks of <see cref="ChunkRows"/> rows; the scales and mins are stored as the uniform scheme
/// stores them. Uniform codes of Gaussian-like weights are far from equally likely (the middle codes dominate), so
/// they take fewer bits than their width. The coding is lossless and only changes the stored size: the runtime holds
/// the decoded <see cref="UniformWeight"/> (decoded once at load, chunks in parallel) and multiplies with it;
/// <see cref="LinearWeight.StoredBytes"/> is the coded size.
/// </summary>
public sealed class EntropyCodedWeight : LinearWeight
{
    /// <summary>Rows per chunk when none is given: about 64 Ki symbols per chunk.</summary>
    public static int DefaultChunkRows(int columns) => Math.Max(1, 65536 / columns);

    private EntropyCodedWeight(UniformWeight decoded, int chunkRows, long storedBytes)
        : base(decoded.Name, decoded.Rows, decoded.Columns)
    {
        Decoded = decoded;
        ChunkRows = chunkRows;
        StoredBytes = storedBytes;
    }

    /// <summary>The weight the runtime multiplies.</summary>
    public UniformWeight Decoded { get; }

    /// <summary>Rows per coded chunk.</summary>
    public int ChunkRows { get; }

    /// <summary>Bytes in the native file: scales, mins, the frequency table (2 bytes per symbol), the streams and the
    /// chunk table (8 bytes per chunk).</summary>
    public override long StoredBytes { get; }

    /// <inheritdoc/>
    public override string Scheme => $"entropy {Decoded.Scheme}";

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination) => Decoded.DecodeRow(row, destination);

    /// <inheritdoc/>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y) => Decoded.Multiply(x, tokens, context, y);

    /// <summary>Entropy-codes <paramref name="weight"/>'s codes in chunks of <paramref name="chunkRows"/> rows (0: the default).</summary>
    public static EntropyCodedWeight Encode(UniformWeight weight, int chunkRows = 0, int threads = 1)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentOutOfRangeException.ThrowIfNegative(chunkRows);
        chunkRows = chunkRows == 0 ? DefaultChunkRows(weight.Columns) : chunkRows;
        var coded = Code(weight, chunkRows, threads);
        return new EntropyCodedWeight(weight, chunkRows, StoredSize(weight, coded));
    }

    /// <summary>The weight read from its stored parts: <paramref name="coded"/> decoded (chunks in parallel) and packed.</summary>
    /// <exception cref="InvalidDataException">A chunk is corrupt, or a decoded code does not fit the scheme's bits.</exception>
    public static EntropyCodedWeight Decode(string name, int rows, int columns, UniformScheme scheme, ChunkedRans coded, int chunkRows,
        ReadOnlyMemory<ushort> scales, ReadOnlyMemory<ushort> mins, int threads)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        ArgumentNullException.ThrowIfNull(coded);
        if (coded.SymbolCount != (long)rows * columns || coded.ChunkSymbols != (long)chunkRows * columns)
            throw new InvalidDataException($"{coded.SymbolCount} symbols in chunks of {coded.ChunkSymbols} do not code [{rows}, {columns}] in chunks of {chunkRows} rows");
        if (coded.Table.Frequencies.Length != 1 << scheme.Bits)
            throw new InvalidDataException($"the frequency table has {coded.Table.Frequencies.Length} symbols; {scheme.Bits}-bit codes need {1 << scheme.Bits}");
        var symbols = coded.Decode(threads);
        int rowBytes = (int)scheme.RowBytes(columns);
        var packed = new byte[(long)rows * rowBytes];
        for (int r = 0; r < rows; r++)
            UniformCodec.Pack(symbols.AsSpan(r * columns, columns), scheme.Bits, packed.AsSpan(r * rowBytes, rowBytes));
        var decoded = new UniformWeight(name, rows, columns, scheme, packed, scales, mins);
        return new EntropyCodedWeight(decoded, chunkRows, StoredSize(decoded, coded));
    }

    /// <summary>The coded codes as this encoder writes them (deterministic: the same bytes on every call and thread count).</summary>
    public ChunkedRans Code(int threads) => Code(Decoded, ChunkRows, threads);

    private static ChunkedRans Code(UniformWeight weight, int chunkRows, int threads)
    {
        var scheme = weight.UniformScheme;
        int rows = weight.Rows, columns = weight.Columns, rowBytes = (int)scheme.RowBytes(columns);
        var symbols = new byte[(long)rows * columns];
        for (int r = 0; r < rows; r++)
            UniformCodec.Unpack(weight.Codes.Slice(r * rowBytes, rowBytes), scheme.Bits, symbols.AsSpan(r * columns, columns));
        return ChunkedRans.Encode(symbols, 1 << scheme.Bits, checked(chunkRows * columns), threads);
    }

    private static long StoredSize(UniformWeight weight, ChunkedRans coded)
        => 2L * (weight.Scales.Length + weight.Mins.Length) + 2L * coded.Table.Frequencies.Length + coded.Streams.LongLength + 8L * coded.ChunkLengths.Length;

    /// <summary>An upper bound of <see cref="StoredBytes"/> for a [<paramref name="rows"/>, <paramref name="columns"/>]
    /// weight in <paramref name="scheme"/> coded in the default chunks, known before coding: the scales and mins, the
    /// frequency table, each chunk's length and checksum, and <see cref="ChunkedRans.StreamBytesBound"/> of the codes.</summary>
    public static long StoredBytesBound(UniformScheme scheme, int rows, int columns)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        long symbols = (long)rows * columns;
        int chunkSymbols = DefaultChunkRows(columns) * columns;
        return scheme.StoredBytes(rows, columns) - rows * scheme.RowBytes(columns) + 2L * (1 << scheme.Bits)
            + 8L * ChunkedRans.ChunkCount(symbols, chunkSymbols) + ChunkedRans.StreamBytesBound(symbols, chunkSymbols, 1 << scheme.Bits);
    }
}

using Squeeze.Coding;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// A BF16 weight stored losslessly in fewer bytes (the native "dfloat11" scheme, <see cref="DFloat11"/>): one raw
/// sign-and-mantissa byte per value plus the exponents coded by <see cref="ChunkedRans"/> in chunks of
/// <see cref="ChunkRows"/> rows. The runtime holds the decoded BF16 tensor (decoded once at load into an aligned native
/// buffer, chunks in parallel) and multiplies it with the BF16 kernels; <see cref="LinearWeight.StoredBytes"/> is the
/// coded size.
/// </summary>
public sealed class DFloat11Weight : LinearWeight
{
    private DFloat11Weight(BlockWeight decoded, int chunkRows, long storedBytes)
        : base(decoded.Name, decoded.Rows, decoded.Columns)
    {
        Decoded = decoded;
        ChunkRows = chunkRows;
        StoredBytes = storedBytes;
    }

    /// <summary>The BF16 weight the runtime multiplies.</summary>
    public BlockWeight Decoded { get; }

    /// <summary>Rows per coded chunk of exponents.</summary>
    public int ChunkRows { get; }

    /// <summary>Bytes in the native file: a sign-mantissa byte per value, the exponent frequency table (512 bytes), the
    /// exponent streams and the chunk table (8 bytes per chunk).</summary>
    public override long StoredBytes { get; }

    /// <inheritdoc/>
    public override string Scheme => "dfloat11 BF16";

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination) => Decoded.DecodeRow(row, destination);

    /// <inheritdoc/>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y) => Decoded.Multiply(x, tokens, context, y);

    /// <summary>Codes a BF16 weight (<paramref name="chunkRows"/> 0: about 64 Ki values per chunk).</summary>
    /// <exception cref="ArgumentException">The weight is not BF16.</exception>
    public static DFloat11Weight Encode(BlockWeight weight, int chunkRows = 0, int threads = 1)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Type != GgmlType.BF16)
            throw new ArgumentException($"{weight}: DFloat11 codes BF16 weights, not {weight.Type}", nameof(weight));
        ArgumentOutOfRangeException.ThrowIfNegative(chunkRows);
        chunkRows = chunkRows == 0 ? EntropyCodedWeight.DefaultChunkRows(weight.Columns) : chunkRows;
        var (_, exponents) = Code(weight, chunkRows, threads);
        return new DFloat11Weight(weight, chunkRows, StoredSize(weight.Rows, weight.Columns, exponents));
    }

    /// <summary>The weight read from its stored parts: exponents decoded (chunks in parallel) and joined with the
    /// sign-mantissa bytes ([rows, columns]) into a BF16 tensor.</summary>
    /// <exception cref="InvalidDataException">A chunk is corrupt or the parts disagree in size.</exception>
    public static unsafe DFloat11Weight Decode(string name, int rows, int columns, ReadOnlySpan<byte> signMantissa, ChunkedRans exponents, int chunkRows, int threads)
    {
        ArgumentNullException.ThrowIfNull(exponents);
        long count = (long)rows * columns;
        if (signMantissa.Length != count || exponents.SymbolCount != count || exponents.ChunkSymbols != (long)chunkRows * columns)
            throw new InvalidDataException($"{signMantissa.Length} sign-mantissa bytes and {exponents.SymbolCount} exponents in chunks of {exponents.ChunkSymbols} do not code [{rows}, {columns}] in chunks of {chunkRows} rows");
        var exponentSymbols = exponents.Decode(threads);
        var buffer = NativeBuffer.Allocate(2 * count);
        DFloat11.Join(signMantissa, exponentSymbols, new Span<ushort>(buffer.Pointer, checked((int)count)));
        var tensor = new Tensor(name, GgmlType.BF16, [rows, columns], buffer, 0);
        return new DFloat11Weight(new BlockWeight(tensor), chunkRows, StoredSize(rows, columns, exponents));
    }

    /// <summary>The stored parts as this encoder writes them (deterministic).</summary>
    public (byte[] SignMantissa, ChunkedRans Exponents) Code(int threads) => Code(Decoded, ChunkRows, threads);

    private static unsafe (byte[] SignMantissa, ChunkedRans Exponents) Code(BlockWeight weight, int chunkRows, int threads)
    {
        long count = (long)weight.Rows * weight.Columns;
        var values = new ReadOnlySpan<ushort>(weight.Tensor.Data, checked((int)count));
        var signMantissa = new byte[count];
        var exponents = new byte[count];
        DFloat11.Split(values, signMantissa, exponents);
        return (signMantissa, ChunkedRans.Encode(exponents, ExponentSymbols, checked(chunkRows * weight.Columns), threads));
    }

    private static long StoredSize(int rows, int columns, ChunkedRans exponents)
        => (long)rows * columns + 2L * exponents.Table.Frequencies.Length + exponents.Streams.LongLength + 8L * exponents.ChunkLengths.Length;

    /// <summary>An upper bound of <see cref="StoredBytes"/> for a [<paramref name="rows"/>, <paramref name="columns"/>]
    /// weight coded in the default chunks, known before coding: the sign-mantissa bytes, the exponents' frequency table,
    /// each chunk's length and checksum, and <see cref="ChunkedRans.StreamBytesBound"/> of the exponents (at most their
    /// plain byte each: the bound is about the BF16 size, which real weights' exponents code to a third of).</summary>
    public static long StoredBytesBound(int rows, int columns)
    {
        long symbols = (long)rows * columns;
        int chunkSymbols = EntropyCodedWeight.DefaultChunkRows(columns) * columns;
        return symbols + 2L * ExponentSymbols + 8L * ChunkedRans.ChunkCount(symbols, chunkSymbols) + ChunkedRans.StreamBytesBound(symbols, chunkSymbols, ExponentSymbols);
    }

    // BF16 exponents are bytes.
    private const int ExponentSymbols = 256;
}

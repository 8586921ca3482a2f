using System.Runtime.Intrinsics;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// Vector quantization (VPTQ, GPTVQ): each row of W [rows, cols] is cut into cols / <see cref="Dimension"/> consecutive
/// vectors, and each vector is replaced by one of the K = 2^<see cref="IndexBits"/> centroids of one codebook shared by
/// the whole tensor (K × <see cref="Dimension"/> f16 values), optionally times an f16 scale per row:
/// <c>W[r, v·d + j] = codebook[index(r, v), j] (× scale[r])</c>. Indices are stored bit-packed, least-significant bit
/// first, each row from a byte boundary (<see cref="PackRow"/>); in memory they are kept unpacked as 16-bit integers.
/// Bits per weight: <see cref="IndexBits"/> / <see cref="Dimension"/> + 16·K·d / (rows·cols) + 16 / cols with scales.
/// The product uses per-token tables of centroid dot products when many rows share the codebook (see
/// <see cref="Multiply"/>); otherwise, and always in the deterministic mode, it decodes rows through an f32 copy of the
/// codebook and multiplies them as <see cref="DecodedProduct"/> does, the same bits as the reference product.
/// </summary>
public sealed unsafe class VectorCodebookWeight : LinearWeight
{
    private readonly ushort[] codebook; // [K, dim] f16
    private readonly ushort[] indices;  // [rows, columns / dim]
    private readonly ushort[] scales;   // [rows] f16, or empty
    private readonly float[] centroids; // [K, dim] the codebook widened to f32
    private readonly float[] rowScales; // [rows] the scales widened to f32, or empty
    private readonly float[] centroidsTransposed; // [dim, K] f32, for the per-token dot-product tables

    /// <summary>Creates a vector-quantized weight (the arrays are taken, not copied).</summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="rows">Output features.</param>
    /// <param name="columns">Input features; a multiple of <paramref name="dimension"/>.</param>
    /// <param name="dimension">Values per vector, <see cref="MinDimension"/>..<see cref="MaxDimension"/>.</param>
    /// <param name="indexBits">Bits per index, <see cref="MinIndexBits"/>..<see cref="MaxIndexBits"/>.</param>
    /// <param name="codebook">[2^indexBits, dimension] f16 centroids, all finite.</param>
    /// <param name="indices">[rows, columns / dimension] centroid indices, each below 2^indexBits.</param>
    /// <param name="scales">[rows] finite f16 row scales, or null (no scales).</param>
    /// <exception cref="ArgumentException">A size disagrees, an index is out of range or a value is not finite.</exception>
    public VectorCodebookWeight(string name, int rows, int columns, int dimension, int indexBits, ushort[] codebook, ushort[] indices, ushort[]? scales)
        : base(name, rows, columns)
    {
        ArgumentNullException.ThrowIfNull(codebook);
        ArgumentNullException.ThrowIfNull(indices);
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, MinDimension);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(dimension, MaxDimension);
        ArgumentOutOfRangeException.ThrowIfLessThan(indexBits, MinIndexBits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(indexBits, MaxIndexBits);
        if (columns % dimension != 0)
            throw new ArgumentException($"{name}: vectors of {dimension} values do not divide the row length {columns}", nameof(dimension));
        Dimension = dimension;
        IndexBits = indexBits;
        scales ??= [];
        if (codebook.Length != Centroids * dimension)
            throw new ArgumentException($"{name}: a codebook of {Centroids} centroids of {dimension} values has {Centroids * dimension} entries, not {codebook.Length}", nameof(codebook));
        if (indices.LongLength != (long)rows * VectorsPerRow)
            throw new ArgumentException($"{name}: {rows} rows of {VectorsPerRow} vectors need {(long)rows * VectorsPerRow} indices, not {indices.LongLength}", nameof(indices));
        if (scales.Length != 0 && scales.Length != rows)
            throw new ArgumentException($"{name}: {scales.Length} row scales for {rows} rows", nameof(scales));
        centroids = new float[codebook.Length];
        for (int i = 0; i < codebook.Length; i++)
        {
            centroids[i] = HalfConversions.F16ToF32(codebook[i]);
            if (!float.IsFinite(centroids[i]))
                throw new ArgumentException($"{name}: value {i % dimension} of centroid {i / dimension} is not finite (f16 bits 0x{codebook[i]:X4})", nameof(codebook));
        }
        for (long i = 0; i < indices.LongLength; i++)
        {
            if (indices[i] >= Centroids)
                throw new ArgumentException($"{name}: index {indices[i]} of vector {i % VectorsPerRow} of row {i / VectorsPerRow} is not below {Centroids}", nameof(indices));
        }
        rowScales = new float[scales.Length];
        for (int r = 0; r < scales.Length; r++)
        {
            rowScales[r] = HalfConversions.F16ToF32(scales[r]);
            if (!float.IsFinite(rowScales[r]))
                throw new ArgumentException($"{name}: the scale of row {r} is not finite (f16 bits 0x{scales[r]:X4})", nameof(scales));
        }
        centroidsTransposed = new float[centroids.Length];
        for (int i = 0; i < centroids.Length; i++)
            centroidsTransposed[(long)(i % dimension) * Centroids + i / dimension] = centroids[i];
        this.codebook = codebook;
        this.indices = indices;
        this.scales = scales;
        RowBytes = PackedRowBytes(VectorsPerRow, indexBits);
    }

    /// <summary>Shortest vector.</summary>
    public const int MinDimension = 1;

    /// <summary>Longest vector.</summary>
    public const int MaxDimension = 16;

    /// <summary>Narrowest index.</summary>
    public const int MinIndexBits = 1;

    /// <summary>Widest index.</summary>
    public const int MaxIndexBits = 16;

    /// <summary>Values per vector.</summary>
    public int Dimension { get; }

    /// <summary>Bits per stored index.</summary>
    public int IndexBits { get; }

    /// <summary>Centroids in the codebook, 2^<see cref="IndexBits"/>.</summary>
    public int Centroids => 1 << IndexBits;

    /// <summary>Vectors per row, <see cref="LinearWeight.Columns"/> / <see cref="Dimension"/>.</summary>
    public int VectorsPerRow => Columns / Dimension;

    /// <summary>True when every row has an f16 scale.</summary>
    public bool HasRowScales => scales.Length > 0;

    /// <summary>Bytes of one packed row of indices.</summary>
    public int RowBytes { get; }

    /// <summary>The f16 codebook, [<see cref="Centroids"/>, <see cref="Dimension"/>].</summary>
    public ReadOnlySpan<ushort> Codebook => codebook;

    /// <summary>The centroid indices, [rows, <see cref="VectorsPerRow"/>].</summary>
    public ReadOnlySpan<ushort> Indices => indices;

    /// <summary>The f16 row scales, [rows], or empty.</summary>
    public ReadOnlySpan<ushort> Scales => scales;

    /// <inheritdoc />
    public override long StoredBytes => StoredBytesFor(Rows, Columns, Dimension, IndexBits, HasRowScales);

    /// <summary>Bytes a [<paramref name="rows"/>, <paramref name="columns"/>] weight takes in vectors of
    /// <paramref name="dimension"/> values with <paramref name="indexBits"/>-bit indices: the f16 codebook, the packed
    /// indices and, with <paramref name="rowScales"/>, an f16 scale per row.</summary>
    public static long StoredBytesFor(int rows, int columns, int dimension, int indexBits, bool rowScales)
        => 2L * (1L << indexBits) * dimension + (long)rows * PackedRowBytes(columns / dimension, indexBits) + (rowScales ? 2L * rows : 0);

    /// <inheritdoc />
    public override string Scheme => $"vq d{Dimension} b{IndexBits}{(HasRowScales ? " row-scaled" : "")}";

    /// <summary>Reference: <c>destination[v·d + j] = f32(codebook[index(row, v), j])</c>, times f32(scale[row]) (one binary32
    /// product) when there are row scales.</summary>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        int d = Dimension, vectors = VectorsPerRow;
        bool scaled = HasRowScales;
        float scale = scaled ? HalfConversions.F16ToF32(scales[row]) : 1;
        for (int v = 0; v < vectors; v++)
        {
            int k = indices[(long)row * vectors + v];
            for (int j = 0; j < d; j++)
            {
                float value = HalfConversions.F16ToF32(codebook[k * d + j]);
                destination[v * d + j] = scaled ? value * scale : value;
            }
        }
    }

    /// <summary>The product. Outside the deterministic mode, for at most <see cref="LookupMaxTokens"/> tokens (decoding) when
    /// the rows outnumber twice the centroids (the classifier, the largest matrices), a table of dot products per token: lut[v, k] = Σ_j codebook[k, j] · x[v·d + j] for every
    /// block v and centroid k, then y[r] = Σ_v lut[v, index(r, v)] (times the row scale) in v order — V·K·d multiply-adds
    /// and rows·V lookups per token instead of rows·cols decoded values. Otherwise rows are decoded a chunk at a time
    /// (<see cref="DecodeRowFast"/>) and dotted as <see cref="DecodedProduct"/> does, the same bits as the reference
    /// product. Either way every output is summed by one thread in a fixed order.</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(context);
        CheckProduct(x, tokens, y);
        if (tokens == 0)
            return;
        if (!context.Deterministic && UsesLookupTables && tokens <= LookupMaxTokens)
        {
            MultiplyByLookup(x, tokens, context, y);
            return;
        }
        DecodedProduct.Multiply(this, x, tokens, context, y);
    }

    /// <summary>Most tokens multiplied through per-token tables: a batch amortizes decoded rows over its tokens, a table
    /// serves one token (prompt speed on stories15M fell threefold with tables for 128-token batches).</summary>
    public const int LookupMaxTokens = 2;

    /// <summary>True when <see cref="Multiply"/> uses per-token dot-product tables for few tokens outside the deterministic mode.</summary>
    public bool UsesLookupTables => Rows >= 2 * Centroids;

    private void MultiplyByLookup(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        int vectors = VectorsPerRow, k = Centroids, d = Dimension;
        var table = (float*)context.Scratch((long)vectors * k * sizeof(float));
        int parts = context.Threads == 1 ? 1 : Math.Min((Rows + 63) / 64, 4 * context.Threads);
        var job = new LookupJob { Weight = this, Table = table };
        fixed (float* transposed = centroidsTransposed)
        fixed (float* px = x)
        fixed (float* py = y)
        {
            for (int t = 0; t < tokens; t++)
            {
                float* xt = px + (long)t * Columns;
                for (int v = 0; v < vectors; v++)
                    DotTable(transposed, xt + v * d, d, k, table + (long)v * k);
                job.Y = py + (long)t * Rows;
                context.Run(job, parts);
            }
        }
    }

    // destination[k] = Σ_j transposed[j·count + k] · x[j] for every centroid k, in j order (eight centroids per vector step).
    private static void DotTable(float* transposed, float* x, int d, int count, float* destination)
    {
        int k = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; k + 8 <= count; k += 8)
            {
                var sum = Vector256<float>.Zero;
                for (int j = 0; j < d; j++)
                    sum += Vector256.Create(x[j]) * Vector256.Load(transposed + (long)j * count + k);
                sum.Store(destination + k);
            }
        }
        for (; k < count; k++)
        {
            float sum = 0;
            for (int j = 0; j < d; j++)
                sum += x[j] * transposed[(long)j * count + k];
            destination[k] = sum;
        }
    }

    // Row ranges in parallel: y[r] = Σ_v table[v, index(r, v)] (× the row scale).
    private sealed class LookupJob : IParallelJob
    {
        public required VectorCodebookWeight Weight;
        public required float* Table;
        public float* Y;

        public void Run(int part, int parts)
        {
            var weight = Weight;
            int rows = weight.Rows, vectors = weight.VectorsPerRow, k = weight.Centroids;
            int r0 = (int)((long)rows * part / parts), r1 = (int)((long)rows * (part + 1) / parts);
            fixed (ushort* all = weight.indices)
            {
                for (int r = r0; r < r1; r++)
                {
                    ushort* index = all + (long)r * vectors;
                    float* table = Table;
                    float sum = 0;
                    for (int v = 0; v < vectors; v++, table += k)
                        sum += table[index[v]];
                    Y[r] = weight.HasRowScales ? sum * weight.rowScales[r] : sum;
                }
            }
        }
    }

    /// <summary>Decodes row <paramref name="row"/> into <paramref name="destination"/> ([Columns]) with the same bits as
    /// <see cref="DecodeRow"/>: centroids copied from the f32 codebook, times the f32 row scale.</summary>
    internal override void DecodeRowFast(int row, float* destination, float* scratch)
    {
        int d = Dimension, vectors = VectorsPerRow;
        fixed (float* table = centroids)
        fixed (ushort* rowIndices = &indices[(long)row * vectors])
        {
            if (HasRowScales)
            {
                float scale = rowScales[row];
                for (int v = 0; v < vectors; v++)
                {
                    float* c = table + rowIndices[v] * d;
                    float* o = destination + v * d;
                    for (int j = 0; j < d; j++)
                        o[j] = c[j] * scale;
                }
            }
            else
            {
                for (int v = 0; v < vectors; v++)
                    Buffer.MemoryCopy(table + rowIndices[v] * d, destination + v * d, d * sizeof(float), d * sizeof(float));
            }
        }
    }

    /// <summary>Bytes of a packed row of <paramref name="vectors"/> indices of <paramref name="bits"/> bits.</summary>
    public static int PackedRowBytes(int vectors, int bits) => (int)(((long)vectors * bits + 7) / 8);

    /// <summary>Packs one row's indices: index i occupies bits [i·bits, (i+1)·bits) of the row's stream, stream bit k being
    /// bit k mod 8 of byte k / 8 (least-significant bit first); the unused high bits of the last byte are zero.</summary>
    /// <exception cref="ArgumentException">An index does not fit in <paramref name="bits"/> bits, or a length is wrong.</exception>
    public static void PackRow(ReadOnlySpan<ushort> rowIndices, int bits, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, MinIndexBits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, MaxIndexBits);
        if (destination.Length != PackedRowBytes(rowIndices.Length, bits))
            throw new ArgumentException($"{rowIndices.Length} indices of {bits} bits need {PackedRowBytes(rowIndices.Length, bits)} bytes, destination has {destination.Length}", nameof(destination));
        destination.Clear();
        ulong buffer = 0;
        int filled = 0, at = 0;
        for (int i = 0; i < rowIndices.Length; i++)
        {
            if (rowIndices[i] >> bits != 0)
                throw new ArgumentException($"index {i} is {rowIndices[i]}, which does not fit in {bits} bits", nameof(rowIndices));
            buffer |= (ulong)rowIndices[i] << filled;
            filled += bits;
            while (filled >= 8)
            {
                destination[at++] = (byte)buffer;
                buffer >>= 8;
                filled -= 8;
            }
        }
        if (filled > 0)
            destination[at] = (byte)buffer;
    }

    /// <summary>Unpacks <c>destination.Length</c> indices packed by <see cref="PackRow"/>; returns false when the unused high
    /// bits of the last byte are not zero.</summary>
    /// <exception cref="ArgumentException">The packed row has the wrong length.</exception>
    public static bool UnpackRow(ReadOnlySpan<byte> packed, int bits, Span<ushort> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, MinIndexBits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, MaxIndexBits);
        if (packed.Length != PackedRowBytes(destination.Length, bits))
            throw new ArgumentException($"{destination.Length} indices of {bits} bits need {PackedRowBytes(destination.Length, bits)} bytes, packed has {packed.Length}", nameof(packed));
        ulong buffer = 0;
        int filled = 0, at = 0;
        uint mask = (1u << bits) - 1;
        for (int i = 0; i < destination.Length; i++)
        {
            while (filled < bits)
            {
                buffer |= (ulong)packed[at++] << filled;
                filled += 8;
            }
            destination[i] = (ushort)(buffer & mask);
            buffer >>= bits;
            filled -= bits;
        }
        return buffer == 0; // every byte was read (the length is exact); what is left is the padding
    }
}

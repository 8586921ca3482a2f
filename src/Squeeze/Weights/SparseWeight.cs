using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// A sparse matrix in compressed sparse rows (CSR), for the outliers of a dense-and-sparse decomposition (SpQR,
/// SqueezeLLM): row r's nonzeros are entries <c>RowOffsets[r] … RowOffsets[r+1] − 1</c>, entry j being
/// <c>W[r, ColumnIndices[j]] = Values[j]</c> (f16); every other element is zero. Stored as int32 row offsets
/// ([rows + 1]), column indices in u16 when the row has at most 65,536 columns (else int32) and f16 values. Within a row
/// the column indices strictly increase. The product visits each row's entries in order in f32, so it gives the same
/// bits at every SIMD level and thread count.
/// </summary>
public sealed unsafe class SparseWeight : LinearWeight
{
    private readonly int[] rowOffsets;    // [rows + 1]
    private readonly int[] columnIndices; // [nonzeros]
    private readonly ushort[] values;     // [nonzeros] f16
    private readonly float[] valuesF32;   // [nonzeros] the f16 values widened, for the product

    /// <summary>The widest row whose column indices are stored in 16 bits.</summary>
    public const int MaxColumnsForU16 = 65536;

    /// <summary>Creates a sparse weight from CSR arrays (taken, not copied).</summary>
    /// <exception cref="ArgumentException">The offsets do not start at 0, decrease or do not end at the number of
    /// entries; a column index is out of range or not strictly increasing within its row; a value is not finite.</exception>
    public SparseWeight(string name, int rows, int columns, int[] rowOffsets, int[] columnIndices, ushort[] values)
        : base(name, rows, columns)
    {
        ArgumentNullException.ThrowIfNull(rowOffsets);
        ArgumentNullException.ThrowIfNull(columnIndices);
        ArgumentNullException.ThrowIfNull(values);
        if (rowOffsets.Length != rows + 1)
            throw new ArgumentException($"{name}: {rows} rows need {rows + 1} row offsets, not {rowOffsets.Length}", nameof(rowOffsets));
        if (columnIndices.Length != values.Length)
            throw new ArgumentException($"{name}: {columnIndices.Length} column indices but {values.Length} values", nameof(values));
        if (rowOffsets[0] != 0)
            throw new ArgumentException($"{name}: the first row offset is {rowOffsets[0]}, not 0", nameof(rowOffsets));
        if (rowOffsets[rows] != values.Length)
            throw new ArgumentException($"{name}: the last row offset is {rowOffsets[rows]}, not the {values.Length} entries", nameof(rowOffsets));
        for (int r = 0; r < rows; r++)
        {
            int start = rowOffsets[r], end = rowOffsets[r + 1];
            if (end < start || end > values.Length)
                throw new ArgumentException($"{name}: row offsets decrease or pass the {values.Length} entries at row {r} ({start} then {end})", nameof(rowOffsets));
            for (int j = start; j < end; j++)
            {
                int c = columnIndices[j];
                if ((uint)c >= (uint)columns)
                    throw new ArgumentException($"{name}: entry {j} (row {r}) has column {c}, outside 0..{columns - 1}", nameof(columnIndices));
                if (j > start && c <= columnIndices[j - 1])
                    throw new ArgumentException($"{name}: row {r}'s column indices do not strictly increase at entry {j} ({columnIndices[j - 1]} then {c})", nameof(columnIndices));
            }
        }
        valuesF32 = new float[values.Length];
        for (int j = 0; j < values.Length; j++)
        {
            valuesF32[j] = HalfConversions.F16ToF32(values[j]);
            if (!float.IsFinite(valuesF32[j]))
                throw new ArgumentException($"{name}: value {j} is not finite (f16 bits 0x{values[j]:X4})", nameof(values));
        }
        this.rowOffsets = rowOffsets;
        this.columnIndices = columnIndices;
        this.values = values;
    }

    /// <summary>Stored nonzero entries.</summary>
    public int NonZeros => values.Length;

    /// <summary>Bytes of one stored column index: 2 when the rows have at most <see cref="MaxColumnsForU16"/> columns, else 4.</summary>
    public int IndexBytes => Columns <= MaxColumnsForU16 ? 2 : 4;

    /// <summary>Row offsets, [rows + 1].</summary>
    public ReadOnlySpan<int> RowOffsets => rowOffsets;

    /// <summary>Column of each entry, [<see cref="NonZeros"/>].</summary>
    public ReadOnlySpan<int> ColumnIndices => columnIndices;

    /// <summary>f16 value of each entry, [<see cref="NonZeros"/>].</summary>
    public ReadOnlySpan<ushort> Values => values;

    /// <inheritdoc />
    public override long StoredBytes => 4L * rowOffsets.Length + (long)(IndexBytes + 2) * values.Length;

    /// <inheritdoc />
    public override string Scheme => $"sparse {NonZeros} nnz ({100.0 * NonZeros / ((long)Rows * Columns):0.###}%)";

    /// <summary>Reference: zeros, then each of the row's entries written at its column.</summary>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        destination.Clear();
        for (int j = rowOffsets[row]; j < rowOffsets[row + 1]; j++)
            destination[columnIndices[j]] = HalfConversions.F16ToF32(values[j]);
    }

    /// <summary><c>y[t, r] = Σ_j Values[j] · x[t, ColumnIndices[j]]</c> over row r's entries in order, summed in f32 from 0.</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(context);
        CheckProduct(x, tokens, y);
        if (tokens == 0)
            return;
        // Splitting pays only for enough work; which thread computes a row never changes its sum.
        long work = ((long)NonZeros + Rows) * tokens;
        int parts = context.Threads == 1 || work < 1 << 16 ? 1 : Math.Min(Rows, 4 * context.Threads);
        fixed (float* px = x)
        fixed (float* py = y)
        {
            var job = new ProductJob { Weight = this, X = px, Y = py, Tokens = tokens };
            context.Run(job, parts);
        }
    }

    private sealed class ProductJob : IParallelJob
    {
        public required SparseWeight Weight;
        public required float* X, Y;
        public required int Tokens;

        public void Run(int part, int parts)
        {
            var w = Weight;
            int rows = w.Rows, columns = w.Columns;
            int r0 = (int)((long)rows * part / parts), r1 = (int)((long)rows * (part + 1) / parts);
            fixed (int* offsets = w.rowOffsets, indices = w.columnIndices)
            fixed (float* vals = w.valuesF32)
            {
                for (int t = 0; t < Tokens; t++)
                {
                    float* xt = X + (long)t * columns;
                    float* yt = Y + (long)t * rows;
                    for (int r = r0; r < r1; r++)
                    {
                        float sum = 0;
                        for (int j = offsets[r], end = offsets[r + 1]; j < end; j++)
                            sum += vals[j] * xt[indices[j]];
                        yt[r] = sum;
                    }
                }
            }
        }
    }
}

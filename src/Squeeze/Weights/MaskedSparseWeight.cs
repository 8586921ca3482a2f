using System.Numerics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// Unstructured sparsity with the same number of kept weights in every row (what per-row pruning produces): a bitmask
/// [rows, ⌈columns / 8⌉ bytes], bit c of a row (byte c / 8, bit c mod 8, LSB first) set where column c is kept, and the
/// kept values in column order as a nested weight [rows, kept per row]. At 25–60 % sparsity a bitmask (1 bit per weight)
/// is far smaller than CSR's column index per kept weight (⌈log₂ columns⌉ ≥ 9 bits each for 288+ columns, so 3.6 to
/// 6.8 bits per weight of the matrix); it loses only below about 1 / log₂(columns) ≈ 10 % kept.
/// </summary>
public sealed class MaskedSparseWeight : SparseRowsWeight
{
    private readonly ReadOnlyMemory<byte> mask; // [rows, MaskRowBytes]

    // For a mask byte b (eight columns): [256, 8] lane c = the rank of column c among b's set bits (which kept value goes
    // there), and [256, 8] lane c = all ones if bit c is set, else 0.
    private static readonly (int[] Expand, int[] Keep) ByteTables = BuildByteTables();

    /// <exception cref="ArgumentException">The shapes disagree, or a row's set bits are not the kept count.</exception>
    public MaskedSparseWeight(string name, int rows, int columns, LinearWeight values, ReadOnlyMemory<byte> mask)
        : base(name, rows, columns, values)
    {
        if (FindProblem(rows, columns, values.Rows, values.Columns, mask.Span) is { } problem)
            throw new ArgumentException($"{name}: {problem}");
        this.mask = mask;
    }

    /// <summary>Bytes of one row of the mask: ⌈columns / 8⌉.</summary>
    public int MaskRowBytes => MaskRowBytesFor(Columns);

    /// <summary>Bytes of one row of the mask of a row of <paramref name="columns"/> weights: ⌈columns / 8⌉.</summary>
    public static int MaskRowBytesFor(int columns) => (columns + 7) / 8;

    /// <summary>The bitmask, [rows, MaskRowBytes].</summary>
    public ReadOnlySpan<byte> Mask => mask.Span;

    /// <inheritdoc/>
    public override long IndexBytes => mask.Length;

    /// <inheritdoc/>
    public override string Scheme => $"{1.0 - (double)KeptPerRow / Columns:0.##} sparse ({Values.Scheme})";

    /// <summary>What is wrong with these parts, or null: the shapes, every row's count of set bits, padding bits zero.</summary>
    public static string? FindProblem(int rows, int columns, int valueRows, int valueColumns, ReadOnlySpan<byte> mask)
    {
        int rowBytes = (columns + 7) / 8;
        if (valueRows != rows || valueColumns > columns)
            return $"kept values are [{valueRows}, {valueColumns}], which do not fit [{rows}, {columns}]";
        if (mask.Length != (long)rows * rowBytes)
            return $"the mask takes {mask.Length} bytes, expected {(long)rows * rowBytes}";
        for (int r = 0; r < rows; r++)
        {
            var row = mask.Slice(r * rowBytes, rowBytes);
            if (columns % 8 != 0 && row[^1] >> (columns % 8) != 0)
                return $"row {r}: mask bits beyond column {columns - 1} are set";
            int set = 0;
            foreach (byte b in row)
                set += BitOperations.PopCount(b);
            if (set != valueColumns)
                return $"row {r}: the mask keeps {set} weights, the values hold {valueColumns}";
        }
        return null;
    }

    /// <summary>Packs a pruning mask ([rows, columns], true = kept) into bits, [rows, ⌈columns / 8⌉].</summary>
    public static byte[] Pack(ReadOnlySpan<bool> kept, int rows, int columns)
    {
        int rowBytes = (columns + 7) / 8;
        var packed = new byte[(long)rows * rowBytes];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                if (kept[r * columns + c])
                    packed[r * rowBytes + c / 8] |= (byte)(1 << (c % 8));
            }
        }
        return packed;
    }

    /// <summary>f16 values with AVX2: the product reads the f16 values and the mask directly.</summary>
    internal override bool HasFusedDot => Values is BlockWeight { Type: GgmlType.F16 } && Avx2.IsSupported;

    /// <summary>f16 values: per mask byte, the next eight f16 values are widened and spread to the set columns by a
    /// permutation from a table (zeros elsewhere), then multiplied with the eight inputs as loaded; summed in eight lanes,
    /// the last values in order.</summary>
    internal override unsafe float FusedDot(int row, float* x)
    {
        var tensor = ((BlockWeight)Values).Tensor;
        int kept = KeptPerRow, rowBytes = MaskRowBytes, columns = Columns;
        ushort* values = (ushort*)(tensor.Data + (long)row * tensor.RowBytes);
        var acc = Vector256<float>.Zero;
        int b = 0, k = 0;
        fixed (byte* bits = mask.Span[(row * rowBytes)..])
        fixed (int* expand = ByteTables.Expand)
        fixed (int* keep = ByteTables.Keep)
        {
            // Eight values are read at k: stop while k + 8 stays in the row and the byte's eight columns exist.
            for (; k + 8 <= kept && 8 * b + 8 <= columns; b++)
            {
                int m = bits[b];
                var halves = Avx2.ConvertToVector256Int32(Sse2.LoadVector128(values + k)).AsUInt32();
                var spread = Avx2.PermuteVar8x32(Fp16.ToSingle(halves), Avx.LoadVector256(expand + 8 * m));
                acc += (spread.AsInt32() & Avx.LoadVector256(keep + 8 * m)).AsSingle() * Avx.LoadVector256(x + 8 * b);
                k += BitOperations.PopCount((uint)m);
            }
            float sum = Vector256.Sum(acc);
            for (; b < rowBytes; b++)
            {
                uint m = bits[b];
                while (m != 0)
                {
                    sum += Fp16.ToSingle(values[k++]) * x[8 * b + BitOperations.TrailingZeroCount(m)];
                    m &= m - 1;
                }
            }
            return sum;
        }
    }

    private static (int[] Expand, int[] Keep) BuildByteTables()
    {
        var expand = new int[256 * 8];
        var keep = new int[256 * 8];
        for (int b = 0; b < 256; b++)
        {
            for (int c = 0; c < 8; c++)
            {
                expand[8 * b + c] = BitOperations.PopCount((uint)(b & ((1 << c) - 1)));
                keep[8 * b + c] = (b >> c & 1) != 0 ? -1 : 0;
            }
        }
        return (expand, keep);
    }

    /// <inheritdoc/>
    public override void KeptColumns(int row, Span<int> destination)
    {
        int rowBytes = MaskRowBytes, k = 0;
        var bits = mask.Span.Slice(row * rowBytes, rowBytes);
        for (int b = 0; b < bits.Length; b++)
        {
            uint value = bits[b];
            while (value != 0)
            {
                destination[k++] = b * 8 + BitOperations.TrailingZeroCount(value);
                value &= value - 1;
            }
        }
    }
}

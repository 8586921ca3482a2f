using System.Buffers.Binary;
using System.Runtime.Intrinsics.X86;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// Non-uniform quantization with a codebook per group (SqueezeLLM, NUPES): each row of W [rows, cols] is cut into
/// groups of <see cref="Group"/> consecutive values (group = cols: one codebook per row); each group has a table of
/// 2^<see cref="Bits"/> f16 values and each value a <see cref="Bits"/>-bit code indexing it:
/// <c>W[r, c] = table[r, c / group, code(r, c)]</c>. Codes are bit-packed least-significant bit first, each row from a
/// byte boundary, exactly as the uniform scheme packs them (docs/FORMAT.md §5, <see cref="UniformCodec.Pack"/>).
/// Every width from 2 to 8 bits is supported. The product decodes rows through the table (eight codes per load of a
/// packed word) and then multiplies them in f32 as <see cref="DecodedProduct"/> does, so it gives the same bits as the
/// reference product; a few tokens of narrow codes run the fused product instead (<see cref="Multiply"/>).
/// </summary>
public sealed unsafe partial class CodebookWeight : LinearWeight
{
    private readonly ReadOnlyMemory<byte> codes;   // [rows, RowBytes]
    private readonly ReadOnlyMemory<ushort> table; // [rows, cols / group, 2^bits] f16

    /// <summary>Creates a codebook weight from packed codes and tables (arrays, or a native file's companions over its
    /// mapping: held, not copied).</summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="rows">Output features.</param>
    /// <param name="columns">Input features; a multiple of <paramref name="group"/>.</param>
    /// <param name="bits">Bits per code, 2..8.</param>
    /// <param name="group">Values per codebook; divides <paramref name="columns"/>.</param>
    /// <param name="packedCodes">[rows, ceil(columns·bits/8)] codes packed LSB-first.</param>
    /// <param name="table">[rows, columns/group, 2^bits] f16 table values, all finite.</param>
    /// <exception cref="ArgumentException">A size disagrees or a table value is not finite.</exception>
    public CodebookWeight(string name, int rows, int columns, int bits, int group, ReadOnlyMemory<byte> packedCodes, ReadOnlyMemory<ushort> table)
        : base(name, rows, columns)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, MinBits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, MaxBits);
        if (group < 1 || columns % group != 0)
            throw new ArgumentException($"{name}: group size {group} does not divide the row length {columns}", nameof(group));
        Bits = bits;
        Group = group;
        RowBytes = (int)(((long)columns * bits + 7) / 8);
        long expectedCodes = (long)rows * RowBytes;
        if (packedCodes.Length != expectedCodes)
            throw new ArgumentException($"{name}: {rows} rows of {columns} {bits}-bit codes take {expectedCodes} bytes, not {packedCodes.Length}", nameof(packedCodes));
        long expectedTable = (long)rows * GroupsPerRow * Levels;
        if (table.Length != expectedTable)
            throw new ArgumentException($"{name}: {rows} rows of {GroupsPerRow} codebooks of {Levels} values take {expectedTable} entries, not {table.Length}", nameof(table));
        var entries = table.Span;
        for (int i = 0; i < entries.Length; i++)
        {
            if (!float.IsFinite(HalfConversions.F16ToF32(entries[i])))
                throw new ArgumentException($"{name}: codebook entry {i % Levels} of row {i / Levels / GroupsPerRow}, group {i / Levels % GroupsPerRow} is not finite (f16 bits 0x{entries[i]:X4})", nameof(table));
        }
        codes = packedCodes;
        this.table = table;
    }

    /// <summary>Narrowest code supported.</summary>
    public const int MinBits = 2;

    /// <summary>Widest code supported.</summary>
    public const int MaxBits = 8;

    /// <summary>Bits per code, 2..8.</summary>
    public int Bits { get; }

    /// <summary>Values sharing one codebook (<see cref="LinearWeight.Columns"/>: one per row).</summary>
    public int Group { get; }

    /// <summary>Codebooks per row.</summary>
    public int GroupsPerRow => Columns / Group;

    /// <summary>Entries of one codebook, 2^<see cref="Bits"/>.</summary>
    public int Levels => 1 << Bits;

    /// <summary>Bytes of one packed row of codes.</summary>
    public int RowBytes { get; }

    /// <summary>The packed codes, [rows, <see cref="RowBytes"/>].</summary>
    public ReadOnlySpan<byte> PackedCodes => codes.Span;

    /// <summary><see cref="PackedCodes"/> as memory the native writer references instead of copying.</summary>
    internal ReadOnlyMemory<byte> PackedCodesMemory => codes;

    /// <summary>The f16 codebooks, [rows, <see cref="GroupsPerRow"/>, <see cref="Levels"/>].</summary>
    public ReadOnlySpan<ushort> Table => table.Span;

    /// <inheritdoc />
    public override long StoredBytes => StoredBytesFor(Rows, Columns, Bits, Group);

    /// <summary>Bytes a [<paramref name="rows"/>, <paramref name="columns"/>] weight takes with <paramref name="bits"/>-bit
    /// codes and a codebook per group of <paramref name="group"/>: the packed codes and the f16 tables.</summary>
    public static long StoredBytesFor(int rows, int columns, int bits, int group)
        => (long)rows * (((long)columns * bits + 7) / 8) + 2L * rows * (columns / group) * (1L << bits);

    /// <inheritdoc />
    public override string Scheme => $"codebook b{Bits} g{Group}";

    /// <summary>For fewer than <see cref="CodebookProduct.MaxTokens"/> tokens outside the deterministic mode, codes of at
    /// most 4 bits in groups of whole runs of 16 on an AVX-512 VBMI machine: the fused product (<see cref="CodebookProduct"/>:
    /// each code looked up straight into the dot product, the same values summed in another order); otherwise the decoded
    /// product.</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(context);
        CheckProduct(x, tokens, y);
        if (CodebookProduct.Runs(this, tokens, context))
            CodebookProduct.Multiply(this, x, tokens, context, y);
        else
            DecodedProduct.Multiply(this, x, tokens, context, y);
    }

    /// <summary>Reference: unpacks the row's codes (<see cref="UniformCodec.Unpack"/>) and looks each up in its group's table.</summary>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        var packed = codes.Span.Slice(row * RowBytes, RowBytes);
        var tables = table.Span;
        Span<byte> rowCodes = Columns <= 4096 ? stackalloc byte[Columns] : new byte[Columns];
        UniformCodec.Unpack(packed, Bits, rowCodes);
        int levels = Levels;
        for (int c = 0; c < Columns; c++)
        {
            long entry = ((long)row * GroupsPerRow + c / Group) * levels + rowCodes[c];
            destination[c] = HalfConversions.F16ToF32(tables[(int)entry]);
        }
    }

    // Floats of table scratch at least: the vector path loads two 8-float halves whatever the width.
    private const int LevelsScratch = 16;

    internal override int DecodeScratchFloats => Math.Max(Levels, LevelsScratch);

    /// <summary>Decodes row <paramref name="row"/> into <paramref name="destination"/> ([Columns]) as <see cref="DecodeRow"/>
    /// does, eight codes per 64-bit load (2 to 4 bits with AVX2: eight table lookups per permute); <paramref name="levels"/>
    /// ([max(Levels, 16)]) is scratch for one group's table in f32.</summary>
    internal override void DecodeRowFast(int row, float* destination, float* levels)
    {
        int bits = Bits, mask = Levels - 1, group = Group, groups = GroupsPerRow;
        fixed (byte* allCodes = codes.Span)
        fixed (ushort* allTable = table.Span)
        {
            byte* packed = allCodes + (long)row * RowBytes;
            // Whole 8-code steps may load 8 bytes from their start; steps past this bound use the bytewise path.
            long safeBytes = codes.Length - (long)row * RowBytes - 8;
            for (int g = 0; g < groups; g++)
            {
                ushort* entries = allTable + ((long)row * groups + g) * Levels;
                for (int k = 0; k <= mask; k++)
                    levels[k] = HalfConversions.F16ToF32(entries[k]);
                int c = g * group, end = c + group;
                for (; c < end && (c & 7) != 0; c++)
                    destination[c] = levels[Code(packed, c, bits, mask)];
                if (bits <= 4 && Avx2.IsSupported)
                    c = DecodeAvx2(packed, c, end, bits, safeBytes, levels, destination);
                for (; c + 8 <= end && (long)(c >> 3) * bits <= safeBytes; c += 8)
                {
                    ulong word = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(packed + (c >> 3) * bits, 8));
                    float* d = destination + c;
                    d[0] = levels[(int)word & mask];
                    d[1] = levels[(int)(word >> bits) & mask];
                    d[2] = levels[(int)(word >> (2 * bits)) & mask];
                    d[3] = levels[(int)(word >> (3 * bits)) & mask];
                    d[4] = levels[(int)(word >> (4 * bits)) & mask];
                    d[5] = levels[(int)(word >> (5 * bits)) & mask];
                    d[6] = levels[(int)(word >> (6 * bits)) & mask];
                    d[7] = levels[(int)(word >> (7 * bits)) & mask];
                }
                for (; c < end; c++)
                    destination[c] = levels[Code(packed, c, bits, mask)];
            }
        }
    }

    // Code i of a packed row: bits [i·bits, (i+1)·bits) of the LSB-first stream, reading a second byte only when it spans one.
    private static int Code(byte* packed, int i, int bits, int mask)
    {
        long bit = (long)i * bits;
        int at = (int)(bit >> 3), shift = (int)(bit & 7);
        int v = packed[at];
        if (shift + bits > 8)
            v |= packed[at + 1] << 8;
        return (v >> shift) & mask;
    }
}

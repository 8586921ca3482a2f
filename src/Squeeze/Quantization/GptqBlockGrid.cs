using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Squeeze.Tensors;
using Squeeze.Tensors.Blocks;

namespace Squeeze.Quantization;

/// <summary>
/// The values a block format can represent once a block's shared scales are fixed: GPTQ fits a block's scales when
/// it reaches the block's first column, then rounds each column to this grid. Codes run 0 … <see cref="Levels"/> − 1
/// and, at a fixed position, <see cref="Value"/> is monotone in the code (so nearest-value search is a bisection).
/// </summary>
public interface IBlockGrid
{
    /// <summary>Values per block (32 for legacy types and IQ4_NL, 256 for k-quants).</summary>
    int BlockSize { get; }

    /// <summary>Bytes of one packed block.</summary>
    int BlockBytes { get; }

    /// <summary>Number of codes per value.</summary>
    int Levels { get; }

    /// <summary>Fits the block's shared scales to <paramref name="weights"/> ([BlockSize]) weighted by
    /// <paramref name="importance"/> ([BlockSize], or empty) and writes them (with provisional codes) to <paramref name="block"/>.</summary>
    void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<byte> block);

    /// <summary>The value that code <paramref name="code"/> at position <paramref name="index"/> decodes to under the
    /// block's scales, bit-identical to <see cref="Dequantize.Row"/>.</summary>
    float Value(ReadOnlySpan<byte> block, int index, int code);

    /// <summary>Stores <paramref name="code"/> at position <paramref name="index"/> of the packed block.</summary>
    void SetCode(Span<byte> block, int index, int code);

    /// <summary>Runs of this many consecutive positions (dividing <see cref="BlockSize"/>) decode every code alike, sharing
    /// their scales, so one table of values serves them all (<see cref="BlockGrid.Values"/>); 0 when not known.</summary>
    int ValueGroup => 0;
}

/// <summary>
/// A grid whose every value is the block's one scale times a fixed level of its code, <c>x = d · Level(c)</c>, with d
/// stored as f16 first in the block (Q8_0, Q4_0, Q5_0, IQ4_NL). With the codes fixed, the layer's output error is a
/// quadratic in the scales of a row, so they can be re-fitted exactly (<see cref="Gptq"/>'s refinement does).
/// </summary>
public interface IScaledGrid : IBlockGrid
{
    /// <summary>The level of <paramref name="code"/>: the value it decodes to under scale 1.</summary>
    double Level(int code);

    /// <summary>Stores <paramref name="scale"/> (rounded to f16) as the block's scale, keeping its codes.</summary>
    void SetScale(Span<byte> block, float scale);
}

/// <summary>Helpers over any <see cref="IBlockGrid"/>.</summary>
public static class BlockGrid
{
    /// <summary>The code whose value at <paramref name="index"/> is nearest to <paramref name="value"/> (ties: lower code);
    /// <paramref name="gridValue"/> receives that value.</summary>
    public static int Round(IBlockGrid grid, ReadOnlySpan<byte> block, int index, double value, out float gridValue)
    {
        ArgumentNullException.ThrowIfNull(grid);
        int last = grid.Levels - 1;
        float first = grid.Value(block, index, 0), top = grid.Value(block, index, last);
        bool ascending = top >= first;
        // Smallest code c whose value is at or past the target in the grid's direction.
        int lo = 0, hi = last;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            float v = grid.Value(block, index, mid);
            if (ascending ? v >= value : v <= value)
                hi = mid;
            else
                lo = mid + 1;
        }
        int best = lo;
        float bestValue = grid.Value(block, index, lo);
        if (lo > 0)
        {
            float below = grid.Value(block, index, lo - 1);
            if (Math.Abs(below - value) <= Math.Abs(bestValue - value))
            {
                best = lo - 1;
                bestValue = below;
            }
        }
        gridValue = bestValue;
        return best;
    }

    /// <summary>The values of every code at position <paramref name="index"/>: <c>values[c] = grid.Value(block, index, c)</c>
    /// ([Levels]).</summary>
    public static void Values(IBlockGrid grid, ReadOnlySpan<byte> block, int index, Span<float> values)
    {
        ArgumentNullException.ThrowIfNull(grid);
        for (int code = 0; code < grid.Levels; code++)
            values[code] = grid.Value(block, index, code);
    }

    /// <summary>As <see cref="Round(IBlockGrid, ReadOnlySpan{byte}, int, double, out float)"/> over a position's values
    /// from <see cref="Values"/> (the same bisection, so the same code).</summary>
    public static int Round(ReadOnlySpan<float> values, double value, out float gridValue)
    {
        int last = values.Length - 1;
        bool ascending = values[last] >= values[0];
        int lo = 0, hi = last;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            float v = values[mid];
            if (ascending ? v >= value : v <= value)
                hi = mid;
            else
                lo = mid + 1;
        }
        int best = lo;
        float bestValue = values[lo];
        if (lo > 0)
        {
            float below = values[lo - 1];
            if (Math.Abs(below - value) <= Math.Abs(bestValue - value))
            {
                best = lo - 1;
                bestValue = below;
            }
        }
        gridValue = bestValue;
        return best;
    }

    /// <summary>The grid for a GGUF block type: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.</summary>
    /// <exception cref="NotSupportedException">The type has no grid yet.</exception>
    public static IBlockGrid For(GgmlType type) => type switch
    {
        GgmlType.Q8_0 => new Q8_0Grid(),
        GgmlType.Q4_0 => new Q4_0Grid(),
        GgmlType.Q4_1 => new Q4_1Grid(),
        GgmlType.Q5_0 => new Q5_0Grid(),
        GgmlType.Q5_1 => new Q5_1Grid(),
        GgmlType.IQ4_NL => new IQ4_NLGrid(),
        GgmlType.Q2_K => new Q2_KGrid(),
        GgmlType.Q3_K => new Q3_KGrid(),
        GgmlType.Q4_K => new Q4_KGrid(),
        GgmlType.Q5_K => new Q5_KGrid(),
        GgmlType.Q6_K => new Q6_KGrid(),
        _ => throw new NotSupportedException($"GPTQ has no block grid for {type}"),
    };

    internal static void SetHalf(Span<byte> block, int offset, float value) =>
        BinaryPrimitives.WriteUInt16LittleEndian(block[offset..], HalfConversions.F32ToF16(value));

    internal static float Half(ReadOnlySpan<byte> block, int offset) => HalfConversions.F16ToF32(BinaryPrimitives.ReadUInt16LittleEndian(block[offset..]));

    // Nibble layout of Q4_0 / Q4_1 / IQ4_NL / the low bits of Q5_x: value j in the low nibble of byte j (j < 16), value j + 16 in the high nibble.
    internal static int LegacyNibble(ReadOnlySpan<byte> qs, int index) => index < 16 ? qs[index] & 0x0F : qs[index - 16] >> 4;

    internal static void SetLegacyNibble(Span<byte> qs, int index, int code)
    {
        if (index < 16)
            qs[index] = (byte)((qs[index] & 0xF0) | (code & 0x0F));
        else
            qs[index - 16] = (byte)((qs[index - 16] & 0x0F) | ((code & 0x0F) << 4));
    }
}

/// <summary>A GGUF block type's grid; <see cref="Fit"/> calls the reference quantizer (<see cref="Quantize.Row"/>) so
/// the scale search lives in one place, then GPTQ overwrites the codes.</summary>
public abstract class FormatGrid : IBlockGrid
{
    /// <summary>A grid for <paramref name="type"/> with codes 0 … <paramref name="levels"/> − 1.</summary>
    protected FormatGrid(GgmlType type, int levels)
    {
        Type = type;
        Levels = levels;
    }

    /// <summary>The GGUF type the packed blocks are.</summary>
    public GgmlType Type { get; }

    /// <inheritdoc />
    public int BlockSize => GgmlTypes.BlockSize(Type);

    /// <inheritdoc />
    public int BlockBytes => GgmlTypes.BlockBytes(Type);

    /// <inheritdoc />
    public int Levels { get; }

    /// <inheritdoc />
    // Q2_K, Q3_K and Q6_K scale 16 values, Q4_K and Q5_K 32, the legacy types a whole block.
    public int ValueGroup => Type is GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q6_K ? 16 : Type is GgmlType.Q4_K or GgmlType.Q5_K ? 32 : BlockSize;

    /// <inheritdoc />
    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<byte> block)
        => Quantize.Row(Type, weights, importance, block[..BlockBytes]);

    /// <inheritdoc />
    public abstract float Value(ReadOnlySpan<byte> block, int index, int code);

    /// <inheritdoc />
    public abstract void SetCode(Span<byte> block, int index, int code);
}

/// <summary>Q8_0: <c>x = d · (c − 128)</c>.</summary>
public sealed class Q8_0Grid() : FormatGrid(GgmlType.Q8_0, 256), IScaledGrid
{
    /// <inheritdoc />
    public double Level(int code) => code - 128;

    /// <inheritdoc />
    public void SetScale(Span<byte> block, float scale) => BlockGrid.SetHalf(block, 0, scale);

    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code) => (code - 128) * BlockGrid.Half(block, 0);

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code) => block[2 + index] = (byte)(sbyte)(code - 128);
}

/// <summary>Q4_0: <c>x = (c − 8) · d</c>.</summary>
public sealed class Q4_0Grid() : FormatGrid(GgmlType.Q4_0, 16), IScaledGrid
{
    /// <inheritdoc />
    public double Level(int code) => code - 8;

    /// <inheritdoc />
    public void SetScale(Span<byte> block, float scale) => BlockGrid.SetHalf(block, 0, scale);

    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code) => (code - 8) * BlockGrid.Half(block, 0);

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code) => BlockGrid.SetLegacyNibble(block[2..], index, code);
}

/// <summary>Q4_1: <c>x = c · d + m</c>.</summary>
public sealed class Q4_1Grid() : FormatGrid(GgmlType.Q4_1, 16)
{
    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code) => code * BlockGrid.Half(block, 0) + BlockGrid.Half(block, 2);

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code) => BlockGrid.SetLegacyNibble(block[4..], index, code);
}

/// <summary>Q5_0: <c>x = (c − 16) · d</c>; bit 4 of value j is bit j of the little-endian <c>qh</c>.</summary>
public sealed class Q5_0Grid() : FormatGrid(GgmlType.Q5_0, 32), IScaledGrid
{
    /// <inheritdoc />
    public double Level(int code) => code - 16;

    /// <inheritdoc />
    public void SetScale(Span<byte> block, float scale) => BlockGrid.SetHalf(block, 0, scale);

    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code) => (code - 16) * BlockGrid.Half(block, 0);

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code) => Q5_1Grid.SetCode5(block, 2, 6, index, code);
}

/// <summary>Q5_1: <c>x = c · d + m</c>.</summary>
public sealed class Q5_1Grid() : FormatGrid(GgmlType.Q5_1, 32)
{
    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code) => code * BlockGrid.Half(block, 0) + BlockGrid.Half(block, 2);

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code) => SetCode5(block, 4, 8, index, code);

    internal static void SetCode5(Span<byte> block, int qhOffset, int qsOffset, int index, int code)
    {
        BlockGrid.SetLegacyNibble(block[qsOffset..], index, code);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[qhOffset..]);
        qh = (qh & ~(1u << index)) | ((uint)((code >> 4) & 1) << index);
        BinaryPrimitives.WriteUInt32LittleEndian(block[qhOffset..], qh);
    }
}

/// <summary>IQ4_NL: <c>x = d · kvalues[c]</c> with ggml's non-linear, ascending code book.</summary>
public sealed class IQ4_NLGrid() : FormatGrid(GgmlType.IQ4_NL, 16), IScaledGrid
{
    /// <inheritdoc />
    public double Level(int code) => Dequantize.IQ4NLValues[code];

    /// <inheritdoc />
    public void SetScale(Span<byte> block, float scale) => BlockGrid.SetHalf(block, 0, scale);

    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code) => BlockGrid.Half(block, 0) * Dequantize.IQ4NLValues[code];

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code) => BlockGrid.SetLegacyNibble(block[2..], index, code);
}

/// <summary>Q2_K: per 16 values <c>x = (d · (sc &amp; 15)) · c − dmin · (sc &gt;&gt; 4)</c>, 2-bit codes; per 128 values 32 bytes hold four 2-bit planes.</summary>
public sealed class Q2_KGrid() : FormatGrid(GgmlType.Q2_K, 4)
{
    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code)
    {
        int sc = block[index / 16];
        float dl = BlockGrid.Half(block, 80) * (sc & 0xF), ml = BlockGrid.Half(block, 82) * (sc >> 4);
        return dl * code - ml;
    }

    /// <inheritdoc />
    // Value e: plane (e % 128) / 32 of byte 16 + 32 · (e / 128) + e % 32.
    public override void SetCode(Span<byte> block, int index, int code)
    {
        int at = 16 + 32 * (index / 128) + index % 32, shift = 2 * (index % 128 / 32);
        block[at] = (byte)((block[at] & ~(3 << shift)) | ((code & 3) << shift));
    }
}

/// <summary>Q3_K: per 16 values <c>x = (d · (sc − 32)) · (c − 4)</c>, 6-bit sc; codes 0..7 as 2 low bits (as Q2_K) and a high bit in <c>hmask</c>.</summary>
public sealed class Q3_KGrid() : FormatGrid(GgmlType.Q3_K, 8)
{
    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code)
    {
        Span<sbyte> scales = stackalloc sbyte[16];
        Dequantize.UnpackQ3Scales(MemoryMarshal.Read<Bytes12>(block.Slice(96, 12)), scales);
        float dl = BlockGrid.Half(block, 108) * (scales[index / 16] - 32);
        return dl * (code - 4);
    }

    /// <inheritdoc />
    // Value e: low bits as Q2_K (at byte 32 + …); high bit (e / 128) · 4 + (e % 128) / 32 of hmask[e % 32].
    public override void SetCode(Span<byte> block, int index, int code)
    {
        int plane = index % 128 / 32, at = 32 + 32 * (index / 128) + index % 32, shift = 2 * plane;
        block[at] = (byte)((block[at] & ~(3 << shift)) | ((code & 3) << shift));
        int bit = 4 * (index / 128) + plane;
        ref byte h = ref block[index % 32];
        h = (byte)((h & ~(1 << bit)) | (((code >> 2) & 1) << bit));
    }
}

/// <summary>Q4_K: per 32 values <c>x = (d · sc) · c − (dmin · m)</c>, 6-bit sc and m; 64 values share 32 bytes (low, then high nibbles).</summary>
public sealed class Q4_KGrid() : FormatGrid(GgmlType.Q4_K, 16)
{
    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code)
    {
        var scales = MemoryMarshal.Read<Bytes12>(block.Slice(4, 12));
        Dequantize.ScaleMinK4(index / 32, scales, out int sc, out int m);
        float d1 = BlockGrid.Half(block, 0) * sc, m1 = BlockGrid.Half(block, 2) * m;
        return d1 * code - m1;
    }

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code) => SetNibbleK(block[16..], index, code);

    // Value e: chunk e / 64 uses bytes [32·chunk, 32·chunk + 32): the first 32 values in the low nibbles, the next 32 in the high.
    internal static void SetNibbleK(Span<byte> qs, int index, int code)
    {
        int chunk = index / 64, w = index % 64;
        int at = 32 * chunk + w % 32;
        qs[at] = w < 32 ? (byte)((qs[at] & 0xF0) | (code & 0x0F)) : (byte)((qs[at] & 0x0F) | ((code & 0x0F) << 4));
    }
}

/// <summary>Q5_K: as Q4_K with codes 0..31; bit 4 of value e is bit (e / 32) of <c>qh[e % 32]</c>.</summary>
public sealed class Q5_KGrid() : FormatGrid(GgmlType.Q5_K, 32)
{
    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code)
    {
        var scales = MemoryMarshal.Read<Bytes12>(block.Slice(4, 12));
        Dequantize.ScaleMinK4(index / 32, scales, out int sc, out int m);
        float d1 = BlockGrid.Half(block, 0) * sc, m1 = BlockGrid.Half(block, 2) * m;
        return d1 * code - m1;
    }

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code)
    {
        Q4_KGrid.SetNibbleK(block[48..], index, code);
        int bit = index / 32, l = index % 32;
        ref byte qh = ref block[16 + l];
        qh = (byte)((qh & ~(1 << bit)) | (((code >> 4) & 1) << bit));
    }
}

/// <summary>Q6_K: per 16 values <c>x = (d · sc) · (c − 32)</c>, 8-bit signed sc, 6-bit codes split into low nibbles and 2 high bits.</summary>
public sealed class Q6_KGrid() : FormatGrid(GgmlType.Q6_K, 64)
{
    /// <inheritdoc />
    public override float Value(ReadOnlySpan<byte> block, int index, int code)
    {
        float d = BlockGrid.Half(block, 208);
        int n = index / 128, quarter = index % 128 / 32, l = index % 32;
        sbyte sc = (sbyte)block[192 + 8 * n + l / 16 + 2 * quarter];
        return d * sc * (code - 32);
    }

    /// <inheritdoc />
    public override void SetCode(Span<byte> block, int index, int code)
    {
        int n = index / 128, quarter = index % 128 / 32, l = index % 32;
        int ql = 64 * n + l + (quarter & 1) * 32;
        block[ql] = quarter < 2 ? (byte)((block[ql] & 0xF0) | (code & 0x0F)) : (byte)((block[ql] & 0x0F) | ((code & 0x0F) << 4));
        int qh = 128 + 32 * n + l, shift = 2 * quarter;
        block[qh] = (byte)((block[qh] & ~(3 << shift)) | (((code >> 4) & 3) << shift));
    }
}

/// <summary>
/// A fixed uniform grid with no fitted scales: <c>x = step · (c − Levels / 2)</c>, one byte per code. For tests and
/// comparisons of the error-feedback mathematics alone; its packed blocks are codes, not a GGUF type.
/// </summary>
public sealed class UniformGrid : IBlockGrid
{
    /// <summary>Values step · (c − levels / 2) for c in 0 … levels − 1, in blocks of <paramref name="blockSize"/>.</summary>
    public UniformGrid(float step, int levels, int blockSize)
    {
        if (!(step > 0) || !float.IsFinite(step))
            throw new ArgumentOutOfRangeException(nameof(step), step, "the step must be positive and finite");
        ArgumentOutOfRangeException.ThrowIfLessThan(levels, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(levels, 256);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        Step = step;
        Levels = levels;
        BlockSize = blockSize;
    }

    /// <summary>Distance between neighbouring values.</summary>
    public float Step { get; }

    /// <inheritdoc />
    public int Levels { get; }

    /// <inheritdoc />
    public int BlockSize { get; }

    /// <inheritdoc />
    public int BlockBytes => BlockSize;

    /// <inheritdoc />
    public int ValueGroup => BlockSize;

    /// <summary>Nothing to fit: the grid is fixed.</summary>
    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<byte> block)
    {
    }

    /// <inheritdoc />
    public float Value(ReadOnlySpan<byte> block, int index, int code) => Step * (code - Levels / 2);

    /// <inheritdoc />
    public void SetCode(Span<byte> block, int index, int code) => block[index] = (byte)code;
}

using System.Buffers.Binary;
using Squeeze.Formats.Native;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Quantization;

/// <summary>
/// The native "uniform" scheme (<see cref="UniformScheme"/>) as a GPTQ grid: a block is one group, laid out as
/// [f16 scale, f16 min (0 when symmetric), one code byte per value]; <see cref="Fit"/> is
/// <see cref="UniformCodec.EncodeRow"/> on the group (with the importance-weighted range search when importance is
/// given) and <see cref="Value"/> decodes exactly as <see cref="UniformCodec.DecodeRow"/> does.
/// <see cref="ToWeight"/> repacks GPTQ's blocks into a <see cref="UniformWeight"/>.
/// </summary>
public sealed class UniformSchemeGrid(UniformScheme scheme) : IBlockGrid
{
    private const int HeaderBytes = 4;

    /// <summary>Bits, group and symmetry.</summary>
    public UniformScheme Scheme { get; } = scheme ?? throw new ArgumentNullException(nameof(scheme));

    /// <inheritdoc />
    public int BlockSize => Scheme.Group;

    /// <inheritdoc />
    public int BlockBytes => HeaderBytes + Scheme.Group;

    /// <inheritdoc />
    public int Levels => 1 << Scheme.Bits;

    /// <inheritdoc />
    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<byte> block)
    {
        Span<ushort> scale = stackalloc ushort[1];
        Span<ushort> min = stackalloc ushort[1];
        UniformCodec.EncodeRow(weights[..BlockSize], importance, Scheme, !importance.IsEmpty, block.Slice(HeaderBytes, BlockSize), scale, Scheme.Symmetric ? default : min);
        BinaryPrimitives.WriteUInt16LittleEndian(block, scale[0]);
        BinaryPrimitives.WriteUInt16LittleEndian(block[2..], Scheme.Symmetric ? (ushort)0 : min[0]);
    }

    /// <inheritdoc />
    public float Value(ReadOnlySpan<byte> block, int index, int code)
    {
        float scale = HalfConversions.F16ToF32(BinaryPrimitives.ReadUInt16LittleEndian(block));
        return Scheme.Symmetric
            ? scale * (code - (1 << (Scheme.Bits - 1)))
            : scale * code + HalfConversions.F16ToF32(BinaryPrimitives.ReadUInt16LittleEndian(block[2..]));
    }

    /// <inheritdoc />
    public void SetCode(Span<byte> block, int index, int code) => block[HeaderBytes + index] = (byte)code;

    /// <summary>The weight stored by GPTQ's (or <see cref="Gptq.RoundToNearest"/>'s) <paramref name="data"/>:
    /// [rows, columns / group] blocks of <see cref="BlockBytes"/>.</summary>
    public UniformWeight ToWeight(string name, byte[] data, int rows, int columns)
    {
        ArgumentNullException.ThrowIfNull(data);
        Scheme.CheckColumns(columns);
        int groups = columns / Scheme.Group, rowBytes = (int)Scheme.RowBytes(columns);
        if (data.LongLength != (long)rows * groups * BlockBytes)
            throw new ArgumentException($"{data.LongLength} bytes are not {rows} x {groups} blocks of {BlockBytes}", nameof(data));
        var codes = new byte[(long)rows * rowBytes];
        var scales = new ushort[(long)rows * groups];
        var mins = new ushort[Scheme.Symmetric ? 0 : scales.Length];
        var rowCodes = new byte[columns];
        for (int r = 0; r < rows; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                var block = data.AsSpan((int)(((long)r * groups + g) * BlockBytes), BlockBytes);
                scales[r * groups + g] = BinaryPrimitives.ReadUInt16LittleEndian(block);
                if (!Scheme.Symmetric)
                    mins[r * groups + g] = BinaryPrimitives.ReadUInt16LittleEndian(block[2..]);
                block.Slice(HeaderBytes, Scheme.Group).CopyTo(rowCodes.AsSpan(g * Scheme.Group));
            }
            UniformCodec.Pack(rowCodes, Scheme.Bits, codes.AsSpan(r * rowBytes, rowBytes));
        }
        return new UniformWeight(name, rows, columns, Scheme, codes, scales, mins);
    }
}

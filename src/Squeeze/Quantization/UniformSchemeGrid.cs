using System.Buffers.Binary;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Quantization;

/// <summary>
/// The native format's uniform scheme (any width 2..8, any group) as a GPTQ grid. One block is one group, laid out for
/// GPTQ's scratch as [f16 scale][f16 min][one code per byte]; <see cref="ToWeight"/> packs GPTQ's blocks into a
/// <see cref="UniformWeight"/>. Scales are fitted by <see cref="UniformCodec.EncodeRow"/> (with the importance-weighted
/// range search when GPTQ passes importance), values decode bit for bit as <see cref="UniformCodec.DecodeRow"/>.
/// </summary>
public sealed class UniformSchemeGrid : IBlockGrid
{
    private readonly UniformScheme scheme;
    private readonly int zero;

    /// <summary>The grid of <paramref name="scheme"/>'s codes: one block per group of the scheme.</summary>
    public UniformSchemeGrid(UniformScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        this.scheme = scheme;
        zero = 1 << (scheme.Bits - 1);
    }

    /// <summary>Bits, group and symmetry.</summary>
    public UniformScheme Scheme => scheme;

    /// <inheritdoc />
    public int BlockSize => scheme.Group;

    /// <inheritdoc />
    public int BlockBytes => 4 + scheme.Group;

    /// <inheritdoc />
    public int Levels => 1 << scheme.Bits;

    /// <inheritdoc />
    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<byte> block)
    {
        Span<ushort> scale = stackalloc ushort[1];
        Span<ushort> min = stackalloc ushort[1];
        UniformCodec.EncodeRow(weights, importance, scheme, !importance.IsEmpty, block.Slice(4, scheme.Group), scale, scheme.Symmetric ? default : min);
        BinaryPrimitives.WriteUInt16LittleEndian(block, scale[0]);
        BinaryPrimitives.WriteUInt16LittleEndian(block[2..], scheme.Symmetric ? (ushort)0 : min[0]);
    }

    /// <inheritdoc />
    public float Value(ReadOnlySpan<byte> block, int index, int code)
        => UniformCodec.DecodeValue(code, HalfConversions.F16ToF32(BinaryPrimitives.ReadUInt16LittleEndian(block)),
            HalfConversions.F16ToF32(BinaryPrimitives.ReadUInt16LittleEndian(block[2..])), zero, scheme.Symmetric);

    /// <inheritdoc />
    public void SetCode(Span<byte> block, int index, int code) => block[4 + index] = (byte)code;

    /// <summary>The weight GPTQ's packed blocks (<paramref name="data"/>, rows × columns / group blocks) describe.</summary>
    public UniformWeight ToWeight(string name, ReadOnlySpan<byte> data, int rows, int columns)
    {
        scheme.CheckColumns(columns);
        int groups = columns / scheme.Group, rowBytes = (int)scheme.RowBytes(columns);
        if (data.Length != (long)rows * groups * BlockBytes)
            throw new ArgumentException($"{data.Length} bytes are not {rows} rows of {groups} blocks of {BlockBytes}", nameof(data));
        var codes = new byte[(long)rows * rowBytes];
        var scales = new ushort[rows * groups];
        var mins = scheme.Symmetric ? null : new ushort[rows * groups];
        var rowCodes = new byte[columns];
        for (int r = 0; r < rows; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                var block = data.Slice((r * groups + g) * BlockBytes, BlockBytes);
                scales[r * groups + g] = BinaryPrimitives.ReadUInt16LittleEndian(block);
                if (mins is not null)
                    mins[r * groups + g] = BinaryPrimitives.ReadUInt16LittleEndian(block[2..]);
                block.Slice(4, scheme.Group).CopyTo(rowCodes.AsSpan(g * scheme.Group));
            }
            UniformCodec.Pack(rowCodes, scheme.Bits, codes.AsSpan(r * rowBytes, rowBytes));
        }
        return new UniformWeight(name, rows, columns, scheme, codes, scales, mins);
    }
}

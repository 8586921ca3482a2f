using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

/// <summary>
/// Unsigned codes of 2, 4 or 8 bits packed into bytes, lowest bits first (code i of a 2-bit row sits in bits
/// 2·(i mod 4) … of byte i / 4). <see cref="UnpackScalar"/> is the reference; <see cref="Unpack"/> decodes a byte at a
/// time through a table (2 and 4 bits) or widens 8 bytes at a time (8 bits), and is tested against it.
/// </summary>
internal static unsafe class PackedCodes
{
    // For every byte value: its four 2-bit codes, or its two 4-bit codes, as floats.
    private static readonly float[] TwoBitTable = BuildTable(2);
    private static readonly float[] FourBitTable = BuildTable(4);

    private static float[] BuildTable(int bits)
    {
        int perByte = 8 / bits, mask = (1 << bits) - 1;
        var table = new float[256 * perByte];
        for (int b = 0; b < 256; b++)
        {
            for (int j = 0; j < perByte; j++)
                table[b * perByte + j] = (b >> (j * bits)) & mask;
        }
        return table;
    }

    /// <summary>Bytes holding <paramref name="count"/> codes of <paramref name="bits"/> bits.</summary>
    public static int ByteCount(int count, int bits) => (count * bits + 7) / 8;

    /// <summary>Packs <paramref name="codes"/> (each below 2^bits) into <paramref name="destination"/> (its first
    /// <see cref="ByteCount"/> bytes are overwritten).</summary>
    public static void Pack(ReadOnlySpan<byte> codes, int bits, Span<byte> destination)
    {
        destination[..ByteCount(codes.Length, bits)].Clear();
        for (int i = 0; i < codes.Length; i++)
            destination[i * bits / 8] |= (byte)(codes[i] << (i * bits % 8));
    }

    /// <summary>Reference: destination[i] = code i, by shifting and masking.</summary>
    public static void UnpackScalar(byte* packed, int bits, int count, float* destination)
    {
        int mask = (1 << bits) - 1;
        for (int i = 0; i < count; i++)
            destination[i] = (packed[i * bits / 8] >> (i * bits % 8)) & mask;
    }

    /// <summary>destination[i] = code i, as <see cref="UnpackScalar"/>.</summary>
    public static void Unpack(byte* packed, int bits, int count, float* destination)
    {
        int perByte = 8 / bits;
        int whole = bits == 8 ? count / 8 * 8 : count / perByte * perByte;
        switch (bits)
        {
            case 8:
                for (int i = 0; i < whole; i += 8)
                {
                    var b = Vector128.CreateScalar(*(ulong*)(packed + i)).AsByte();
                    var w = Vector128.WidenLower(b);
                    Vector128.ConvertToSingle(Vector128.WidenLower(w).AsInt32()).Store(destination + i);
                    Vector128.ConvertToSingle(Vector128.WidenUpper(w).AsInt32()).Store(destination + i + 4);
                }
                break;
            case 4:
                fixed (float* table = FourBitTable)
                {
                    for (int i = 0; i < whole; i += 2)
                        *(ulong*)(destination + i) = *(ulong*)(table + 2 * packed[i / 2]);
                }
                break;
            case 2:
                fixed (float* table = TwoBitTable)
                {
                    for (int i = 0; i < whole; i += 4)
                        Vector128.Load(table + 4 * packed[i / 4]).Store(destination + i);
                }
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(bits), bits, "codes are 2, 4 or 8 bits");
        }
        UnpackScalar(packed + whole * bits / 8, bits, count - whole, destination + whole);
    }
}

namespace Squeeze.Tokenizers;

/// <summary>
/// GPT-2's byte-to-unicode map: byte-level BPE pieces spell each byte as one printable character. Printable Latin-1
/// bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 bytes take U+0100 onwards, in byte order
/// (so a space is 'Ġ' U+0120 and a newline 'Ċ' U+010A).
/// </summary>
internal static class ByteLevel
{
    /// <summary>The character for each byte.</summary>
    public static readonly char[] ByteToChar = BuildTable();

    /// <summary>The byte of each character below U+0144, or -1.</summary>
    private static readonly short[] CharToByte = BuildInverse();

    private static char[] BuildTable()
    {
        var table = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)(256 + extra++);
        }
        return table;
    }

    private static short[] BuildInverse()
    {
        var inverse = new short[256 + 68];
        Array.Fill(inverse, (short)-1);
        for (int b = 0; b < 256; b++)
            inverse[ByteToChar[b]] = (short)b;
        return inverse;
    }

    /// <summary>The byte <paramref name="c"/> stands for, or -1 when it is not in the map.</summary>
    public static int ToByte(char c) => c < CharToByte.Length ? CharToByte[c] : -1;

    /// <summary>A byte-level piece as the bytes it spells; characters outside the map are kept as their UTF-8 bytes.</summary>
    public static byte[] PieceBytes(string piece)
    {
        var bytes = new List<byte>(piece.Length);
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < piece.Length; i++)
        {
            int b = ToByte(piece[i]);
            if (b >= 0)
            {
                bytes.Add((byte)b);
                continue;
            }
            int n = char.IsHighSurrogate(piece[i]) && i + 1 < piece.Length && char.IsLowSurrogate(piece[i + 1]) ? 2 : 1;
            int written = System.Text.Encoding.UTF8.GetBytes(piece.AsSpan(i, n), utf8);
            bytes.AddRange(utf8[..written]);
            i += n - 1;
        }
        return [.. bytes];
    }
}

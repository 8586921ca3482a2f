using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;

namespace Squeeze.Zip;

/// <summary>
/// The fixed part of a .sqz file (docs/FORMAT.md, "The .sqz container"): magic, version, the model's fingerprint,
/// how the model was run (context window, overlap on a window reset), the original's length and XxHash64, the number of
/// blocks, a CRC-32 of all of these, then the model's file name (for messages only). Little-endian.
/// </summary>
public sealed record SqzHeader
{
    /// <summary>The first 8 bytes of every .sqz file.</summary>
    public static ReadOnlySpan<byte> Magic => "SQZIP\r\n\x1a"u8;

    /// <summary>The version this build writes. Version 1 (tokens and escapes only) is still read.</summary>
    public const ushort CurrentVersion = 2;

    /// <summary>The version the file was written in (<see cref="CurrentVersion"/> for a new one).</summary>
    public ushort Version { get; init; } = CurrentVersion;

    /// <summary>Bytes before the model name.</summary>
    public const int FixedBytes = 72;

    /// <summary>The fingerprint of the model the file was written with; decoding needs the same model.</summary>
    public required byte[] ModelFingerprint { get; init; }

    /// <summary>Positions of the KV cache each segment runs in (BOS included).</summary>
    public required int ContextLength { get; init; }

    /// <summary>Tokens re-fed after BOS when a window is full (0: the window restarts from BOS alone).</summary>
    public required int Overlap { get; init; }

    /// <summary>Bytes of the original file.</summary>
    public required long OriginalLength { get; init; }

    /// <summary>XxHash64 of the original file, checked after decoding.</summary>
    public required ulong OriginalHash { get; init; }

    /// <summary>Number of coded blocks that follow the header.</summary>
    public required int BlockCount { get; init; }

    /// <summary>The file name of the model the file was written with.</summary>
    public required string ModelName { get; init; }

    /// <summary>Bytes this header occupies.</summary>
    public int Length => FixedBytes + 1 + NameBytes().Length;

    private byte[] NameBytes()
    {
        byte[] name = Encoding.UTF8.GetBytes(ModelName);
        return name.Length <= 255 ? name : name[..255];
    }

    /// <summary>The header as stored: the fixed fields with their CRC-32, then the model name's length and UTF-8 bytes (at most 255).</summary>
    public byte[] ToBytes()
    {
        byte[] name = NameBytes();
        var bytes = new byte[FixedBytes + 1 + name.Length];
        var span = bytes.AsSpan();
        Magic.CopyTo(span);
        BinaryPrimitives.WriteUInt16LittleEndian(span[8..], Version);
        // bytes 10-11: flags, zero in version 1
        if (ModelFingerprint.Length != 16)
            throw new InvalidOperationException("a model fingerprint has 16 bytes");
        ModelFingerprint.CopyTo(span[12..]);
        BinaryPrimitives.WriteInt32LittleEndian(span[28..], ContextLength);
        BinaryPrimitives.WriteInt32LittleEndian(span[32..], Overlap);
        BinaryPrimitives.WriteInt64LittleEndian(span[36..], OriginalLength);
        BinaryPrimitives.WriteUInt64LittleEndian(span[44..], OriginalHash);
        BinaryPrimitives.WriteInt32LittleEndian(span[52..], BlockCount);
        // bytes 56-67: reserved, zero
        BinaryPrimitives.WriteUInt32LittleEndian(span[68..], Crc32.HashToUInt32(span[..68]));
        span[FixedBytes] = (byte)name.Length;
        name.CopyTo(span[(FixedBytes + 1)..]);
        return bytes;
    }

    /// <summary>Reads and checks the header at the start of <paramref name="stream"/>; <paramref name="path"/> names the file in errors.</summary>
    public static SqzHeader Read(Stream stream, string path)
    {
        var fixedPart = new byte[FixedBytes];
        if (stream.ReadAtLeast(fixedPart, FixedBytes, throwOnEndOfStream: false) < FixedBytes || !fixedPart.AsSpan(0, 8).SequenceEqual(Magic))
            throw new InvalidDataException($"{path}: not a .sqz file (no SQZIP header)");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(fixedPart.AsSpan(8));
        if (version is < 1 or > CurrentVersion)
            throw new InvalidDataException($"{path}: .sqz version {version}; this build reads versions 1 to {CurrentVersion}");
        if (BinaryPrimitives.ReadUInt32LittleEndian(fixedPart.AsSpan(68)) != Crc32.HashToUInt32(fixedPart.AsSpan(0, 68)))
            throw new InvalidDataException($"{path}: the header is corrupt (checksum mismatch)");
        int nameLength = stream.ReadByte();
        var name = new byte[Math.Max(0, nameLength)];
        if (nameLength < 0 || stream.ReadAtLeast(name, name.Length, throwOnEndOfStream: false) < name.Length)
            throw new InvalidDataException($"{path}: the file ends inside its header");
        var header = new SqzHeader
        {
            Version = version,
            ModelFingerprint = fixedPart.AsSpan(12, 16).ToArray(),
            ContextLength = BinaryPrimitives.ReadInt32LittleEndian(fixedPart.AsSpan(28)),
            Overlap = BinaryPrimitives.ReadInt32LittleEndian(fixedPart.AsSpan(32)),
            OriginalLength = BinaryPrimitives.ReadInt64LittleEndian(fixedPart.AsSpan(36)),
            OriginalHash = BinaryPrimitives.ReadUInt64LittleEndian(fixedPart.AsSpan(44)),
            BlockCount = BinaryPrimitives.ReadInt32LittleEndian(fixedPart.AsSpan(52)),
            ModelName = Encoding.UTF8.GetString(name),
        };
        if (header.ContextLength < 2 || header.Overlap < 0 || header.Overlap > header.ContextLength - 2 || header.OriginalLength < 0 || header.BlockCount < 0)
            throw new InvalidDataException($"{path}: the header's fields are out of range");
        return header;
    }
}

using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Squeeze.Coding;
using Squeeze.Formats.Safetensors;

namespace Squeeze.Formats.Native;

/// <summary>
/// The three companion tensors of one <see cref="ChunkedRans"/> symbol sequence (docs/FORMAT.md, rANS-coded symbol sequences), named
/// <c>STEM + "frequencies"</c> (U16 [alphabet], summing to 2^14), <c>STEM + "chunks"</c> (U32 [chunks, 2]: each chunk's
/// stream length in bytes and its CRC-32) and <c>STEM + "streams"</c> (U8 [Σ lengths], the chunks' streams back to back).
/// </summary>
internal static class RansCompanions
{
    /// <summary>The <c>"coder"</c> value naming this coding.</summary>
    public const string Coder = "rans14";

    public static void Store(NativeTensorSink sink, string stem, ChunkedRans coded)
    {
        sink.Add(stem + "frequencies", SafetensorsDType.U16, [coded.Table.Frequencies.Length], MemoryMarshal.AsBytes(coded.Table.Frequencies).ToArray());
        int chunks = coded.ChunkLengths.Length;
        var table = new byte[8L * chunks];
        for (int k = 0; k < chunks; k++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(table.AsSpan(8 * k), coded.ChunkLengths[k]);
            BinaryPrimitives.WriteUInt32LittleEndian(table.AsSpan(8 * k + 4), coded.ChunkChecksums[k]);
        }
        sink.Add(stem + "chunks", SafetensorsDType.U32, [chunks, 2], table);
        sink.Add(stem + "streams", SafetensorsDType.U8, [coded.Streams.LongLength], coded.Streams);
    }

    /// <summary>Reads and validates the companions of <paramref name="symbolCount"/> symbols of an alphabet of
    /// <paramref name="alphabet"/> in chunks of <paramref name="chunkSymbols"/> (not yet decoded).</summary>
    /// <exception cref="Tensors.ModelFormatException">A companion is missing, misshapen or inconsistent.</exception>
    public static ChunkedRans Read(NativeTensorSource source, string stem, int alphabet, long symbolCount, int chunkSymbols)
    {
        var frequencies = source.Companion<ushort>(stem + "frequencies", SafetensorsDType.U16, [alphabet]);
        RansTable table;
        try
        {
            table = RansTable.FromFrequencies(frequencies.Span);
        }
        catch (InvalidDataException e)
        {
            throw source.Fail(stem + "frequencies", e.Message);
        }
        long chunks = ChunkedRans.ChunkCount(symbolCount, chunkSymbols);
        var tableBytes = MemoryMarshal.AsBytes(source.Companion<uint>(stem + "chunks", SafetensorsDType.U32, [chunks, 2]).Span);
        var lengths = new uint[chunks];
        var checksums = new uint[chunks];
        long total = 0;
        for (int k = 0; k < chunks; k++)
        {
            lengths[k] = BinaryPrimitives.ReadUInt32LittleEndian(tableBytes[(8 * k)..]);
            checksums[k] = BinaryPrimitives.ReadUInt32LittleEndian(tableBytes[(8 * k + 4)..]);
            total += lengths[k];
        }
        var streams = source.Companion<byte>(stem + "streams", SafetensorsDType.U8, [total]).ToArray(); // decoded at load, then dropped
        try
        {
            return new ChunkedRans(table, symbolCount, chunkSymbols, streams, lengths, checksums);
        }
        catch (InvalidDataException e)
        {
            throw source.Fail(stem + "chunks", e.Message);
        }
    }
}

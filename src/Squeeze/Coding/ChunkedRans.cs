using System.IO.Hashing;

namespace Squeeze.Coding;

/// <summary>
/// A long symbol sequence coded by <see cref="Rans"/> with one frequency table in independent chunks of
/// <see cref="ChunkSymbols"/> symbols (the last may be shorter), so decoding runs in parallel and a corrupt chunk is
/// caught on its own: each chunk has its byte length and the CRC-32 (IEEE) of its stream. <see cref="Streams"/> holds
/// the chunks' streams back to back.
/// </summary>
public sealed class ChunkedRans
{
    /// <summary>Wraps stored parts after checking that they agree (chunk count, lengths).</summary>
    /// <exception cref="InvalidDataException">The chunk table does not match the symbol count or the streams' length.</exception>
    public ChunkedRans(RansTable table, long symbolCount, int chunkSymbols, byte[] streams, uint[] chunkLengths, uint[] chunkChecksums)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(streams);
        ArgumentNullException.ThrowIfNull(chunkLengths);
        ArgumentNullException.ThrowIfNull(chunkChecksums);
        if (symbolCount < 0 || symbolCount > Array.MaxLength)
            throw new InvalidDataException($"{symbolCount} symbols cannot be held in one array");
        if (chunkSymbols < 1)
            throw new InvalidDataException($"chunks of {chunkSymbols} symbols are not possible");
        long chunks = ChunkCount(symbolCount, chunkSymbols);
        if (chunkLengths.Length != chunks || chunkChecksums.Length != chunks)
            throw new InvalidDataException($"{symbolCount} symbols in chunks of {chunkSymbols} make {chunks} chunks; the chunk table has {chunkLengths.Length} lengths and {chunkChecksums.Length} checksums");
        var offsets = new long[chunks + 1];
        for (int k = 0; k < chunks; k++)
        {
            if (chunkLengths[k] < Rans.StateBytes)
                throw new InvalidDataException($"chunk {k} has {chunkLengths[k]} bytes; an rANS stream has at least {Rans.StateBytes}");
            offsets[k + 1] = offsets[k] + chunkLengths[k];
        }
        if (offsets[chunks] != streams.LongLength)
            throw new InvalidDataException($"the chunk lengths add up to {offsets[chunks]} bytes but the streams hold {streams.LongLength}");
        Table = table;
        SymbolCount = symbolCount;
        ChunkSymbols = chunkSymbols;
        Streams = streams;
        ChunkLengths = chunkLengths;
        ChunkChecksums = chunkChecksums;
        this.offsets = offsets;
    }

    private readonly long[] offsets; // [chunks + 1]: where each chunk's stream starts in Streams

    /// <summary>The frequency table every chunk is coded with.</summary>
    public RansTable Table { get; }

    /// <summary>Symbols coded.</summary>
    public long SymbolCount { get; }

    /// <summary>Symbols per chunk (all but the last chunk hold exactly this many).</summary>
    public int ChunkSymbols { get; }

    /// <summary>The chunks' streams, back to back.</summary>
    public byte[] Streams { get; }

    /// <summary>Byte length of each chunk's stream.</summary>
    public uint[] ChunkLengths { get; }

    /// <summary>CRC-32 of each chunk's stream.</summary>
    public uint[] ChunkChecksums { get; }

    /// <summary>Number of chunks: ⌈symbols / chunk symbols⌉.</summary>
    public static long ChunkCount(long symbolCount, int chunkSymbols) => (symbolCount + chunkSymbols - 1) / chunkSymbols;

    /// <summary>An upper bound of <see cref="Streams"/>' bytes for <paramref name="symbolCount"/> symbols of
    /// <paramref name="alphabet"/> in chunks of <paramref name="chunkSymbols"/>, known before coding: every symbol at its
    /// plain width ⌈log₂ alphabet⌉ plus 1/64 of that, and each chunk's final state. A table fitted to the symbols' own
    /// counts codes them in about their empirical entropy, which is at most that width; the 1/64 covers the table's
    /// rounding to <see cref="RansTable.PrecisionBits"/> bits and each chunk's renormalisation.</summary>
    public static long StreamBytesBound(long symbolCount, int chunkSymbols, int alphabet)
    {
        long plain = (symbolCount * (32 - System.Numerics.BitOperations.LeadingZeroCount((uint)(alphabet - 1))) + 7) / 8;
        return plain + (plain + 63) / 64 + ChunkCount(symbolCount, chunkSymbols) * Rans.StateBytes;
    }

    /// <summary>Codes <paramref name="symbols"/> (each below <paramref name="alphabet"/>) with a table fitted to their
    /// counts, chunk by chunk on up to <paramref name="threads"/> threads (the bytes do not depend on the thread count).</summary>
    public static ChunkedRans Encode(byte[] symbols, int alphabet, int chunkSymbols, int threads)
    {
        ArgumentNullException.ThrowIfNull(symbols);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkSymbols);
        var counts = new long[alphabet];
        foreach (byte s in symbols)
        {
            if (s >= alphabet)
                throw new ArgumentException($"symbol {s} is outside the alphabet of {alphabet}", nameof(symbols));
            counts[s]++;
        }
        var table = RansTable.FromCounts(counts);
        int chunks = (int)ChunkCount(symbols.Length, chunkSymbols);
        var parts = new byte[chunks][];
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads) }, k =>
        {
            int start = (int)((long)k * chunkSymbols), length = Math.Min(chunkSymbols, symbols.Length - start);
            parts[k] = Rans.Encode(symbols.AsSpan(start, length), table);
        });
        var lengths = new uint[chunks];
        var checksums = new uint[chunks];
        long total = 0;
        for (int k = 0; k < chunks; k++)
        {
            lengths[k] = (uint)parts[k].Length;
            checksums[k] = Crc32.HashToUInt32(parts[k]);
            total += parts[k].Length;
        }
        var streams = new byte[total];
        long at = 0;
        foreach (var part in parts)
        {
            part.CopyTo(streams, at);
            at += part.Length;
        }
        return new ChunkedRans(table, symbols.Length, chunkSymbols, streams, lengths, checksums);
    }

    /// <summary>Decodes every symbol, chunks in parallel on up to <paramref name="threads"/> threads.</summary>
    /// <exception cref="InvalidDataException">A chunk's checksum does not match or its stream is not a valid coding;
    /// the message names the chunk.</exception>
    public byte[] Decode(int threads)
    {
        var symbols = new byte[SymbolCount];
        var errors = new string?[ChunkLengths.Length];
        Parallel.For(0, ChunkLengths.Length, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads) }, k =>
        {
            var stream = Streams.AsSpan((int)offsets[k], (int)ChunkLengths[k]);
            if (Crc32.HashToUInt32(stream) != ChunkChecksums[k])
            {
                errors[k] = "fails its CRC-32";
                return;
            }
            int start = (int)((long)k * ChunkSymbols), length = (int)Math.Min(ChunkSymbols, SymbolCount - start);
            try
            {
                Rans.Decode(stream, Table, symbols.AsSpan(start, length));
            }
            catch (InvalidDataException e)
            {
                errors[k] = e.Message;
            }
        });
        for (int k = 0; k < errors.Length; k++)
        {
            if (errors[k] is { } error)
                throw new InvalidDataException($"chunk {k} of {errors.Length} of the rANS streams: {error}");
        }
        return symbols;
    }
}

using System.Diagnostics;
using System.IO.Hashing;
using Squeeze.Coding;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Zip;

/// <summary>Settings of <see cref="ModelCodec.Compress"/>.</summary>
public sealed record ZipOptions
{
    /// <summary>Segments run side by side in one batch (one token of each per step); also the most segments of a block.</summary>
    public int Lanes { get; init; } = 64;

    /// <summary>Largest segment, in bytes; segments end after a newline when one is near.</summary>
    public int SegmentBytes { get; init; } = 4096;

    /// <summary>Positions of each segment's window (BOS included); 0: the model's context length.</summary>
    public int ContextLength { get; init; }

    /// <summary>Tokens re-fed after BOS when a window is full (0: restart from BOS alone); null: a quarter of the window.</summary>
    public int? Overlap { get; init; }

    /// <summary>Threads of the model's forward passes; the coded bytes do not depend on it (the deterministic runtime).</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>Symbols over which the encoder compares two parses (a BOS token or a document break against the plain
    /// tokens) before keeping the cheaper; 0 codes the plain tokenization. Only the writer's time depends on it.</summary>
    public int Lookahead { get; init; } = 8;

    /// <summary>Where the blocks are coded: null in this process, one after another; else by these workers (a cluster),
    /// several blocks at a time. The file is the same bytes.</summary>
    public IZipWorkers? Workers { get; init; }
}

/// <summary>How every block of one .sqz file is coded: the window, overlap, segment size, lookahead and threads.</summary>
/// <param name="Window">Positions of each segment's window (BOS included).</param>
/// <param name="Overlap">Tokens re-fed after BOS when a window is full.</param>
/// <param name="SegmentBytes">Largest segment, in bytes.</param>
/// <param name="Lookahead">Symbols over which the encoder compares two parses.</param>
/// <param name="Threads">Threads of the forward passes (the bytes do not depend on it).</param>
public sealed record ZipBlockSettings(int Window, int Overlap, int SegmentBytes, int Lookahead, int Threads);

/// <summary>One block of a .sqz file as written (segment table, coded stream and CRC-32, or a stored block) and what
/// coding it counted.</summary>
/// <param name="Bytes">The block's bytes in the container.</param>
/// <param name="Overhead">Its bytes besides the coded stream (table, CRC-32).</param>
/// <param name="Segments">Segments it was cut into.</param>
/// <param name="Tokens">Token symbols coded.</param>
/// <param name="Escapes">Bytes coded outside the vocabulary.</param>
/// <param name="Breaks">Document breaks coded.</param>
/// <param name="Bos">BOS tokens coded.</param>
/// <param name="ModelBits">Σ −log2 p(token).</param>
/// <param name="EscapeBits">Bits the escapes cost.</param>
public sealed record ZipBlock(byte[] Bytes, long Overhead, int Segments, long Tokens, long Escapes, long Breaks, long Bos, double ModelBits, double EscapeBits);

/// <summary>Codes blocks of a .sqz file elsewhere (<see cref="ZipOptions.Workers"/>): each block depends on its bytes,
/// the model and the settings alone, so it is an independent work item.</summary>
public interface IZipWorkers
{
    /// <summary>Blocks handed out at once (the client holds that many blocks of input in memory).</summary>
    int BlocksAtOnce { get; }

    /// <summary>Codes <paramref name="blocks"/> with <paramref name="settings"/>, their results in the same order.</summary>
    IReadOnlyList<ZipBlock> Encode(Model model, ZipBlockSettings settings, IReadOnlyList<byte[]> blocks, CancellationToken cancellationToken);

    /// <summary>Decodes <paramref name="blocks"/> (each as it stands in the container) of a file with <paramref name="header"/>,
    /// the original bytes of each in the same order.</summary>
    IReadOnlyList<byte[]> Decode(Model model, SqzHeader header, IReadOnlyList<byte[]> blocks, CancellationToken cancellationToken);
}

/// <summary>Decodes one block after another of a .sqz file (the KV caches of its lanes made once): what a worker runs
/// for a block of <c>squeeze unzip</c>.</summary>
public sealed class ZipBlockDecoder : IDisposable
{
    private readonly LaneRunner runner;

    internal LaneRunner Runner => runner;

    /// <summary>A decoder of the blocks of a file with <paramref name="header"/>, written with <paramref name="model"/>.</summary>
    public ZipBlockDecoder(Model model, SqzHeader header, int threads, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(header);
        runner = new LaneRunner(model, header.ContextLength, header.Overlap, threads > 0 ? threads : Environment.ProcessorCount, breaks: header.Version >= 2,
            cancellationToken: cancellationToken);
    }

    /// <summary>The original bytes of one block given as it stands in the container (segment table, stream and CRC-32, or
    /// a stored block); <paramref name="path"/> and <paramref name="index"/> name it in errors.</summary>
    /// <exception cref="InvalidDataException">The block is corrupt.</exception>
    public byte[] Decode(byte[] block, string path, int index)
    {
        ArgumentNullException.ThrowIfNull(block);
        var (lanes, stream) = ModelCodec.ReadBlock(new MemoryStream(block, writable: false), path, index, long.MaxValue);
        if (lanes is null)
            return stream;
        var segments = runner.Decode(lanes, new RangeDecoder(stream), path, index, null);
        var original = new byte[segments.Sum(x => (long)x.Length)];
        int at = 0;
        foreach (var segment in segments)
        {
            segment.CopyTo(original, at);
            at += segment.Length;
        }
        return original;
    }

    /// <inheritdoc/>
    public void Dispose() => runner.Dispose();
}

/// <summary>Codes one block after another with one model and one <see cref="ZipBlockSettings"/> (the KV caches of its
/// lanes made once): what <see cref="ModelCodec.Compress"/> runs in process, and what a worker runs for a block.</summary>
public sealed class ZipBlockCoder : IDisposable
{
    private readonly LaneRunner runner;
    private readonly ZipBlockSettings settings;

    /// <summary>A coder of <paramref name="model"/>'s blocks.</summary>
    public ZipBlockCoder(Model model, ZipBlockSettings settings, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(settings);
        this.settings = settings;
        runner = new LaneRunner(model, settings.Window, settings.Overlap, settings.Threads, breaks: true, settings.Lookahead, cancellationToken);
    }

    /// <summary>Codes one block: cut into segments, range-coded lane by lane in one stream, or stored when the model would
    /// expand it. <paramref name="progress"/> hears the block's bytes done.</summary>
    public ZipBlock Encode(ReadOnlySpan<byte> block, Action<long>? progress = null)
    {
        int length = block.Length;
        var bounds = ModelCodec.SegmentBounds(block, (length + settings.SegmentBytes - 1) / settings.SegmentBytes);
        var lanes = new List<Lane>(bounds.Count);
        foreach (var (segmentStart, segmentEnd) in bounds)
            lanes.Add(new Lane(segmentEnd - segmentStart, false, block[segmentStart..segmentEnd].ToArray()));
        var encoder = new RangeEncoder();
        var stats = runner.Encode(lanes, encoder, progress);
        byte[] stream = encoder.Finish();
        using var output = new MemoryStream();
        long overhead = stream.Length < length
            ? ModelCodec.WriteBlock(output, lanes, stream)
            : ModelCodec.WriteStoredBlock(output, block); // the model expands these bytes (random data): keep them as they are
        return new ZipBlock(output.ToArray(), overhead, lanes.Count, stats.Tokens, stats.Escapes, stats.Breaks, stats.Bos, stats.ModelBits, stats.EscapeBits);
    }

    /// <inheritdoc/>
    public void Dispose() => runner.Dispose();
}

/// <summary>Progress of a compression or decompression: input bytes done (original bytes) of the total.</summary>
public readonly record struct CodecProgress(long Done, long Total);

/// <summary>What <see cref="ModelCodec.Compress"/> did.</summary>
/// <param name="InputBytes">Bytes of the original.</param>
/// <param name="OutputBytes">Bytes of the .sqz file.</param>
/// <param name="OverheadBytes">Header and block tables (everything but the coded streams).</param>
/// <param name="Tokens">Token symbols coded.</param>
/// <param name="Escapes">Bytes coded outside the vocabulary.</param>
/// <param name="Segments">Segments (each starts from BOS).</param>
/// <param name="Breaks">Document breaks coded (a fresh window from BOS inside a segment).</param>
/// <param name="BosTokens">BOS tokens coded (the text reads on as a new document in the same window).</param>
/// <param name="ModelBits">Σ −log2 p(token) over the coded tokens, p the model's softmax as <c>squeeze eval</c> computes it.</param>
/// <param name="EscapeBits">Bits the escapes cost (their frequency, plus 8 per byte).</param>
/// <param name="Seconds">Wall time.</param>
public sealed record ZipResult(long InputBytes, long OutputBytes, long OverheadBytes, long Tokens, long Escapes, int Segments, long Breaks, long BosTokens, double ModelBits, double EscapeBits, double Seconds)
{
    /// <summary>Bits per byte of the .sqz file.</summary>
    public double BitsPerByte => InputBytes == 0 ? 0 : 8.0 * OutputBytes / InputBytes;

    /// <summary>The model's cross-entropy in bits per byte (the bound the coded streams approach).</summary>
    public double ModelBitsPerByte => InputBytes == 0 ? 0 : (ModelBits + EscapeBits) / InputBytes;

    /// <summary>Original bytes per .sqz byte.</summary>
    public double Ratio => OutputBytes == 0 ? 0 : (double)InputBytes / OutputBytes;

    /// <summary>Coded streams over the bound: (output − header and tables) · 8 / (model bits + escape bits) − 1.</summary>
    public double StreamOverhead => ModelBits + EscapeBits == 0 ? 0 : 8.0 * (OutputBytes - OverheadBytes) / (ModelBits + EscapeBits) - 1;

    /// <summary>Original bytes coded per second.</summary>
    public double BytesPerSecond => Seconds == 0 ? 0 : InputBytes / Seconds;
}

/// <summary>What <see cref="ModelCodec.Decompress"/> did.</summary>
public sealed record UnzipResult(long InputBytes, long OutputBytes, double Seconds)
{
    /// <summary>Original bytes restored per second.</summary>
    public double BytesPerSecond => Seconds == 0 ? 0 : OutputBytes / Seconds;
}

/// <summary>
/// A language model as a lossless compressor (docs/FORMAT.md, "The .sqz container"). The input is cut into blocks, each
/// block into up to <see cref="ZipOptions.Lanes"/> segments; the segments of a block run side by side through
/// <see cref="Transformer.ForwardSequences"/> in the deterministic mode, one symbol of each per step, each in its own KV
/// cache starting from BOS; every symbol is range-coded with <see cref="TokenFrequencies"/> of its segment's logits, all
/// segments of a block into one stream in lane order. The decoder runs exactly the same steps, so it sees the same
/// frequencies bit for bit.
/// </summary>
public static class ModelCodec
{
    /// <summary>Compresses <paramref name="input"/> (read to its end) into <paramref name="output"/> (seekable: the header
    /// is completed at the end).</summary>
    public static ZipResult Compress(Model model, Stream input, Stream output, ZipOptions? options = null, IProgress<CodecProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        options ??= new ZipOptions();
        if (!output.CanSeek)
            throw new ArgumentException("the output must be seekable", nameof(output));
        int window = options.ContextLength > 0 ? options.ContextLength : model.Config.ContextLength;
        if (window < 2)
            throw new ArgumentException($"a window of {window} positions is too small", nameof(options));
        int overlap = options.Overlap ?? window / 4;
        if (overlap < 0 || overlap > window - 2)
            throw new ArgumentException($"overlap {overlap} must lie in [0, {window - 2}]", nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Lanes, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.SegmentBytes, 16, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.Lookahead, nameof(options));
        long total = input.CanSeek ? input.Length - input.Position : -1;

        var clock = Stopwatch.StartNew();
        long start = output.Position;
        var header = new SqzHeader
        {
            ModelFingerprint = ModelFingerprint.Of(model),
            ContextLength = window,
            Overlap = overlap,
            OriginalLength = 0,
            OriginalHash = 0,
            BlockCount = 0,
            ModelName = Path.GetFileName(model.Source.TrimEnd('/', '\\')),
        };
        output.Write(header.ToBytes());

        var settings = new ZipBlockSettings(window, overlap, options.SegmentBytes, options.Lookahead, options.Threads);
        using var coder = options.Workers is null ? new ZipBlockCoder(model, settings, cancellationToken) : null;
        var hash = new XxHash64();
        long inputBytes = 0, overhead = header.Length, tokens = 0, escapes = 0, breaks = 0, bosTokens = 0;
        int blocks = 0, segments = 0;
        double modelBits = 0, escapeBits = 0;
        // Blocks: as many as the segment limit needs, equal in size when the input's length is known.
        long blockBytes = (long)options.Lanes * options.SegmentBytes;
        if (total > 0)
        {
            long segmentCount = (total + options.SegmentBytes - 1) / options.SegmentBytes;
            long blockCount = (segmentCount + options.Lanes - 1) / options.Lanes;
            blockBytes = (total + blockCount - 1) / blockCount;
        }
        void Add(ZipBlock block, int length)
        {
            output.Write(block.Bytes);
            overhead += block.Overhead;
            blocks++;
            segments += block.Segments;
            tokens += block.Tokens;
            escapes += block.Escapes;
            breaks += block.Breaks;
            bosTokens += block.Bos;
            modelBits += block.ModelBits;
            escapeBits += block.EscapeBits;
            inputBytes += length;
            progress?.Report(new CodecProgress(inputBytes, total));
        }
        // In this process one block at a time; with workers, as many blocks as they take at once, written in order.
        int atOnce = options.Workers is null ? 1 : Math.Max(1, options.Workers.BlocksAtOnce);
        var batch = new List<byte[]>(atOnce);
        while (true)
        {
            batch.Clear();
            while (batch.Count < atOnce)
            {
                var buffer = new byte[blockBytes];
                int length = input.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
                if (length == 0)
                    break;
                batch.Add(length == buffer.Length ? buffer : buffer[..length]);
                hash.Append(batch[^1]);
            }
            if (batch.Count == 0)
                break;
            if (coder is not null)
            {
                long done = inputBytes;
                Add(coder.Encode(batch[0], progress is null ? null : new Action<long>(d => progress.Report(new CodecProgress(done + d, total)))), batch[0].Length);
            }
            else
            {
                var coded = options.Workers!.Encode(model, settings, batch, cancellationToken);
                for (int i = 0; i < batch.Count; i++)
                    Add(coded[i], batch[i].Length);
            }
        }

        long end = output.Position;
        output.Position = start;
        output.Write((header with { OriginalLength = inputBytes, OriginalHash = hash.GetCurrentHashAsUInt64(), BlockCount = blocks }).ToBytes());
        output.Position = end;
        return new ZipResult(inputBytes, end - start, overhead, tokens, escapes, segments, breaks, bosTokens, modelBits, escapeBits, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Compresses the file <paramref name="inputPath"/> into <paramref name="outputPath"/> (written to a temporary
    /// file beside it, then renamed; the input is only read).</summary>
    public static ZipResult CompressFile(Model model, string inputPath, string outputPath, ZipOptions? options = null, IProgress<CodecProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        using var input = File.OpenRead(inputPath);
        return WriteThenRename(outputPath, output => Compress(model, input, output, options, progress, cancellationToken));
    }

    /// <summary>Decompresses the .sqz file <paramref name="inputPath"/> into <paramref name="outputPath"/> (temporary file,
    /// renamed only once the checksum matched).</summary>
    public static UnzipResult DecompressFile(Model model, string inputPath, string outputPath, int threads = 0, IProgress<CodecProgress>? progress = null,
        IZipWorkers? workers = null, CancellationToken cancellationToken = default)
    {
        using var input = new FileStream(inputPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return WriteThenRename(outputPath, output => Decompress(model, input, output, inputPath, threads, progress, workers, cancellationToken));
    }

    private static T WriteThenRename<T>(string path, Func<Stream, T> write)
    {
        Formats.OutputPaths.RequireDirectory(path);
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            T result;
            using (var output = new FileStream(temp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16))
                result = write(output);
            File.Move(temp, full, overwrite: true);
            return result;
        }
        finally
        {
            File.Delete(temp);
        }
    }

    /// <summary>Decompresses a .sqz stream written with <paramref name="model"/>; <paramref name="path"/> names it in errors.
    /// Throws <see cref="InvalidDataException"/> on a corrupt file or another model, before or while writing: the caller
    /// discards the output then. With <paramref name="workers"/>, the blocks are decoded by them, several at a time.</summary>
    public static UnzipResult Decompress(Model model, Stream input, Stream output, string path, int threads = 0, IProgress<CodecProgress>? progress = null,
        IZipWorkers? workers = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        var clock = Stopwatch.StartNew();
        long inputStart = input.Position;
        var header = SqzHeader.Read(input, path);
        byte[] fingerprint = ModelFingerprint.Of(model);
        if (!fingerprint.AsSpan().SequenceEqual(header.ModelFingerprint))
            throw new InvalidDataException($"{path} was compressed with another model ({header.ModelName}, fingerprint {Convert.ToHexStringLower(header.ModelFingerprint)}); " +
                $"{Path.GetFileName(model.Source.TrimEnd('/', '\\'))} has fingerprint {Convert.ToHexStringLower(fingerprint)}");
        if (header.ContextLength > 1 << 20)
            throw new InvalidDataException($"{path}: a window of {header.ContextLength} positions is out of range");

        var hash = new XxHash64();
        long written = 0;
        void Add(byte[] segment)
        {
            hash.Append(segment);
            output.Write(segment);
            written += segment.Length;
        }
        if (workers is not null)
        {
            // Blocks as they stand in the container, as many at a time as the workers take, written in order.
            int atOnce = Math.Max(1, workers.BlocksAtOnce);
            for (int first = 0; first < header.BlockCount; first += atOnce)
            {
                var batch = new List<byte[]>(atOnce);
                long remaining = header.OriginalLength - written;
                for (int b = first; b < Math.Min(header.BlockCount, first + atOnce); b++)
                {
                    var (lanes, stream) = ReadBlock(input, path, b, remaining);
                    remaining -= lanes is null ? stream.Length : lanes.Sum(l => (long)l.Length);
                    using var raw = new MemoryStream();
                    if (lanes is null)
                        WriteStoredBlock(raw, stream);
                    else
                        WriteBlock(raw, lanes, stream);
                    batch.Add(raw.ToArray());
                }
                foreach (byte[] original in workers.Decode(model, header, batch, cancellationToken))
                    Add(original);
                progress?.Report(new CodecProgress(written, header.OriginalLength));
            }
        }
        else
        {
            using var decoder = new ZipBlockDecoder(model, header, threads, cancellationToken);
            for (int b = 0; b < header.BlockCount; b++)
            {
                var (lanes, stream) = ReadBlock(input, path, b, header.OriginalLength - written);
                long done = written;
                var decoded = lanes is null ? [stream] : decoder.Runner.Decode(lanes, new RangeDecoder(stream), path, b,
                    progress is null ? null : new Action<long>(d => progress.Report(new CodecProgress(done + d, header.OriginalLength))));
                foreach (byte[] segment in decoded)
                    Add(segment);
            }
        }
        if (written != header.OriginalLength)
            throw new InvalidDataException($"{path}: decoded {written} bytes, the header says {header.OriginalLength}");
        if (input.ReadByte() >= 0)
            throw new InvalidDataException($"{path}: data after the last block");
        if (hash.GetCurrentHashAsUInt64() != header.OriginalHash)
            throw new InvalidDataException($"{path}: the decoded bytes do not match the original's checksum (corrupt file, or a runtime that computes different logits)");
        progress?.Report(new CodecProgress(written, header.OriginalLength));
        return new UnzipResult(input.Position - inputStart, written, clock.Elapsed.TotalSeconds);
    }

    /// <summary>[start, end) of <paramref name="count"/> segments covering <paramref name="block"/>: cut near equal sizes,
    /// each cut moved back to just after a newline within the last eighth of the segment when there is one, else to the
    /// start of a UTF-8 character.</summary>
    internal static List<(int Start, int End)> SegmentBounds(ReadOnlySpan<byte> block, int count)
    {
        var bounds = new List<(int, int)>(count);
        int start = 0;
        for (int s = 1; s <= count; s++)
        {
            int end = (int)((long)block.Length * s / count);
            if (s < count)
            {
                int reach = Math.Max(1, (end - start) / 8);
                int newline = block[Math.Max(start, end - reach)..end].LastIndexOf((byte)'\n');
                if (newline >= 0)
                    end = Math.Max(start, end - reach) + newline + 1;
                else
                {
                    for (int back = 0; back < 3 && end - 1 > start && (block[end] & 0xC0) == 0x80; back++)
                        end--;
                }
            }
            if (end > start)
                bounds.Add((start, end));
            start = end;
        }
        return bounds;
    }

    /// <summary>Writes one block (segment table, stream, CRC-32); returns the bytes besides the stream.</summary>
    internal static long WriteBlock(Stream output, List<Lane> lanes, byte[] stream)
    {
        using var table = new MemoryStream();
        WriteVarint(table, (ulong)lanes.Count);
        foreach (var lane in lanes)
            WriteVarint(table, ((ulong)lane.Length << 1) | (lane.DroppedSpace ? 1UL : 0));
        WriteVarint(table, (ulong)stream.Length);
        var crc = new Crc32();
        crc.Append(table.GetBuffer().AsSpan(0, (int)table.Length));
        crc.Append(stream);
        output.Write(table.GetBuffer(), 0, (int)table.Length);
        output.Write(stream);
        output.Write(crc.GetCurrentHash());
        return table.Length + 4;
    }

    /// <summary>Writes a stored block (segment count 0, length, the bytes, CRC-32); returns the bytes besides the data.</summary>
    internal static long WriteStoredBlock(Stream output, ReadOnlySpan<byte> data)
    {
        using var table = new MemoryStream();
        WriteVarint(table, 0);
        WriteVarint(table, (ulong)data.Length);
        var crc = new Crc32();
        crc.Append(table.GetBuffer().AsSpan(0, (int)table.Length));
        crc.Append(data);
        output.Write(table.GetBuffer(), 0, (int)table.Length);
        output.Write(data);
        output.Write(crc.GetCurrentHash());
        return table.Length + 4;
    }

    /// <summary>Reads one block: its segments and coded stream, or (stored block) null and the original bytes.</summary>
    internal static (List<Lane>? Lanes, byte[] Stream) ReadBlock(Stream input, string path, int index, long remaining)
    {
        var crc = new Crc32();
        ulong ReadNumber()
        {
            ulong value = 0;
            for (int shift = 0; ; shift += 7)
            {
                int b = input.ReadByte();
                if (b < 0 || shift > 56)
                    throw new InvalidDataException($"{path}: block {index} is truncated or corrupt");
                crc.Append([(byte)b]);
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80)
                    return value;
            }
        }
        ulong count = ReadNumber();
        if (count > 1 << 20)
            throw new InvalidDataException($"{path}: block {index} has {count} segments");
        if (count == 0)
        {
            ulong stored = ReadNumber();
            if (stored == 0 || (long)stored > remaining)
                throw new InvalidDataException($"{path}: block {index} is corrupt (a stored length past the original's length)");
            return (null, ReadPayload(input, path, index, (long)stored, crc));
        }
        var lanes = new List<Lane>((int)count);
        long sum = 0;
        for (ulong s = 0; s < count; s++)
        {
            ulong entry = ReadNumber();
            long length = (long)(entry >> 1);
            sum += length;
            if (length == 0 || sum > remaining)
                throw new InvalidDataException($"{path}: block {index} is corrupt (segment lengths past the original's length)");
            lanes.Add(new Lane((int)length, (entry & 1) != 0, null));
        }
        return (lanes, ReadPayload(input, path, index, (long)ReadNumber(), crc));
    }

    /// <summary>Reads <paramref name="length"/> bytes and the block's CRC-32, which must match <paramref name="crc"/> + those bytes.</summary>
    private static byte[] ReadPayload(Stream input, string path, int index, long length, Crc32 crc)
    {
        if (length > int.MaxValue || (input.CanSeek && length > input.Length - input.Position))
            throw new InvalidDataException($"{path}: block {index} is truncated");
        var payload = new byte[length];
        var check = new byte[4];
        if (input.ReadAtLeast(payload, payload.Length, throwOnEndOfStream: false) < payload.Length || input.ReadAtLeast(check, 4, throwOnEndOfStream: false) < 4)
            throw new InvalidDataException($"{path}: block {index} is truncated");
        crc.Append(payload);
        if (!crc.GetCurrentHash().AsSpan().SequenceEqual(check))
            throw new InvalidDataException($"{path}: block {index} is corrupt (checksum mismatch)");
        return payload;
    }

    private static void WriteVarint(Stream stream, ulong value)
    {
        while (value >= 0x80)
        {
            stream.WriteByte((byte)(value | 0x80));
            value >>= 7;
        }
        stream.WriteByte((byte)value);
    }
}

using System.Diagnostics;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Coding;

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

    public int Threads { get; init; } = Environment.ProcessorCount;
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
/// <param name="ModelBits">Σ −log2 p(token) over the coded tokens, p the model's softmax as <c>squeeze eval</c> computes it.</param>
/// <param name="EscapeBits">Bits the escapes cost (their frequency, plus 8 per byte).</param>
/// <param name="Seconds">Wall time.</param>
public sealed record ZipResult(long InputBytes, long OutputBytes, long OverheadBytes, long Tokens, long Escapes, int Segments, double ModelBits, double EscapeBits, double Seconds)
{
    /// <summary>Bits per byte of the .sqz file.</summary>
    public double BitsPerByte => InputBytes == 0 ? 0 : 8.0 * OutputBytes / InputBytes;

    /// <summary>The model's cross-entropy in bits per byte (the bound the coded streams approach).</summary>
    public double ModelBitsPerByte => InputBytes == 0 ? 0 : (ModelBits + EscapeBits) / InputBytes;

    /// <summary>Original bytes per .sqz byte.</summary>
    public double Ratio => OutputBytes == 0 ? 0 : (double)InputBytes / OutputBytes;

    /// <summary>Coded streams over the bound: (output − header and tables) · 8 / (model bits + escape bits) − 1.</summary>
    public double StreamOverhead => ModelBits + EscapeBits == 0 ? 0 : 8.0 * (OutputBytes - OverheadBytes) / (ModelBits + EscapeBits) - 1;

    public double BytesPerSecond => Seconds == 0 ? 0 : InputBytes / Seconds;
}

/// <summary>What <see cref="ModelCodec.Decompress"/> did.</summary>
public sealed record UnzipResult(long InputBytes, long OutputBytes, double Seconds)
{
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
    public static ZipResult Compress(Model model, Stream input, Stream output, ZipOptions? options = null, IProgress<CodecProgress>? progress = null)
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

        using var runner = new LaneRunner(model, window, overlap, options.Threads);
        var hash = new XxHash64();
        long inputBytes = 0, overhead = header.Length, tokens = 0, escapes = 0;
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
        var buffer = new byte[blockBytes];
        while (true)
        {
            int length = input.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
            if (length == 0)
                break;
            var block = buffer.AsSpan(0, length);
            hash.Append(block);
            var bounds = SegmentBounds(block, (length + options.SegmentBytes - 1) / options.SegmentBytes);
            var lanes = new List<Lane>(bounds.Count);
            for (int s = 0; s < bounds.Count; s++)
            {
                var symbols = runner.Symbols.Tokenize(block[bounds[s].Start..bounds[s].End], out bool dropped);
                lanes.Add(new Lane(bounds[s].End - bounds[s].Start, dropped, symbols));
            }
            long done = inputBytes;
            var encoder = new RangeEncoder();
            var stats = runner.Encode(lanes, encoder, progress is null ? null : new Action<long>(d => progress.Report(new CodecProgress(done + d, total))));
            byte[] stream = encoder.Finish();
            if (stream.Length < length)
                overhead += WriteBlock(output, lanes, stream);
            else
                overhead += WriteStoredBlock(output, block); // the model expands these bytes (random data): keep them as they are
            blocks++;
            segments += lanes.Count;
            tokens += stats.Tokens;
            escapes += stats.Escapes;
            modelBits += stats.ModelBits;
            escapeBits += stats.EscapeBits;
            inputBytes += length;
            progress?.Report(new CodecProgress(inputBytes, total));
        }

        long end = output.Position;
        output.Position = start;
        output.Write((header with { OriginalLength = inputBytes, OriginalHash = hash.GetCurrentHashAsUInt64(), BlockCount = blocks }).ToBytes());
        output.Position = end;
        return new ZipResult(inputBytes, end - start, overhead, tokens, escapes, segments, modelBits, escapeBits, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Compresses the file <paramref name="inputPath"/> into <paramref name="outputPath"/> (written to a temporary
    /// file beside it, then renamed; the input is only read).</summary>
    public static ZipResult CompressFile(Model model, string inputPath, string outputPath, ZipOptions? options = null, IProgress<CodecProgress>? progress = null)
    {
        using var input = File.OpenRead(inputPath);
        return WriteThenRename(outputPath, output => Compress(model, input, output, options, progress));
    }

    /// <summary>Decompresses the .sqz file <paramref name="inputPath"/> into <paramref name="outputPath"/> (temporary file,
    /// renamed only once the checksum matched).</summary>
    public static UnzipResult DecompressFile(Model model, string inputPath, string outputPath, int threads = 0, IProgress<CodecProgress>? progress = null)
    {
        using var input = new FileStream(inputPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return WriteThenRename(outputPath, output => Decompress(model, input, output, inputPath, threads, progress));
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
    /// discards the output then.</summary>
    public static UnzipResult Decompress(Model model, Stream input, Stream output, string path, int threads = 0, IProgress<CodecProgress>? progress = null)
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

        using var runner = new LaneRunner(model, header.ContextLength, header.Overlap, threads > 0 ? threads : Environment.ProcessorCount);
        var hash = new XxHash64();
        long written = 0;
        for (int b = 0; b < header.BlockCount; b++)
        {
            var (lanes, stream) = ReadBlock(input, path, b, header.OriginalLength - written);
            long done = written;
            var decoded = lanes is null ? [stream] : runner.Decode(lanes, new RangeDecoder(stream), path, b,
                progress is null ? null : new Action<long>(d => progress.Report(new CodecProgress(done + d, header.OriginalLength))));
            foreach (byte[] segment in decoded)
            {
                hash.Append(segment);
                output.Write(segment);
                written += segment.Length;
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
    private static long WriteBlock(Stream output, List<Lane> lanes, byte[] stream)
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
    private static long WriteStoredBlock(Stream output, ReadOnlySpan<byte> data)
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
    private static (List<Lane>? Lanes, byte[] Stream) ReadBlock(Stream input, string path, int index, long remaining)
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

    /// <summary>One segment: its length, whether its first run carries the tokenizer's space prefix, and (encoding) its symbols.</summary>
    private sealed class Lane(int length, bool droppedSpace, List<int>? symbols)
    {
        public int Length { get; } = length;
        public bool DroppedSpace { get; } = droppedSpace;
        public List<int> Symbols { get; } = symbols ?? [];
        public byte[] Output { get; } = new byte[length];
        public int Produced { get; set; } = droppedSpace ? -1 : 0; // output bytes written; −1: the prefix space is next
        public int Coded { get; set; }                             // symbols coded or decoded so far

        // model state
        public KvCache? Cache { get; set; }
        public int Position { get; set; }                 // next position in the cache
        public List<int> Pending { get; } = [];           // tokens to feed in the next step
        public List<int> WindowTokens { get; } = [];      // tokens fed since the window's BOS
        public bool Active { get; set; } = true;
    }

    private readonly record struct BlockStats(long Tokens, long Escapes, double ModelBits, double EscapeBits);

    /// <summary>The model in deterministic mode and the lockstep loop shared by the encoder and the decoder.</summary>
    private sealed class LaneRunner : IDisposable
    {
        private readonly Model model;
        private readonly Transformer runtime;
        private readonly int window, overlap, threads, vocab, bos;
        private readonly Stack<KvCache> spareCaches = new();

        public LaneRunner(Model model, int window, int overlap, int threads)
        {
            this.model = model;
            this.window = window;
            this.overlap = overlap;
            this.threads = Math.Max(1, threads);
            vocab = model.Config.VocabSize;
            var v = model.Vocabulary;
            bos = v.BosId >= 0 ? v.BosId : v.EosId >= 0 ? v.EosId : 0;
            runtime = new Transformer(model, new RuntimeOptions { Threads = this.threads, ContextLength = window, BatchSize = 256, Deterministic = true });
            Symbols = new SymbolTokenizer(model.Tokenizer);
            if (model.Tokenizer.Vocabulary.Count != vocab)
                throw new InvalidOperationException($"{model.Source}: the tokenizer has {model.Tokenizer.Vocabulary.Count} tokens, the model {vocab}");
        }

        public SymbolTokenizer Symbols { get; }

        public BlockStats Encode(List<Lane> lanes, RangeEncoder encoder, Action<long>? progress)
        {
            long tokens = 0, escapes = 0, done = 0;
            double modelBits = 0, escapeBits = 0;
            var nll = new double[lanes.Count];
            Run(lanes, (lane, index, logits, logPartition) =>
            {
                int symbol = lane.Symbols[lane.Coded];
                if (symbol >= 0)
                    nll[index] = (logPartition - logits[symbol]) / Math.Log(2);
            }, (lane, index, cumulative) =>
            {
                int symbol = lane.Symbols[lane.Coded++];
                uint total = cumulative[^1];
                if (symbol >= 0)
                {
                    encoder.Encode(cumulative[symbol], cumulative[symbol + 1] - cumulative[symbol], total);
                    tokens++;
                    modelBits += nll[index];
                    done += Symbols.Bytes(symbol).Length;
                }
                else
                {
                    encoder.Encode(cumulative[vocab], 1, total);
                    encoder.EncodeUniform((uint)(-1 - symbol), 8);
                    escapes++;
                    escapeBits += Math.Log2(total) + 8;
                    done++;
                }
                return (symbol, lane.Coded == lane.Symbols.Count);
            }, () => progress?.Invoke(done));
            return new BlockStats(tokens, escapes, modelBits, escapeBits);
        }

        public List<byte[]> Decode(List<Lane> lanes, RangeDecoder decoder, string path, int block, Action<long>? progress)
        {
            long done = 0;
            var escaped = new byte[1];
            Run(lanes, null, (lane, index, cumulative) =>
            {
                uint total = cumulative[^1];
                int symbol = TokenFrequencies.Find(cumulative, decoder.Target(total));
                decoder.Consume(cumulative[symbol], cumulative[symbol + 1] - cumulative[symbol]);
                if (symbol == vocab)
                {
                    escaped[0] = (byte)decoder.DecodeUniform(8);
                    symbol = -1 - escaped[0];
                }
                ReadOnlySpan<byte> bytes = symbol < 0 ? escaped : Symbols.Bytes(symbol);
                if (bytes.IsEmpty)
                    throw new InvalidDataException($"{path}: block {block} is corrupt (a token that stands for no bytes)");
                foreach (byte b in bytes)
                {
                    if (lane.Produced == -1)
                    {
                        if (b != (byte)' ')
                            throw new InvalidDataException($"{path}: block {block} is corrupt (no space prefix where one was marked)");
                    }
                    else if (lane.Produced >= lane.Length)
                    {
                        throw new InvalidDataException($"{path}: block {block} is corrupt (a segment longer than its table entry)");
                    }
                    else
                    {
                        lane.Output[lane.Produced] = b;
                    }
                    lane.Produced++;
                    done++;
                }
                lane.Coded++;
                return (symbol, lane.Produced == lane.Length);
            }, () => progress?.Invoke(done));
            return lanes.Select(l => l.Output).ToList();
        }

        private delegate void Measure(Lane lane, int index, ReadOnlySpan<float> logits, double logPartition);

        private delegate (int Symbol, bool Finished) Code(Lane lane, int index, ReadOnlySpan<uint> cumulative);

        /// <summary>
        /// The lockstep loop: every step feeds each active lane its pending tokens (one, or BOS + overlap + one after a
        /// window reset) as rows of one batch, turns each lane's last logits row into cumulative frequencies (lanes in
        /// parallel), then codes one symbol per lane in lane order.
        /// </summary>
        private void Run(List<Lane> lanes, Measure? measure, Code code, Action stepDone)
        {
            foreach (var lane in lanes)
            {
                lane.Cache = spareCaches.Count > 0 ? spareCaches.Pop() : runtime.NewCache(window);
                lane.Pending.Add(bos);
            }
            var cumulative = new uint[lanes.Count][];
            var scratch = new float[lanes.Count][];
            var rowTokens = new List<int>();
            var rowCaches = new List<KvCache>();
            var rowPositions = new List<int>();
            var logitRows = new List<int>();
            float[] logits = [];
            var active = new List<int>(lanes.Count);
            var lastRow = new int[lanes.Count];
            try
            {
                while (true)
                {
                    active.Clear();
                    rowTokens.Clear();
                    rowCaches.Clear();
                    rowPositions.Clear();
                    for (int i = 0; i < lanes.Count; i++)
                    {
                        var lane = lanes[i];
                        if (!lane.Active)
                            continue;
                        active.Add(i);
                        foreach (int token in lane.Pending)
                        {
                            rowTokens.Add(token);
                            rowCaches.Add(lane.Cache!);
                            rowPositions.Add(lane.Position++);
                        }
                        lastRow[i] = rowTokens.Count - 1;
                        lane.Pending.Clear();
                    }
                    if (active.Count == 0)
                        break;
                    logitRows.Clear();
                    foreach (int i in active)
                        logitRows.Add(lastRow[i]);
                    var rows = runtime.ForwardSequences(
                        CollectionsMarshal.AsSpan(rowTokens), CollectionsMarshal.AsSpan(rowCaches), CollectionsMarshal.AsSpan(rowPositions), CollectionsMarshal.AsSpan(logitRows));
                    if (logits.Length < rows.Length)
                        logits = new float[rows.Length];
                    rows.CopyTo(logits);
                    Parallel.For(0, active.Count, new ParallelOptions { MaxDegreeOfParallelism = threads }, a =>
                    {
                        int i = active[a];
                        cumulative[i] ??= new uint[vocab + 2];
                        scratch[i] ??= new float[vocab];
                        var row = logits.AsSpan(a * vocab, vocab);
                        double logPartition = TokenFrequencies.Compute(row, scratch[i], cumulative[i]);
                        measure?.Invoke(lanes[i], i, row, logPartition);
                    });
                    foreach (int i in active)
                    {
                        var lane = lanes[i];
                        var (symbol, finished) = code(lane, i, cumulative[i]);
                        if (finished)
                        {
                            lane.Active = false;
                            spareCaches.Push(lane.Cache!);
                            lane.Cache = null;
                            continue;
                        }
                        int feed = symbol >= 0 ? symbol : Symbols.FeedForEscape;
                        if (lane.Position == window)
                        {
                            // the window is full: restart it from BOS and the last `overlap` tokens
                            var kept = lane.WindowTokens.GetRange(lane.WindowTokens.Count - overlap, overlap);
                            lane.WindowTokens.Clear();
                            lane.WindowTokens.AddRange(kept);
                            lane.Position = 0;
                            lane.Pending.Add(bos);
                            lane.Pending.AddRange(kept);
                        }
                        lane.Pending.Add(feed);
                        lane.WindowTokens.Add(feed);
                    }
                    stepDone();
                }
            }
            finally
            {
                foreach (var lane in lanes)
                {
                    if (lane.Cache is not null)
                        spareCaches.Push(lane.Cache);
                    lane.Cache = null;
                }
            }
        }

        public void Dispose() => runtime.Dispose();
    }
}

using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;
using Squeeze.Runtime;
using Squeeze.Tensors;

namespace Squeeze.Calibration;

/// <summary>
/// The calibration statistics file (little-endian):
/// <code>
/// "SQZCALIB"  u32 version (2)
/// u64 model identity hash   u16 n + n bytes UTF-8 model description
/// u64 text hash   i64 token count   i32 context length   i32 entry count
/// per entry, ordered by (layer, kind), no duplicates:
///   i32 layer (−1: classifier)   i32 kind (LinearInput)   i32 width   i64 token count   u8 flags (1: has Gram)
///   sums: f64[width] Σx²   f64[width] Σ|x|   f32[width] max|x|   [f64[width·(width+1)/2] XᵀX upper triangle, row by row]
///   i32 expert count (0 but for a routed experts' input: ExpertFeedForward, ExpertFeedForwardDown)
///   per expert: i64 token count (0: no token was routed to it)   [sums, as the entry's, when the count is not 0]
/// u64 XxHash64 of every byte before it
/// </code>
/// A routed input's entry holds its sums over every routed row, and each expert's over the rows routed to it (the
/// experts' token counts add up to the entry's). Version 1 files (no expert counts) are read too.
/// Written to a temporary file that is then renamed over the target. Reading checks every field and the checksum and
/// throws <see cref="ModelFormatException"/> naming the file and the problem.
/// </summary>
public static class CalibrationFile
{
    private static ReadOnlySpan<byte> Magic => "SQZCALIB"u8;

    /// <summary>The format version written and read.</summary>
    public const uint Version = 2;

    /// <summary>Most experts an entry may hold.</summary>
    public const int MaxExperts = 1 << 12;

    /// <summary>Widest input accepted (columns).</summary>
    public const int MaxWidth = 1 << 18;

    private const int MaxDescriptionBytes = 1024;
    private const int MaxEntries = 1 << 20;
    private const int MaxLayer = 1 << 16;
    private const int EntryHeaderBytes = 4 + 4 + 4 + 8 + 1;

    /// <summary>Writes <paramref name="stats"/> to <paramref name="path"/> (through a temporary file renamed at the end).</summary>
    public static void Write(string path, CalibrationStatistics stats)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path);
        string temp = full + $".tmp{Environment.ProcessId}";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
                Write(stream, stats);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp))
                File.Delete(temp);
        }
    }

    /// <summary>Writes <paramref name="stats"/> to <paramref name="stream"/> in the format above.</summary>
    public static void Write(Stream stream, CalibrationStatistics stats)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(stats);
        var w = new HashingWriter(stream);
        WriteHeader(w, stats, stats.Entries.Count);
        foreach (var e in stats.Entries)
            WriteEntry(w, e);
        ulong checksum = w.Hash.GetCurrentHashAsUInt64();
        w.U64(checksum);
        stream.Flush();
    }

    /// <summary>
    /// Calibrates <paramref name="model"/> on <paramref name="text"/> (<see cref="Calibrator.Run(Models.Model, string, CalibrationOptions, Action{IReadOnlyList{ActivationStatistics}}, IProgress{CalibrationProgress}, CancellationToken)"/>)
    /// straight into the file <paramref name="path"/>, holding one block's statistics at a time: each block's entries
    /// go to a temporary file as they are done, then the file is assembled (header, the classifier's entry, the blocks'
    /// entries, checksum) and renamed over <paramref name="path"/>. Returns the statistics' shared facts and the number of
    /// entries written (as <see cref="CalibrationStatistics.Entries"/>' count of a result with no entries kept).
    /// </summary>
    public static (CalibrationStatistics Summary, int Entries) Collect(string path, Models.Model model, string text, CalibrationOptions options,
        IProgress<CalibrationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path);
        string blocks = full + $".blocks{Environment.ProcessId}", temp = full + $".tmp{Environment.ProcessId}";
        try
        {
            var classifier = new List<ActivationStatistics>();
            int count = 0;
            CalibrationStatistics summary;
            using (var stream = new FileStream(blocks, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 16))
            {
                var w = new HashingWriter(stream);
                summary = Calibrator.Run(model, text, options, entries =>
                {
                    foreach (var e in entries)
                    {
                        if (e.Layer < 0)
                            classifier.Add(e);
                        else
                            WriteEntry(w, e);
                        count++;
                    }
                }, progress, cancellationToken);
                stream.Position = 0;
                using var output = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
                var o = new HashingWriter(output);
                WriteHeader(o, summary, count);
                foreach (var e in classifier)
                    WriteEntry(o, e);
                var buffer = new byte[1 << 20];
                int read;
                while ((read = stream.Read(buffer)) > 0)
                    o.Bytes(buffer.AsSpan(0, read));
                o.U64(o.Hash.GetCurrentHashAsUInt64());
                output.Flush();
            }
            File.Move(temp, full, overwrite: true);
            return (summary, count);
        }
        finally
        {
            File.Delete(blocks);
            if (File.Exists(temp))
                File.Delete(temp);
        }
    }

    private static void WriteHeader(HashingWriter w, CalibrationStatistics stats, int entries)
    {
        w.Bytes(Magic);
        w.U32(Version);
        w.U64(stats.Model.Hash);
        byte[] description = Encoding.UTF8.GetBytes(stats.Model.Description);
        if (description.Length > MaxDescriptionBytes)
            description = Encoding.UTF8.GetBytes(stats.Model.Description[..Math.Min(stats.Model.Description.Length, MaxDescriptionBytes / 4)]);
        w.U16((ushort)description.Length);
        w.Bytes(description);
        w.U64(stats.TextHash);
        w.I64(stats.TokenCount);
        w.I32(stats.ContextLength);
        w.I32(entries);
    }

    private static void WriteEntry(HashingWriter w, ActivationStatistics e)
    {
        w.I32(e.Layer);
        w.I32((int)e.Kind);
        w.I32(e.Width);
        w.I64(e.TokenCount);
        w.Bytes([(byte)(e.Gram is null ? 0 : 1)]);
        WriteSums(w, e);
        w.I32(e.Experts.Count);
        foreach (var expert in e.Experts)
        {
            w.I64(expert?.TokenCount ?? 0);
            if (expert is { TokenCount: > 0 })
                WriteSums(w, expert);
        }
    }

    private static void WriteSums(HashingWriter w, ActivationStatistics e)
    {
        w.Bytes(MemoryMarshal.AsBytes(e.SumSquares.AsSpan()));
        w.Bytes(MemoryMarshal.AsBytes(e.SumAbs.AsSpan()));
        w.Bytes(MemoryMarshal.AsBytes(e.MaxAbs.AsSpan()));
        if (e.Gram is not null)
        {
            for (int i = 0; i < e.Width; i++)
                w.Bytes(MemoryMarshal.AsBytes(e.Gram.AsSpan(i * e.Width + i, e.Width - i)));
        }
    }

    /// <summary>Reads and validates a statistics file.</summary>
    /// <exception cref="ModelFormatException">The file is not a valid statistics file (the message names the problem).</exception>
    public static CalibrationStatistics Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return Read(stream, path);
    }

    /// <summary>Reads and validates a statistics file, then checks it was collected on <paramref name="model"/>.</summary>
    /// <exception cref="ModelFormatException">Invalid file, or statistics of another model (both are named).</exception>
    public static CalibrationStatistics Read(string path, Models.Model model)
    {
        var stats = Read(path);
        stats.EnsureMatches(model, path);
        return stats;
    }

    /// <summary>Reads and validates statistics from a seekable stream; <paramref name="name"/> names it in errors.</summary>
    /// <exception cref="ModelFormatException">The content is not a valid statistics file.</exception>
    public static CalibrationStatistics Read(Stream stream, string name)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanSeek)
            throw new ArgumentException("the stream must be seekable", nameof(stream));
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("calibration files are read on little-endian machines only");
        var r = new HashingReader(stream, name);
        Span<byte> magic = stackalloc byte[8];
        r.Bytes(magic, "magic");
        if (!magic.SequenceEqual(Magic))
            throw new ModelFormatException(name, "not a Squeeze calibration statistics file (bad magic)");
        uint version = r.U32("version");
        if (version is not (1 or Version))
            throw new ModelFormatException(name, $"calibration file version {version} is not supported (expected 1 or {Version})");
        ulong modelHash = r.U64("model identity");
        int descriptionLength = r.U16("model description length");
        if (descriptionLength > MaxDescriptionBytes)
            throw new ModelFormatException(name, $"model description of {descriptionLength} bytes (at most {MaxDescriptionBytes})");
        var descriptionBytes = new byte[descriptionLength];
        r.Bytes(descriptionBytes, "model description");
        string description;
        try
        {
            description = new UTF8Encoding(false, true).GetString(descriptionBytes);
        }
        catch (DecoderFallbackException)
        {
            throw new ModelFormatException(name, "the model description is not valid UTF-8");
        }
        ulong textHash = r.U64("text hash");
        long tokenCount = r.I64("token count");
        if (tokenCount < 0)
            throw new ModelFormatException(name, $"negative token count {tokenCount}");
        int contextLength = r.I32("context length");
        if (contextLength < 1 || contextLength > 1 << 24)
            throw new ModelFormatException(name, $"context length {contextLength} is out of range");
        int entryCount = r.I32("entry count");
        if (entryCount < 0 || entryCount > MaxEntries || (long)entryCount * (EntryHeaderBytes + 20) > r.Remaining)
            throw new ModelFormatException(name, $"{entryCount} entries do not fit the {r.Remaining} bytes left");

        var entries = new List<ActivationStatistics>(entryCount);
        (int Layer, int Kind) previous = (int.MinValue, int.MinValue);
        for (int k = 0; k < entryCount; k++)
        {
            string where = $"entry {k}";
            int layer = r.I32(where + " layer");
            int kindValue = r.I32(where + " kind");
            int width = r.I32(where + " width");
            long count = r.I64(where + " token count");
            byte flags = r.U8(where + " flags");
            if (layer < -1 || layer > MaxLayer)
                throw new ModelFormatException(name, $"{where}: layer {layer} is out of range");
            if (!Enum.IsDefined((LinearInput)kindValue))
                throw new ModelFormatException(name, $"{where}: unknown input kind {kindValue}");
            var kind = (LinearInput)kindValue;
            if ((layer == -1) != (kind == LinearInput.Output))
                throw new ModelFormatException(name, $"{where}: kind {kind} does not belong to layer {layer}");
            if ((layer, kindValue).CompareTo(previous) <= 0)
                throw new ModelFormatException(name, $"{where}: layer {layer} {kind} is out of order or repeated");
            previous = (layer, kindValue);
            if (width < 1 || width > MaxWidth)
                throw new ModelFormatException(name, $"{where}: width {width} is out of range (1 to {MaxWidth})");
            // A routed input sees each token once per expert it goes to.
            long rows = kind is LinearInput.ExpertFeedForward or LinearInput.ExpertFeedForwardDown ? (tokenCount > long.MaxValue / MaxExperts ? long.MaxValue : tokenCount * MaxExperts) : tokenCount;
            if (count < 0 || count > rows)
                throw new ModelFormatException(name, $"{where}: token count {count} is outside 0 to {rows}");
            if (flags > 1)
                throw new ModelFormatException(name, $"{where}: unknown flags 0x{flags:x2}");
            bool hasGram = flags == 1;
            if (hasGram && (long)width * width > Array.MaxLength)
                throw new ModelFormatException(name, $"{where}: a Gram matrix of width {width} is too large to load");
            var sums = ReadSums(r, name, where, layer, kind, width, hasGram, count);
            var experts = new List<ActivationStatistics?>();
            int expertCount = version == 1 ? 0 : r.I32(where + " expert count");
            if (expertCount != 0 && kind is not (LinearInput.ExpertFeedForward or LinearInput.ExpertFeedForwardDown))
                throw new ModelFormatException(name, $"{where}: {kind} is not a routed experts' input but holds {expertCount} experts");
            if (expertCount < 0 || expertCount > MaxExperts || 8L * expertCount > r.Remaining)
                throw new ModelFormatException(name, $"{where}: expert count {expertCount} is out of range (0 to {MaxExperts})");
            long routed = 0;
            for (int e = 0; e < expertCount; e++)
            {
                string expert = $"{where} expert {e}";
                long tokens = r.I64(expert + " token count");
                if (tokens < 0 || tokens > Math.Min(tokenCount, count - routed))
                    throw new ModelFormatException(name, $"{expert}: token count {tokens} is outside 0 to {Math.Min(tokenCount, count - routed)} (the file's tokens, the entry's rows not yet routed)");
                routed += tokens;
                experts.Add(tokens == 0 ? null : ReadSums(r, name, expert, layer, kind, width, hasGram, tokens));
            }
            if (expertCount > 0 && routed != count)
                throw new ModelFormatException(name, $"{where}: its experts hold {routed} tokens, the entry {count}");
            entries.Add(new ActivationStatistics(layer, kind, count, sums.SumSquares, sums.SumAbs, sums.MaxAbs, sums.Gram, experts));
        }
        ulong computed = r.Hash.GetCurrentHashAsUInt64();
        ulong stored = r.U64("checksum");
        if (stored != computed)
            throw new ModelFormatException(name, $"checksum mismatch (stored {stored:x16}, computed {computed:x16}): the file is corrupt");
        if (r.Remaining != 0)
            throw new ModelFormatException(name, $"{r.Remaining} unexpected bytes after the checksum");
        return new CalibrationStatistics(new ModelIdentity(modelHash, description), textHash, tokenCount, contextLength, entries);
    }

    // One set of sums (an entry's or an expert's) of `count` tokens: Σx², Σ|x|, max|x| and the Gram matrix when it has one.
    private static ActivationStatistics ReadSums(HashingReader r, string name, string where, int layer, LinearInput kind, int width, bool hasGram, long count)
    {
        long gramValues = hasGram ? (long)width * (width + 1) / 2 : 0;
        long needed = 20L * width + 8 * gramValues;
        if (needed > r.Remaining)
            throw new ModelFormatException(name, $"{where}: width {width}{(hasGram ? " with a Gram matrix" : "")} needs {needed} bytes, {r.Remaining} left (truncated?)");

        var sumSquares = new double[width];
        var sumAbs = new double[width];
        var maxAbs = new float[width];
        r.Bytes(MemoryMarshal.AsBytes(sumSquares.AsSpan()), where + " sums of squares");
        r.Bytes(MemoryMarshal.AsBytes(sumAbs.AsSpan()), where + " sums of magnitudes");
        r.Bytes(MemoryMarshal.AsBytes(maxAbs.AsSpan()), where + " maxima");
        CheckNonNegative(name, where, "sum of squares", sumSquares);
        CheckNonNegative(name, where, "sum of magnitudes", sumAbs);
        for (int j = 0; j < width; j++)
        {
            if (!float.IsFinite(maxAbs[j]) || maxAbs[j] < 0)
                throw new ModelFormatException(name, $"{where}: max |x| of column {j} is {maxAbs[j]}");
        }
        double[]? gram = null;
        if (hasGram)
        {
            gram = new double[(long)width * width];
            for (int i = 0; i < width; i++)
            {
                var row = gram.AsSpan(i * width + i, width - i);
                r.Bytes(MemoryMarshal.AsBytes(row), where + " Gram matrix");
                for (int j = 0; j < row.Length; j++)
                {
                    if (!double.IsFinite(row[j]))
                        throw new ModelFormatException(name, $"{where}: Gram value ({i}, {i + j}) is {row[j]}");
                    gram[(long)(i + j) * width + i] = row[j];
                }
                if (row[0] < 0)
                    throw new ModelFormatException(name, $"{where}: Gram diagonal ({i}, {i}) is negative");
            }
        }
        return new ActivationStatistics(layer, kind, count, sumSquares, sumAbs, maxAbs, gram);
    }

    private static void CheckNonNegative(string name, string where, string what, double[] values)
    {
        for (int j = 0; j < values.Length; j++)
        {
            if (!double.IsFinite(values[j]) || values[j] < 0)
                throw new ModelFormatException(name, $"{where}: {what} of column {j} is {values[j]}");
        }
    }

    // A little-endian writer that hashes what it writes.
    private sealed class HashingWriter(Stream stream)
    {
        public XxHash64 Hash { get; } = new();

        public void Bytes(ReadOnlySpan<byte> bytes)
        {
            Hash.Append(bytes);
            stream.Write(bytes);
        }

        public void U16(ushort v)
        {
            Span<byte> b = stackalloc byte[2];
            BinaryPrimitives.WriteUInt16LittleEndian(b, v);
            Bytes(b);
        }

        public void U32(uint v)
        {
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(b, v);
            Bytes(b);
        }

        public void I32(int v) => U32((uint)v);

        public void U64(ulong v)
        {
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(b, v);
            Bytes(b);
        }

        public void I64(long v) => U64((ulong)v);
    }

    // A little-endian reader that hashes what it reads and reports truncation as a format error.
    private sealed class HashingReader(Stream stream, string name)
    {
        public XxHash64 Hash { get; } = new();

        public long Remaining => stream.Length - stream.Position;

        public void Bytes(Span<byte> destination, string what)
        {
            int read = stream.ReadAtLeast(destination, destination.Length, throwOnEndOfStream: false);
            if (read < destination.Length)
                throw new ModelFormatException(name, $"truncated: the file ends inside the {what}");
            Hash.Append(destination);
        }

        public byte U8(string what)
        {
            Span<byte> b = stackalloc byte[1];
            Bytes(b, what);
            return b[0];
        }

        public ushort U16(string what)
        {
            Span<byte> b = stackalloc byte[2];
            Bytes(b, what);
            return BinaryPrimitives.ReadUInt16LittleEndian(b);
        }

        public uint U32(string what)
        {
            Span<byte> b = stackalloc byte[4];
            Bytes(b, what);
            return BinaryPrimitives.ReadUInt32LittleEndian(b);
        }

        public int I32(string what) => (int)U32(what);

        public ulong U64(string what)
        {
            Span<byte> b = stackalloc byte[8];
            Bytes(b, what);
            return BinaryPrimitives.ReadUInt64LittleEndian(b);
        }

        public long I64(string what) => (long)U64(what);
    }
}

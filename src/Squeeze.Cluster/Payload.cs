using System.IO.Hashing;

namespace Squeeze.Cluster;

/// <summary>
/// A work item's input or a result, as it travels: its bytes in parts of at most a part size each (the job's
/// <see cref="ClusterJob.PartBytes"/>), never one array end to end, so neither Orleans' message size nor a byte array's
/// 2 GB bound limits what an item carries. The kinds write one with <see cref="Write"/> and read it once with
/// <see cref="Read"/>, which lets go of each part as it passes.
/// </summary>
public sealed class Payload
{
    private readonly byte[]?[] parts;

    private Payload(byte[]?[] parts)
    {
        this.parts = parts;
        Length = parts.Sum(p => (long)p!.Length);
    }

    /// <summary>The payload's bytes, all parts together.</summary>
    public long Length { get; }

    /// <summary>How many parts it has: at least one (an empty payload is one empty part).</summary>
    public int PartCount => parts.Length;

    /// <summary>Part <paramref name="index"/>.</summary>
    /// <exception cref="InvalidOperationException">The payload was read, which let go of its parts.</exception>
    public byte[] Part(int index) => parts[index] ?? throw new InvalidOperationException($"part {index} of a payload read already");

    /// <summary>The payload made of <paramref name="parts"/>, in order (the parts as they arrived).</summary>
    public static Payload Of(IReadOnlyList<byte[]> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0 || parts.Any(p => p is null))
            throw new ArgumentException("a payload has at least one part, none of them null", nameof(parts));
        return new Payload([.. parts]);
    }

    /// <summary>XxHash64 of the payload's bytes, the same as of its parts joined end to end.</summary>
    public ulong Checksum()
    {
        var hash = new XxHash64();
        for (int i = 0; i < parts.Length; i++)
            hash.Append(Part(i));
        return hash.GetCurrentHashAsUInt64();
    }

    /// <summary>The bytes <paramref name="write"/> writes, in parts of at most <paramref name="partBytes"/> bytes.</summary>
    public static Payload Write(int partBytes, Action<BinaryWriter> write)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(partBytes);
        ArgumentNullException.ThrowIfNull(write);
        var stream = new PartWriter(partBytes);
        using (var writer = new BinaryWriter(stream))
            write(writer);
        return new Payload(stream.Parts());
    }

    /// <summary>Reads the payload once with <paramref name="read"/>, letting go of each part as it passes; the payload
    /// must be read to its end.</summary>
    /// <exception cref="InvalidDataException">Bytes are left over, or the payload ends before <paramref name="read"/> does.</exception>
    public T Read<T>(Func<BinaryReader, T> read)
    {
        ArgumentNullException.ThrowIfNull(read);
        var stream = new PartReader(this);
        T value;
        using (var reader = new BinaryReader(stream))
        {
            try
            {
                value = read(reader);
            }
            catch (EndOfStreamException e)
            {
                throw new InvalidDataException($"a payload of {Length} bytes ends early", e);
            }
        }
        return stream.Position == Length ? value : throw new InvalidDataException($"{Length - stream.Position} bytes left over after a payload");
    }

    // Appends to parts of `partBytes` each (the last one cut to its length).
    private sealed class PartWriter(int partBytes) : Stream
    {
        private readonly List<byte[]> full = [];
        private byte[]? current;
        private int used;

        public byte[][] Parts()
        {
            if (current is not null)
                full.Add(used == current.Length ? current : current.AsSpan(0, used).ToArray());
            else if (full.Count == 0)
                full.Add([]);
            current = null;
            return [.. full];
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            while (buffer.Length > 0)
            {
                if (current is null || used == current.Length)
                {
                    if (current is not null)
                        full.Add(current);
                    (current, used) = (new byte[partBytes], 0);
                }
                int n = Math.Min(buffer.Length, current.Length - used);
                buffer[..n].CopyTo(current.AsSpan(used));
                used += n;
                buffer = buffer[n..];
            }
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void WriteByte(byte value) => Write([value]);

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    // Reads the parts in order, releasing each one it has passed.
    private sealed class PartReader(Payload payload) : Stream
    {
        private int part;
        private int offset;
        private long position;

        public override int Read(Span<byte> buffer)
        {
            int read = 0;
            while (read < buffer.Length && part < payload.parts.Length)
            {
                var current = payload.Part(part);
                int n = Math.Min(buffer.Length - read, current.Length - offset);
                current.AsSpan(offset, n).CopyTo(buffer[read..]);
                (read, offset) = (read + n, offset + n);
                if (offset == current.Length)
                {
                    payload.parts[part++] = null;
                    offset = 0;
                }
            }
            position += read;
            return read;
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => payload.Length;
        public override long Position { get => position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

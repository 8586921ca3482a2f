using System.Buffers;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Squeeze.Tensors;

/// <summary>
/// A block of unmanaged bytes that tensors point into: either a read-only memory-mapped file or an owned allocation.
/// Lengths are 64-bit, so tensors over 2^31 elements work. Disposing releases the memory; tensors that point into it
/// must not be used afterwards.
/// </summary>
public abstract unsafe class NativeBuffer : IDisposable
{
    /// <summary>First byte.</summary>
    public byte* Pointer { get; protected set; }

    /// <summary>Length in bytes.</summary>
    public long Length { get; protected set; }

    /// <summary>Where the bytes come from, for error messages ("model.gguf", "memory").</summary>
    public abstract string Origin { get; }

    /// <summary>True for a mapped file, whose pages the kernel can drop and read again (a copy of its contents does not
    /// double the memory a process needs); false for allocated memory.</summary>
    public virtual bool IsMapped => false;

    /// <summary>The bytes [offset, offset + length) as a span; <paramref name="length"/> must fit an int.</summary>
    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"bytes [{offset}, {offset + length}) are outside {Origin} ({Length} bytes)");
        return new ReadOnlySpan<byte>(Pointer + offset, length);
    }

    /// <summary>
    /// The <paramref name="count"/> values of type <typeparamref name="T"/> that start at byte <paramref name="offset"/>,
    /// as memory over this buffer (no copy; the offset need not be aligned). The memory keeps the buffer reachable, so a
    /// weight holding it keeps its mapping; reading it after the buffer is disposed throws
    /// <see cref="ObjectDisposedException"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The values are not all inside the buffer.</exception>
    public ReadOnlyMemory<T> Memory<T>(long offset, int count)
        where T : unmanaged
    {
        if (offset < 0 || count < 0 || offset > Length - (long)count * sizeof(T))
            throw new ArgumentOutOfRangeException(nameof(offset), $"{count} values of {sizeof(T)} bytes at byte {offset} are outside {Origin} ({Length} bytes)");
        return new View<T>(this, offset, count).Memory;
    }

    /// <summary>Maps a whole file read-only.</summary>
    public static NativeBuffer MapFile(string path) => new MappedFileBuffer(path);

    /// <summary>
    /// <paramref name="length"/> bytes that <paramref name="fill"/> writes into a new temporary file in
    /// <paramref name="directory"/> (null: the system's), mapped read-only: data made at load (a checkpoint's experts
    /// stacked) that the system can page out instead of holding in private memory. Outside Windows the file's name is
    /// removed as soon as it is open, so nothing is left behind even when the process is killed; on Windows the file is
    /// deleted when the buffer is released.
    /// </summary>
    /// <exception cref="InvalidOperationException"><paramref name="fill"/> wrote another number of bytes.</exception>
    public static NativeBuffer MapTemporary(long length, Action<Stream> fill, string? directory = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        ArgumentNullException.ThrowIfNull(fill);
        string path = Path.Combine(directory ?? Path.GetTempPath(), $"squeeze-{Guid.NewGuid():N}.tmp");
        bool unlinkAtOnce = !OperatingSystem.IsWindows();
        var stream = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20,
            unlinkAtOnce ? FileOptions.None : FileOptions.DeleteOnClose);
        try
        {
            if (unlinkAtOnce)
                File.Delete(path);
            fill(stream);
            if (stream.Length != length)
                throw new InvalidOperationException($"{path}: {stream.Length} bytes written, {length} expected");
            stream.Flush();
            return new MappedFileBuffer(path, stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Allocates <paramref name="length"/> zeroed bytes, aligned to 64.</summary>
    public static NativeBuffer Allocate(long length) => new AllocatedBuffer(length);

    /// <summary>Unmaps or frees the memory; pointers into it are invalid afterwards.</summary>
    public void Dispose()
    {
        Release();
        GC.SuppressFinalize(this);
    }

    /// <summary>Unmaps or frees the memory; safe to call more than once.</summary>
    protected abstract void Release();

    /// <summary>Frees the memory of a buffer that was never disposed.</summary>
    ~NativeBuffer() => Release();

    /// <summary>Values inside a buffer as <see cref="Memory{T}"/>: spans over its pointer, read while it is not released.</summary>
    private sealed class View<T>(NativeBuffer buffer, long offset, int count) : MemoryManager<T>
        where T : unmanaged
    {
        public override Span<T> GetSpan() => new(Start(), count);

        public override MemoryHandle Pin(int elementIndex = 0) => new((T*)Start() + elementIndex);

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
        }

        private byte* Start()
        {
            byte* pointer = buffer.Pointer;
            return pointer != null || count == 0 ? pointer + offset : throw new ObjectDisposedException(buffer.Origin, $"{buffer.Origin} was released; the values viewing it can no longer be read");
        }
    }

    private sealed class MappedFileBuffer : NativeBuffer
    {
        private readonly string path;
        private MemoryMappedFile? file;
        private MemoryMappedViewAccessor? view;

        // The open file's length, not the path's: a symbolic link's own length is that of its target's name.
        public MappedFileBuffer(string path)
            : this(path, new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
        }

        // An open stream (a temporary file's is deleted on close), mapped; the mapping closes the stream when released.
        public MappedFileBuffer(string path, FileStream stream)
        {
            this.path = path;
            Length = stream.Length;
            if (Length == 0)
            {
                stream.Dispose();
                return;
            }
            try
            {
                file = MemoryMappedFile.CreateFromFile(stream, mapName: null, Length, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            }
            catch
            {
                stream.Dispose();
                throw;
            }
            view = file.CreateViewAccessor(0, Length, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            Pointer = p + view.PointerOffset;
        }

        public override string Origin => path;

        public override bool IsMapped => true;

        protected override void Release()
        {
            if (view is not null)
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
                view.Dispose();
                view = null;
            }
            file?.Dispose();
            file = null;
            Pointer = null;
        }
    }

    private sealed class AllocatedBuffer : NativeBuffer
    {
        public AllocatedBuffer(long length)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(length);
            Length = length;
            Pointer = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(length, 1), 64);
            NativeMemory.Clear(Pointer, (nuint)length);
        }

        public override string Origin => "memory";

        protected override void Release()
        {
            if (Pointer != null)
            {
                NativeMemory.AlignedFree(Pointer);
                Pointer = null;
            }
        }
    }
}

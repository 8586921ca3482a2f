namespace Squeeze.Formats.Gguf;

/// <summary>
/// A GGUF file being written (<see cref="GgufWriter.Begin"/>): header and tensor infos are in a temporary file with room
/// for every tensor; <see cref="WriteTensor"/> fills a tensor's place in any order, and <see cref="Commit"/> renames the
/// file over its destination once every tensor is in. Disposed without a commit, it deletes the temporary file, so an
/// interrupted job leaves nothing behind.
/// </summary>
public sealed class GgufPartialFile : IDisposable
{
    private readonly FileStream stream;
    private readonly string destination;
    private readonly Dictionary<string, (long Offset, long Length)> places;
    private readonly HashSet<string> written = new(StringComparer.Ordinal);
    private bool closed;

    internal GgufPartialFile(FileStream stream, string temporaryPath, string destination, Dictionary<string, (long Offset, long Length)> places,
        IEnumerable<string> alreadyWritten)
    {
        this.stream = stream;
        TemporaryPath = temporaryPath;
        this.destination = destination;
        this.places = places;
        foreach (string name in alreadyWritten)
        {
            if (!places.ContainsKey(name))
                throw new InvalidDataException($"{temporaryPath}: the file has no tensor '{name}'");
            written.Add(name);
        }
    }

    /// <summary>Keep the temporary file when disposed before <see cref="Commit"/> (a job that can be resumed from it).</summary>
    public bool KeepWhenUnfinished { get; set; }

    /// <summary>The temporary file the data goes into until <see cref="Commit"/>.</summary>
    public string TemporaryPath { get; }

    /// <summary>The tensors not written yet.</summary>
    public IEnumerable<string> Missing => places.Keys.Where(name => !written.Contains(name));

    /// <summary>Flushes what is written to disk, so it survives the process (a checkpoint of a resumable job).</summary>
    public void Flush() => stream.Flush(flushToDisk: true);

    /// <summary>Writes tensor <paramref name="name"/>'s encoded bytes into its place.</summary>
    /// <exception cref="ArgumentException">No such tensor, bytes of another length, or a tensor written twice.</exception>
    public void WriteTensor(string name, ReadOnlySpan<byte> data)
    {
        ObjectDisposedException.ThrowIf(closed, this);
        if (!places.TryGetValue(name, out var place))
            throw new ArgumentException($"the file has no tensor '{name}'", nameof(name));
        if (data.Length != place.Length)
            throw new ArgumentException($"tensor '{name}' takes {place.Length} bytes, not {data.Length}", nameof(data));
        if (!written.Add(name))
            throw new ArgumentException($"tensor '{name}' was already written", nameof(name));
        stream.Position = place.Offset;
        stream.Write(data);
    }

    /// <summary>Flushes the file to disk and renames it over the destination.</summary>
    /// <exception cref="InvalidOperationException">A tensor has not been written.</exception>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(closed, this);
        if (Missing.FirstOrDefault() is { } missing)
            throw new InvalidOperationException($"tensor '{missing}' was never written to {destination}");
        stream.Flush(flushToDisk: true);
        stream.Dispose();
        File.Move(TemporaryPath, destination, overwrite: true);
        closed = true;
    }

    /// <summary>Closes the file; before <see cref="Commit"/>, deletes the temporary file unless <see cref="KeepWhenUnfinished"/>.</summary>
    public void Dispose()
    {
        if (closed)
            return;
        stream.Dispose();
        if (!KeepWhenUnfinished)
            File.Delete(TemporaryPath);
        closed = true;
    }
}

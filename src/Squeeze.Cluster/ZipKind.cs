using Squeeze.Models;
using Squeeze.Zip;

namespace Squeeze.Cluster;

/// <summary>
/// <c>squeeze zip</c> over blocks: an item is one block of the input with the file's coding settings; the worker codes
/// it (<see cref="ZipBlockCoder"/>, the deterministic runtime) and sends back the block as it stands in the container,
/// which the client writes in block order: the archive is the same bytes as one machine's.
/// </summary>
internal sealed class ZipKind : IWorkKind
{
    public const string KindName = "zip-block";

    private readonly Lock gate = new();
    private (string Key, ZipBlockCoder Coder)? cached;

    public string Name => KindName;

    public static byte[] Request(ZipBlockSettings settings, byte[] block) => Wire.Write(w =>
    {
        w.Write(settings.Window);
        w.Write(settings.Overlap);
        w.Write(settings.SegmentBytes);
        w.Write(settings.Lookahead);
        w.Bytes(block);
    });

    public byte[] Run(IReadOnlyList<Model> models, byte[] payload, int threads, CancellationToken cancellationToken)
    {
        var (settings, block) = Wire.Read(payload, r => (new ZipBlockSettings(r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), threads), r.Bytes()));
        string key = $"{models[0].Source}|{settings}";
        lock (gate)
        {
            if (cached?.Key != key)
            {
                cached?.Coder.Dispose();
                cached = (key, new ZipBlockCoder(models[0], settings, cancellationToken));
            }
            var coded = cached.Value.Coder.Encode(block);
            return Wire.Write(w =>
            {
                w.Bytes(coded.Bytes);
                w.Write(coded.Overhead);
                w.Write(coded.Segments);
                w.Write(coded.Tokens);
                w.Write(coded.Escapes);
                w.Write(coded.Breaks);
                w.Write(coded.Bos);
                w.Write(coded.ModelBits);
                w.Write(coded.EscapeBits);
            });
        }
    }

    public static ZipBlock ReadResponse(byte[] payload) => Wire.Read(payload, r => new ZipBlock(r.Bytes(), r.ReadInt64(), r.ReadInt32(), r.ReadInt64(), r.ReadInt64(),
        r.ReadInt64(), r.ReadInt64(), r.ReadDouble(), r.ReadDouble()));
}

/// <summary><c>squeeze zip … --cluster</c>: the input's blocks coded by the workers, <see cref="BlocksAtOnce"/> at a time
/// (twice the workers, so none waits), written by the client in order.</summary>
public sealed class ClusterZipWorkers(ClusterJob job, ModelRef source, int blocksAtOnce, IProgress<ClusterProgress>? progress = null) : IZipWorkers
{
    /// <inheritdoc/>
    public int BlocksAtOnce => blocksAtOnce;

    /// <summary>What every item of the job cost so far.</summary>
    public List<ItemCost> Costs { get; } = [];

    /// <inheritdoc/>
    public IReadOnlyList<ZipBlock> Encode(Model model, ZipBlockSettings settings, IReadOnlyList<byte[]> blocks, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(blocks);
        var results = job.RunAsync(ZipKind.KindName, [source], [.. blocks.Select(b => ZipKind.Request(settings, b))], progress, cancellationToken).GetAwaiter().GetResult();
        Costs.AddRange(job.Costs);
        return [.. results.Select(ZipKind.ReadResponse)];
    }
}

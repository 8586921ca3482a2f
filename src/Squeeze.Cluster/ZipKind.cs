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

    public const string DecodeKindName = "unzip-block";

    private readonly Lock gate = new();
    private (string Key, ZipBlockCoder Coder)? cached;

    public string Name => KindName;

    public static Action<BinaryWriter> Request(ZipBlockSettings settings, byte[] block) => w =>
    {
        w.Write(settings.Window);
        w.Write(settings.Overlap);
        w.Write(settings.SegmentBytes);
        w.Write(settings.Lookahead);
        w.Bytes(block);
    };

    public Payload Run(IReadOnlyList<Model> models, Payload payload, int partBytes, int threads, CancellationToken cancellationToken)
    {
        var (settings, block) = payload.Read(r => (new ZipBlockSettings(r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), threads), r.Bytes()));
        string key = $"{models[0].Source}|{settings}";
        lock (gate)
        {
            if (cached?.Key != key)
            {
                cached?.Coder.Dispose();
                cached = (key, new ZipBlockCoder(models[0], settings, cancellationToken));
            }
            var coded = cached.Value.Coder.Encode(block);
            return Payload.Write(partBytes, w =>
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

    public static ZipBlock ReadResponse(Payload payload) => payload.Read(r => new ZipBlock(r.Bytes(), r.ReadInt64(), r.ReadInt32(), r.ReadInt64(), r.ReadInt64(),
        r.ReadInt64(), r.ReadInt64(), r.ReadDouble(), r.ReadDouble()));
}

/// <summary><c>squeeze unzip</c> over blocks: an item is one block as it stands in the container with the file's header;
/// the worker decodes it and sends back the original bytes, which the client writes in order and checks against the
/// header's checksum.</summary>
internal sealed class UnzipKind : IWorkKind
{
    private readonly Lock gate = new();
    private (string Key, ZipBlockDecoder Decoder)? cached;

    public string Name => ZipKind.DecodeKindName;

    public static Action<BinaryWriter> Request(SqzHeader header, int index, byte[] block) => w =>
    {
        w.Bytes(header.ToBytes());
        w.Write(index);
        w.Bytes(block);
    };

    public Payload Run(IReadOnlyList<Model> models, Payload payload, int partBytes, int threads, CancellationToken cancellationToken)
    {
        var (headerBytes, index, block) = payload.Read(r => (r.Bytes(), r.ReadInt32(), r.Bytes()));
        var header = SqzHeader.Read(new MemoryStream(headerBytes, writable: false), "the job's header");
        string key = $"{models[0].Source}|{Convert.ToHexString(headerBytes)}";
        lock (gate)
        {
            if (cached?.Key != key)
            {
                cached?.Decoder.Dispose();
                cached = (key, new ZipBlockDecoder(models[0], header, threads, cancellationToken));
            }
            var decoded = cached.Value.Decoder.Decode(block, header.ModelName, index);
            return Payload.Write(partBytes, w => w.Bytes(decoded));
        }
    }

    public static byte[] ReadResponse(Payload payload) => payload.Read(r => r.Bytes());
}

/// <summary><c>squeeze zip … --cluster</c> and <c>unzip … --cluster</c>: the blocks coded or decoded by the workers,
/// <see cref="BlocksAtOnce"/> at a time, written by the client in order.</summary>
public sealed class ClusterZipWorkers(ClusterJob job, ModelRef source, int blocksAtOnce, IProgress<ClusterProgress>? progress = null) : IZipWorkers
{
    /// <inheritdoc/>
    public int BlocksAtOnce => blocksAtOnce;


    /// <inheritdoc/>
    public IReadOnlyList<ZipBlock> Encode(Model model, ZipBlockSettings settings, IReadOnlyList<byte[]> blocks, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(blocks);
        var results = job.RunAsync(ZipKind.KindName, [source], blocks.Count, i => ZipKind.Request(settings, blocks[i]), progress, cancellationToken).GetAwaiter().GetResult();
        return [.. results.Select(ZipKind.ReadResponse)];
    }

    /// <inheritdoc/>
    public IReadOnlyList<byte[]> Decode(Model model, SqzHeader header, IReadOnlyList<byte[]> blocks, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(blocks);
        int first = decoded;
        var results = job.RunAsync(ZipKind.DecodeKindName, [source], blocks.Count, i => UnzipKind.Request(header, first + i, blocks[i]), progress, cancellationToken)
            .GetAwaiter().GetResult();
        decoded += blocks.Count;
        return [.. results.Select(UnzipKind.ReadResponse)];
    }

    private int decoded;
}

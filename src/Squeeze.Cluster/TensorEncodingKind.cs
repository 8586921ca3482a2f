using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using TensorReport = Squeeze.Compression.TensorReport;
using Squeeze.Tensors;

namespace Squeeze.Cluster;

/// <summary>
/// Compression of a named mix: an item is one tensor of a block (<see cref="TensorWork"/>: its plan entry, its input's
/// statistics with the Gram matrix, its AWQ-scaled values when the block has them) and the encoding options; the worker
/// encodes it against its own copy of the source model and sends back the bytes to write and the tensor's report.
/// </summary>
internal sealed class TensorEncodingKind : IWorkKind
{
    public const string KindName = "encode-tensor";

    public string Name => KindName;

    public static Action<BinaryWriter> Request(TensorWork work, CompressionOptions options) => w =>
    {
        w.Write((int)options.Method);
        w.Write(options.Damping);
        w.Write(options.RefinePasses);
        w.Write(options.ActivationOrder);
        w.Write(options.MeasureErrorBefore);
        w.Write((int)options.ScaleSearch);
        var t = work.Target;
        w.Write(t.Name);
        w.Longs(t.Shape);
        w.Write((int)t.SourceType);
        w.Write((int)t.Type);
        w.Write(t.Quantized);
        w.Write(t.Reason);
        w.Write(work.Input is not null);
        if (work.Input is { } s)
            w.Statistics(s);
        w.Write(work.Replaced is not null);
        if (work.Replaced is not null)
        {
            w.Write((int)work.ReplacedType!.Value);
            w.Bytes(work.Replaced);
        }
    };

    public Payload Run(IReadOnlyList<Model> models, Payload payload, int partBytes, int threads, CancellationToken cancellationToken)
    {
        var (options, work) = payload.Read(r =>
        {
            var options = new CompressionOptions
            {
                Method = (CompressionMethod)r.ReadInt32(),
                Damping = r.ReadDouble(),
                RefinePasses = r.ReadInt32(),
                ActivationOrder = r.ReadBoolean(),
                MeasureErrorBefore = r.ReadBoolean(),
                ScaleSearch = (ScaleSearch)r.ReadInt32(),
                Threads = threads,
            };
            var target = new TensorPlan(r.ReadString(), r.Longs(), (GgmlType)r.ReadInt32(), (GgmlType)r.ReadInt32(), r.ReadBoolean(), r.ReadString());
            var input = r.ReadBoolean() ? r.Statistics() : null;
            GgmlType? replacedType = null;
            byte[]? replaced = null;
            if (r.ReadBoolean())
                (replacedType, replaced) = ((GgmlType)r.ReadInt32(), r.Bytes());
            return (options, new TensorWork(target, input, replacedType, replaced));
        });
        var encoded = work.Encode(models[0], options, cancellationToken);
        return Payload.Write(partBytes, w => Response(w, encoded));
    }

    private static void Response(BinaryWriter w, EncodedTensorData encoded)
    {
        w.Bytes(encoded.Data);
        var t = encoded.Report;
        w.Write(t.Name);
        w.Write(t.SourceType);
        w.Write(t.Format);
        w.Longs(t.Shape);
        w.Write(t.Bytes);
        w.Write(t.BitsPerWeight);
        w.Write(t.Encoding);
        w.Write(t.ErrorMetric);
        Optional(w, t.ErrorBefore);
        w.Write(t.ErrorAfter);
        Optional(w, t.SwapKld);
        w.Write(t.Reason);
        Optional(w, t.Seconds);
    }

    public static EncodedTensorData ReadResponse(Payload payload) => payload.Read(r => new EncodedTensorData(r.Bytes(),
        new TensorReport(r.ReadString(), r.ReadString(), r.ReadString(), r.Longs(), r.ReadInt64(), r.ReadDouble(), r.ReadString(), r.ReadString(),
            Optional(r), r.ReadDouble(), Optional(r), r.ReadString(), Optional(r))));

    private static void Optional(BinaryWriter w, double? value)
    {
        w.Write(value.HasValue);
        if (value.HasValue)
            w.Write(value.Value);
    }

    private static double? Optional(BinaryReader r) => r.ReadBoolean() ? r.ReadDouble() : null;
}

/// <summary>
/// <c>squeeze compress … --cluster</c>: each block's tensors encoded as work items on the cluster
/// (<see cref="CompressionOptions.Workers"/>); the client calibrates, writes the file and runs each block to feed the
/// next, as on one machine, so the file is the same bytes.
/// </summary>
public sealed class ClusterTensorWorkers(ClusterJob job, ModelRef source, IProgress<ClusterProgress>? progress = null) : ITensorWorkers
{

    /// <inheritdoc/>
    public void Encode(BlockWork block, Action<int, EncodedTensorData> done, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(block);
        ArgumentNullException.ThrowIfNull(done);
        var results = job.RunAsync(TensorEncodingKind.KindName, [source], block.Targets.Count, i => TensorEncodingKind.Request(block.Item(i), block.Options), progress,
            cancellationToken).GetAwaiter().GetResult();
        for (int i = 0; i < results.Length; i++)
            done(i, TensorEncodingKind.ReadResponse(results[i]));
    }
}

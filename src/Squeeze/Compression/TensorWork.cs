using Squeeze.Calibration;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;

namespace Squeeze.Compression;

/// <summary>
/// Where the tensors of one block of a named-mix compression are encoded (<see cref="CompressionOptions.Workers"/>):
/// <see cref="TensorWorkers.InProcess"/> encodes them here one after another; another implementation may hand each
/// tensor to another machine as a self-contained <see cref="TensorWork"/>. A tensor's encoding depends on nothing but
/// its item and the source model, so the file written is the same bytes wherever the items ran.
/// </summary>
public interface ITensorWorkers
{
    /// <summary>Encodes every target of <paramref name="block"/>, calling <paramref name="done"/> with the target's index
    /// and its encoding on the calling thread as each finishes, in any order.</summary>
    void Encode(BlockWork block, Action<int, EncodedTensorData> done, CancellationToken cancellationToken);
}

/// <summary>The encoders of tensors that ship with the library.</summary>
public static class TensorWorkers
{
    /// <summary>Every tensor of a block encoded in this process, in plan order, with one <see cref="TensorEncoder"/>
    /// (whose prepared Hessians the tensors sharing an input share).</summary>
    public static ITensorWorkers InProcess { get; } = new InProcessWorkers();

    private sealed class InProcessWorkers : ITensorWorkers
    {
        public void Encode(BlockWork block, Action<int, EncodedTensorData> done, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(block);
            ArgumentNullException.ThrowIfNull(done);
            var encoder = block.Encoder(cancellationToken);
            for (int i = 0; i < block.Targets.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                done(i, encoder.Encode(block.Targets[i]));
            }
        }
    }
}

/// <summary>The tensors of one block to encode, with what their encodings read: the block's model (the source with the
/// block's AWQ-scaled tensors in place), its calibration statistics, and the options.</summary>
public sealed class BlockWork
{
    private readonly Model model;
    private readonly IReadOnlyDictionary<(int, LinearInput), ActivationStatistics>? statistics;
    private readonly IReadOnlyDictionary<string, (GgmlType Type, byte[] Bytes)> replaced;

    internal BlockWork(Model model, IReadOnlyDictionary<(int, LinearInput), ActivationStatistics>? statistics, CompressionOptions options,
        IReadOnlyList<TensorPlan> targets, IReadOnlyDictionary<string, (GgmlType Type, byte[] Bytes)> replaced)
    {
        this.model = model;
        this.statistics = statistics;
        this.replaced = replaced;
        Options = options;
        Targets = targets;
    }

    /// <summary>The tensors to encode, in plan order.</summary>
    public IReadOnlyList<TensorPlan> Targets { get; }

    /// <summary>How they are encoded.</summary>
    public CompressionOptions Options { get; }

    internal TensorEncoder Encoder(CancellationToken cancellationToken) => new(model, statistics, Options, cancellationToken);

    /// <summary>Target <paramref name="index"/> as a self-contained item: its plan entry, the statistics of its input, and
    /// its values when the block replaced them (AWQ's scaled weights and norms).</summary>
    public TensorWork Item(int index)
    {
        var target = Targets[index];
        var input = Encoder(CancellationToken.None).Input(target.Name);
        return replaced.TryGetValue(target.Name, out var values)
            ? new TensorWork(target, input, values.Type, values.Bytes)
            : new TensorWork(target, input, null, null);
    }
}

/// <summary>
/// One tensor's encoding as an independent work item: the plan entry, the statistics of the tensor's input (or null),
/// and, when the block replaced the tensor's values before encoding (AWQ), those values in <paramref name="ReplacedType"/>.
/// </summary>
public sealed record TensorWork(TensorPlan Target, ActivationStatistics? Input, GgmlType? ReplacedType, byte[]? Replaced)
{
    /// <summary>Encodes the item against <paramref name="source"/>, the model the job compresses (the same one, as its
    /// fingerprint proves): the same bytes and report as the in-process encoder gives for this tensor.</summary>
    public EncodedTensorData Encode(Model source, CompressionOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        using var model = Replaced is null ? null : source.WithTensors(new Dictionary<string, (GgmlType, byte[])>(StringComparer.Ordinal)
        {
            [Target.Name] = (ReplacedType ?? throw new InvalidOperationException($"{Target.Name}: replaced values without their type"), Replaced),
        });
        var statistics = new Dictionary<(int, LinearInput), ActivationStatistics>();
        if (Input is not null)
            statistics[(Input.Layer, Input.Kind)] = Input;
        return new TensorEncoder(model ?? source, (IReadOnlyDictionary<(int, LinearInput), ActivationStatistics>)statistics, options, cancellationToken).Encode(Target);
    }
}

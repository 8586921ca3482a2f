using System.Diagnostics;
using System.Runtime.InteropServices;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using Squeeze.Evaluation;
using Squeeze.Generation;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tuning;

/// <summary>What <see cref="Tuner.Tune"/> may move.</summary>
public enum TuningScope
{
    /// <summary>The RMSNorm weights only (stored in f32 by every format).</summary>
    Norms,

    /// <summary>The norms and the continuous parameters of the compressed weights: uniform group scales and mins,
    /// vector codebooks and row scales (codes stay as they are; so does every size).</summary>
    Weights,
}

/// <summary>Settings of <see cref="Tuner.Tune"/>.</summary>
public sealed record TuningOptions
{
    /// <summary>Which parameters move: the RMSNorm weights alone, or also the compressed weights' continuous parameters.</summary>
    public TuningScope Scope { get; init; } = TuningScope.Weights;

    /// <summary>Tokens per chunk (sequence) of calibration text.</summary>
    public int ContextLength { get; init; } = 256;

    /// <summary>Calibration tokens to train on, in whole chunks after the held-out ones (0: the whole text).</summary>
    public long Tokens { get; init; }

    /// <summary>Tokens of text sampled from the original model (temperature 1, from BOS, in chunks) to train on in each
    /// epoch besides the calibration text, new samples every epoch: data the teacher itself wrote, as LLM-QAT distils,
    /// which tuning cannot overfit as it overfits a short calibration text.</summary>
    public long SampledTokens { get; init; }

    /// <summary>Chunks at the start of the text kept out of training; they are scored four times per epoch and the result
    /// is the parameters that scored lowest.</summary>
    public int HeldOutChunks { get; init; } = 4;

    /// <summary>Passes over the training chunks.</summary>
    public int Epochs { get; init; } = 2;

    /// <summary>Chunks per Adam step.</summary>
    public int ChunksPerStep { get; init; } = 4;

    /// <summary>Adam's first step size, in units of each parameter's own scale (a norm weight or a group scale moves
    /// relative to its initial value, a codebook entry relative to the codebook's spread); it decays to 0 along a cosine
    /// over all steps. When the first held-out score (a quarter epoch in) is no better than the compressed model's,
    /// tuning starts over at a third of the step size, up to <see cref="Restarts"/> times: a model already close to the
    /// original wants smaller steps than one far from it.</summary>
    public double LearningRate { get; init; } = 0.003;

    /// <summary>How many times tuning may start over at a third of the step size (see <see cref="LearningRate"/>).</summary>
    public int Restarts { get; init; } = 2;

    /// <summary>Seed of the chunk order.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>Threads of the forward and backward passes.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;
}

/// <summary>Where <see cref="Tuner.Tune"/> is: steps done of all, and the last step's mean KLD on its chunks.</summary>
public readonly record struct TuningProgress(int Step, int Steps, double Kld);

/// <summary>What <see cref="Tuner.Tune"/> found.</summary>
/// <param name="Norms">Every RMSNorm weight vector, by tensor name, as chosen (tuned, or the compressed model's own when no epoch improved).</param>
/// <param name="Weights">The tuned linear weights (same representation, codes and size as the compressed model's); empty when
/// no epoch improved or the scope was <see cref="TuningScope.Norms"/>.</param>
/// <param name="HeldOutKldBefore">Mean KLD against the original model on the held-out chunks with the compressed model as
/// given (the second half of each chunk scored, as <see cref="Evaluator"/> does), computed in f32 on the decoded weights.</param>
/// <param name="HeldOutKldAfter">The same for the result.</param>
/// <param name="BestStep">The step after which the kept parameters were scored; 0 when none improved on the compressed model.</param>
/// <param name="Steps">Optimizer steps of one run: epochs × steps per epoch.</param>
/// <param name="Parameters">Number of scalar parameters tuned.</param>
/// <param name="TrainingTokens">Tokens trained on over all epochs (the calibration chunks once per epoch, and each epoch's samples).</param>
/// <param name="LearningRate">The first step size of the run whose parameters were scored (less than the options' after a restart).</param>
/// <param name="Seconds">Wall time of the tuning.</param>
public sealed record TuningResult(IReadOnlyDictionary<string, float[]> Norms, IReadOnlyList<LinearWeight> Weights, double HeldOutKldBefore, double HeldOutKldAfter,
    int BestStep, int Steps, long Parameters, long TrainingTokens, double LearningRate, double Seconds)
{
    /// <summary>The norms as tensor replacements for <paramref name="model"/>, each in the type it has there (F32, F16 or BF16).</summary>
    /// <exception cref="NotSupportedException">A norm of the model is stored in another type.</exception>
    public IReadOnlyDictionary<string, (GgmlType Type, byte[] Bytes)> NormTensors(Model model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var tensors = new Dictionary<string, (GgmlType, byte[])>(StringComparer.Ordinal);
        foreach (var (name, values) in Norms)
        {
            var type = model[name].Type;
            tensors[name] = type switch
            {
                GgmlType.F32 => (type, MemoryMarshal.AsBytes(values.AsSpan()).ToArray()),
                GgmlType.F16 => (type, MemoryMarshal.AsBytes(values.Select(HalfConversions.F32ToF16).ToArray().AsSpan()).ToArray()),
                GgmlType.BF16 => (type, MemoryMarshal.AsBytes(values.Select(HalfConversions.F32ToBf16).ToArray().AsSpan()).ToArray()),
                _ => throw new NotSupportedException($"{model.Source}: norm '{name}' is stored as {type}; tuned norms are written as F32, F16 or BF16"),
            };
        }
        return tensors;
    }
}

/// <summary>
/// Tuning of a compressed model against the original, end to end: Adam minimises the KL divergence from the original
/// model's next-token distributions on calibration text over parameters that cost nothing to change — the RMSNorm
/// weights, which every format stores exactly (the idea of "norm tweaking", with the model's own output as the
/// objective), and, in scope <see cref="TuningScope.Weights"/>, the continuous parameters of the compressed weights
/// (group scales and mins, vector codebooks and row scales; the codes stay fixed, as in EfficientQAT's end-to-end
/// training of quantization parameters). Every per-tensor encoder fits a tensor alone; this sees how their errors add
/// up through the layers and the classifier. Chunks at the start of the text are held out and decide which of the
/// parameters scored along the way are kept; if none beats the compressed model, it is returned unchanged. Deterministic for a seed and thread count.
/// </summary>
public static class Tuner
{
    /// <summary>Tunes <paramref name="compressed"/> against <paramref name="original"/> on calibration <paramref name="text"/> and returns the
    /// parameters kept (the compressed model is not changed; <see cref="Apply"/> makes the tuned model). <paramref name="cancellationToken"/>
    /// is checked before each step.</summary>
    public static TuningResult Tune(Model original, Model compressed, string text, TuningOptions? options = null, IProgress<TuningProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(original);
        ArgumentNullException.ThrowIfNull(compressed);
        ArgumentNullException.ThrowIfNull(text);
        options ??= new TuningOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.ContextLength, 4, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.HeldOutChunks, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Epochs, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.ChunksPerStep, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.Tokens, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.Restarts, nameof(options));
        if (!(options.LearningRate > 0))
            throw new ArgumentOutOfRangeException(nameof(options), $"learning rate {options.LearningRate} must be positive");
        if (original.Config != compressed.Config)
            throw new ArgumentException($"{compressed.Source} is not a compression of {original.Source}: their configurations differ", nameof(compressed));
        int ctx = Math.Min(options.ContextLength, original.Config.ContextLength);
        long needed = TuningGraph.Bytes(original.Config, ctx);
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (needed > available / 2)
            throw new InvalidOperationException($"tuning {original.Source} needs about {needed / (1 << 20):N0} MiB for its f32 weights, their gradients and one chunk's activations; " +
                $"this process may use {available / (1 << 20):N0} MiB, and tuning keeps to half of that");
        var clock = Stopwatch.StartNew();

        int[] tokens = original.Tokenizer.Encode(text, original.Vocabulary.AddBos);
        int whole = tokens.Length / ctx - options.HeldOutChunks;
        int training = options.Tokens > 0 ? (int)Math.Min(whole, options.Tokens / ctx) : whole;
        if (training < 1)
            throw new ArgumentException($"the calibration text has {tokens.Length:N0} tokens: {tokens.Length / ctx} whole chunks of {ctx}; tuning needs " +
                $"{options.HeldOutChunks} held out and at least one to train on", nameof(text));
        int[] Chunk(int c)
        {
            var chunk = tokens.AsSpan(c * ctx, ctx).ToArray();
            if (original.Vocabulary.AddBos)
                chunk[0] = original.Vocabulary.BosId;
            return chunk;
        }
        int threads = Math.Max(1, options.Threads), vocab = original.Config.VocabSize;
        using var teacher = new Transformer(original, new RuntimeOptions { Threads = threads, ContextLength = ctx, BatchSize = ctx });
        var heldOut = Enumerable.Range(0, options.HeldOutChunks).Select(Chunk).ToArray();
        var calibrationChunks = Enumerable.Range(options.HeldOutChunks, training).Select(Chunk).ToArray();
        int sampledChunks = (int)(options.SampledTokens / ctx);
        float[] TeacherLogProbs(int[] chunk, float[] destination)
        {
            teacher.Reset();
            var logits = teacher.Forward(chunk, logitCount: chunk.Length);
            for (int t = 0; t < chunk.Length; t++)
                LogSoftmax.Compute(logits.Slice(t * vocab, vocab), destination.AsSpan(t * vocab, vocab));
            return destination;
        }
        var heldOutTeacher = heldOut.Select(c => TeacherLogProbs(c, new float[c.Length * vocab])).ToArray();

        var graph = new TuningGraph(compressed, ctx, threads, options.Scope == TuningScope.Weights);
        // Every tuned quantity is value = initial + unit · δ, δ starting at 0: norms with unit = the initial value (a
        // relative change), weights with the units their representation gives.
        var groups = new List<Group>();
        foreach (var norm in graph.Norms)
            groups.Add(new Group(norm.Values, norm.Values.Select(Math.Abs).ToArray()));
        foreach (var (weight, _) in graph.Tunables)
            groups.Add(new Group(weight.Values, weight.Units));
        int scoredFrom = ctx / 2, scoredCount = ctx - 1 - scoredFrom;
        double HeldOutKld()
        {
            double sum = 0;
            for (int c = 0; c < heldOut.Length; c++)
                sum += graph.Forward(heldOut[c], heldOutTeacher[c], scoredFrom, ctx - 1);
            return sum / (heldOut.Length * (double)scoredCount);
        }

        double before = HeldOutKld(), best = before;
        var bestValues = groups.Select(g => g.Values.ToArray()).ToArray();
        int bestStep = 0;
        var gradients = groups.Select(g => new float[g.Values.Length]).ToArray();
        var teacherBuffer = new float[ctx * vocab];
        int chunksPerEpoch = calibrationChunks.Length + sampledChunks;
        int stepsPerEpoch = (chunksPerEpoch + options.ChunksPerStep - 1) / options.ChunksPerStep, steps = stepsPerEpoch * options.Epochs;
        int checkEvery = Math.Max(1, stepsPerEpoch / 4);
        // Each epoch's samples, drawn once: a restart trains on the same text.
        var samples = new int[options.Epochs][][];
        double learningRate = options.LearningRate;
        for (int restart = 0; !Train(learningRate, canRestart: restart < options.Restarts); restart++)
            learningRate /= 3;

        // One run from the compressed model's values at first step size rate; false when it stopped at the first
        // held-out score, which was no better than the compressed model's, to start over (the values are restored).
        bool Train(double rate, bool canRestart)
        {
            var adam = new Adam(groups.Select(g => g.Values.Length).ToArray());
            var random = new Random(options.Seed);
            int step = 0;
            for (int epoch = 1; epoch <= options.Epochs; epoch++)
            {
                var train = calibrationChunks.Concat(samples[epoch - 1] ??= SampleChunks(teacher, sampledChunks, ctx, options.Seed + epoch)).ToArray();
                var order = Enumerable.Range(0, train.Length).ToArray();
                random.Shuffle(order);
                for (int first = 0; first < order.Length; first += options.ChunksPerStep)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int count = Math.Min(options.ChunksPerStep, order.Length - first);
                    graph.ClearGradients();
                    double kld = 0;
                    for (int i = first; i < first + count; i++)
                    {
                        var chunk = train[order[i]];
                        kld += graph.Forward(chunk, TeacherLogProbs(chunk, teacherBuffer), 0, ctx);
                        graph.Backward(1f / (count * ctx));
                    }
                    // Gradients with respect to δ: those with respect to the values times the units.
                    int norms = graph.Norms.Count;
                    for (int n = 0; n < norms; n++)
                        TensorPrimitives.Multiply(graph.Norms[n].Gradient, groups[n].Units, gradients[n]);
                    for (int w = 0; w < graph.Tunables.Count; w++)
                    {
                        var g = gradients[norms + w];
                        Array.Clear(g);
                        graph.Tunables[w].Weight.Backward(graph.Tunables[w].Gradient, g);
                        TensorPrimitives.Multiply(g, groups[norms + w].Units, g);
                    }
                    adam.Step(gradients, rate * 0.5 * (1 + Math.Cos(Math.PI * step / steps)));
                    for (int p = 0; p < groups.Count; p++)
                        groups[p].Apply(adam.Parameters[p]);
                    graph.Refresh();
                    step++;
                    progress?.Report(new TuningProgress(step, steps, kld / (count * ctx)));
                    if (step % checkEvery != 0 && step != steps)
                        continue;
                    double kldHeldOut = HeldOutKld();
                    if (kldHeldOut < best)
                    {
                        best = kldHeldOut;
                        bestStep = step;
                        for (int p = 0; p < groups.Count; p++)
                            groups[p].Values.AsSpan().CopyTo(bestValues[p]);
                    }
                    else if (bestStep == 0 && canRestart)
                    {
                        for (int p = 0; p < groups.Count; p++)
                            bestValues[p].AsSpan().CopyTo(groups[p].Values);
                        graph.Refresh();
                        return false;
                    }
                }
            }
            return true;
        }
        for (int p = 0; p < groups.Count; p++)
            bestValues[p].AsSpan().CopyTo(groups[p].Values);
        var tunedNorms = graph.Norms.ToDictionary(n => n.Name, n => n.Values.ToArray(), StringComparer.Ordinal);
        var weights = bestStep == 0 ? [] : graph.Tunables.Select(t => t.Weight.Build()).ToList();
        return new TuningResult(tunedNorms, weights, before, best, bestStep, steps, groups.Sum(g => (long)g.Values.Length), (long)chunksPerEpoch * ctx * options.Epochs,
            learningRate, clock.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// <paramref name="count"/> chunks of <paramref name="ctx"/> tokens sampled from the runtime's model at temperature 1,
    /// each from BOS (a sampled BOS starts a new document inside the chunk, as in a calibration text), run in lockstep
    /// batches of up to 32 sequences. Seeded.
    /// </summary>
    private static int[][] SampleChunks(Transformer runtime, int count, int ctx, int seed)
    {
        var chunks = new int[count][];
        int vocab = runtime.Model.Config.VocabSize, bos = runtime.Model.Vocabulary.BosId;
        var sampler = new Sampler(new SamplingOptions { Temperature = 1f, Seed = seed });
        for (int first = 0; first < count; first += SampleBatch)
        {
            int n = Math.Min(SampleBatch, count - first);
            var caches = Enumerable.Range(0, n).Select(_ => runtime.NewCache(ctx)).ToArray();
            var rows = Enumerable.Range(0, n).ToArray();
            var positions = new int[n];
            var next = new int[n];
            for (int i = 0; i < n; i++)
            {
                chunks[first + i] = new int[ctx];
                chunks[first + i][0] = next[i] = bos;
            }
            for (int pos = 0; pos < ctx - 1; pos++)
            {
                Array.Fill(positions, pos);
                var logits = runtime.ForwardSequences(next, caches, positions, rows);
                for (int i = 0; i < n; i++)
                    chunks[first + i][pos + 1] = next[i] = sampler.Sample(logits.Slice(i * vocab, vocab));
            }
        }
        return chunks;
    }

    private const int SampleBatch = 32;

    /// <summary>The compressed model with the tuned norms and weights in place of its own. It owns the norms' copies and
    /// shares everything else, so the compressed model must outlive it.</summary>
    public static Model Apply(Model compressed, TuningResult result)
    {
        ArgumentNullException.ThrowIfNull(compressed);
        ArgumentNullException.ThrowIfNull(result);
        var norms = result.NormTensors(compressed);
        var owned = new List<IDisposable>();
        var tensors = new List<Tensor>();
        var replaced = result.Weights.Select(w => w.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var t in compressed.Tensors)
        {
            if (replaced.Contains(t.Name))
                continue;
            if (!norms.TryGetValue(t.Name, out var norm))
            {
                tensors.Add(t);
                continue;
            }
            var buffer = NativeBuffer.Allocate(norm.Bytes.Length);
            owned.Add(buffer);
            unsafe
            {
                norm.Bytes.CopyTo(new Span<byte>(buffer.Pointer, norm.Bytes.Length));
            }
            tensors.Add(new Tensor(t.Name, norm.Type, t.Shape, buffer, 0));
        }
        var weights = compressed.Weights.Where(w => !replaced.Contains(w.Name)).Concat(result.Weights).ToList();
        return new Model(compressed.Config, compressed.Vocabulary, tensors, compressed.Source, owned, weights);
    }

    /// <summary>Values tuned as initial + unit · δ.</summary>
    private sealed class Group(float[] values, float[] units)
    {
        private readonly float[] start = values.ToArray();

        public float[] Values => values;
        public float[] Units => units;

        public void Apply(float[] delta)
        {
            for (int i = 0; i < values.Length; i++)
                values[i] = start[i] + units[i] * delta[i];
        }
    }

    /// <summary>Adam (Kingma and Ba) on a list of parameter vectors, all starting at zero.</summary>
    private sealed class Adam(int[] lengths)
    {
        private const double Beta1 = 0.9, Beta2 = 0.999, Epsilon = 1e-8;
        private readonly float[][] m = lengths.Select(n => new float[n]).ToArray();
        private readonly float[][] v = lengths.Select(n => new float[n]).ToArray();
        private int t;

        public float[][] Parameters { get; } = lengths.Select(n => new float[n]).ToArray();

        public void Step(float[][] gradients, double learningRate)
        {
            t++;
            double c1 = 1 - Math.Pow(Beta1, t), c2 = 1 - Math.Pow(Beta2, t);
            for (int p = 0; p < Parameters.Length; p++)
            {
                for (int i = 0; i < Parameters[p].Length; i++)
                {
                    double g = gradients[p][i];
                    m[p][i] = (float)(Beta1 * m[p][i] + (1 - Beta1) * g);
                    v[p][i] = (float)(Beta2 * v[p][i] + (1 - Beta2) * g * g);
                    Parameters[p][i] -= (float)(learningRate * (m[p][i] / c1) / (Math.Sqrt(v[p][i] / c2) + Epsilon));
                }
            }
        }
    }
}

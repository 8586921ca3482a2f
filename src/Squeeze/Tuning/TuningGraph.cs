using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using Squeeze.Evaluation;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Weights;

namespace Squeeze.Tuning;

/// <summary>
/// The forward pass of <see cref="Runtime.Transformer"/> in plain f32 on decoded weights, keeping what the backward pass
/// needs, and that backward pass: the gradient of the KL divergence from a teacher's next-token distributions with
/// respect to every RMSNorm weight vector (attention, feed-forward, output, and Qwen3's per-head q/k norms) and, when
/// asked, to every linear weight whose representation has a <see cref="TunableWeight"/> (through the dense weight's
/// gradient). Each linear weight is decoded once and kept with its transpose for the input gradients; a tuned one is
/// decoded again by <see cref="Refresh"/>. One sequence at a time.
/// </summary>
internal sealed class TuningGraph
{
    private readonly ModelConfig config;
    private readonly int contextLength;
    private readonly int threads;
    private readonly Block[] blocks;
    private readonly Dense embedding;   // [vocab, dim], rows read for the input tokens
    private readonly Dense classifier;  // [vocab, dim] (the embedding again when tied)
    private readonly float[] ropeCos, ropeSin, ropeSinBack; // [contextLength, headDim / 2]; ropeSinBack = −ropeSin rotates back

    /// <summary>The RMSNorm weights being tuned (the graph reads their values on every pass), with their gradients.</summary>
    public IReadOnlyList<Norm> Norms { get; }

    /// <summary>The linear weights the graph differentiates (empty unless made with tuneWeights).</summary>
    public IReadOnlyList<(TunableWeight Weight, float[] Gradient)> Tunables => tunables;

    private readonly List<(TunableWeight, float[])> tunables = [];
    private readonly List<Dense> tuned = [];

    public TuningGraph(Model model, int contextLength, int threads, bool tuneWeights)
    {
        config = model.Config;
        if (config.ForwardVariant.Length > 0)
            throw new NotSupportedException($"{model.Source}: tuning differentiates the Llama/Qwen forward pass; this model's ({config.Architecture}: {config.ForwardVariant}) is not supported");
        this.contextLength = contextLength;
        this.threads = Math.Max(1, threads);
        var norms = new List<Norm>();
        Norm ReadNorm(string name, int length)
        {
            var norm = new Norm(name, Transformer.ReadVector(model, name, length));
            norms.Add(norm);
            return norm;
        }

        Dense Linear(string name, bool transpose = true)
        {
            var dense = new Dense(model.Weight(name), transpose, tuneWeights);
            if (dense.Tunable is not null)
            {
                tuned.Add(dense);
                tunables.Add((dense.Tunable, dense.Gradient!));
            }
            return dense;
        }
        bool tied = !model.Contains(TensorNames.Output);
        embedding = Linear(TensorNames.TokenEmbedding, transpose: tied);
        classifier = tied ? embedding : Linear(TensorNames.Output);
        blocks = new Block[config.LayerCount];
        for (int l = 0; l < blocks.Length; l++)
        {
            blocks[l] = new Block
            {
                AttentionNorm = ReadNorm(TensorNames.AttentionNorm(l), config.Dim),
                QueryNorm = model.TryGetTensor(TensorNames.QueryNorm(l), out _) ? ReadNorm(TensorNames.QueryNorm(l), config.HeadDim) : null,
                KeyNorm = model.TryGetTensor(TensorNames.KeyNorm(l), out _) ? ReadNorm(TensorNames.KeyNorm(l), config.HeadDim) : null,
                FeedForwardNorm = ReadNorm(TensorNames.FeedForwardNorm(l), config.Dim),
                Query = Linear(TensorNames.Query(l)),
                Key = Linear(TensorNames.Key(l)),
                Value = Linear(TensorNames.Value(l)),
                Output = Linear(TensorNames.AttentionOutput(l)),
                Gate = Linear(TensorNames.Gate(l)),
                Up = Linear(TensorNames.Up(l)),
                Down = Linear(TensorNames.Down(l)),
                QueryBias = Transformer.ReadOptionalVector(model, TensorNames.QueryBias(l), config.QDim),
                KeyBias = Transformer.ReadOptionalVector(model, TensorNames.KeyBias(l), config.KvDim),
                ValueBias = Transformer.ReadOptionalVector(model, TensorNames.ValueBias(l), config.KvDim),
                Saved = new Saved(config, contextLength),
            };
        }
        outputNorm = ReadNorm(TensorNames.OutputNorm, config.Dim);
        Norms = norms;
        (ropeCos, ropeSin) = Transformer.RopeTables(model, contextLength, deterministic: false);
        ropeSinBack = ropeSin.Select(v => -v).ToArray();
        finalInput = new float[contextLength * config.Dim];
        finalRms = new float[contextLength];
        finalNormed = new float[contextLength * config.Dim];
        logits = new float[contextLength * config.VocabSize];
        tokens = new int[contextLength];
    }

    /// <summary>Bytes the graph holds at most for a model of <paramref name="config"/>: every linear weight decoded to f32
    /// with its transpose and its gradient, and the activations of one sequence of <paramref name="contextLength"/>
    /// positions.</summary>
    public static long Bytes(ModelConfig config, int contextLength)
    {
        long perLayer = (long)config.Dim * (2L * config.QDim + 2L * config.KvDim + 3L * config.HiddenDim);
        long weights = 3 * (perLayer * config.LayerCount + (long)config.VocabSize * config.Dim * (config.TiedEmbeddings ? 1 : 2));
        long activations = config.LayerCount * (contextLength * (5L * config.Dim + 3L * config.QDim + 3L * config.KvDim + 3L * config.HiddenDim)
            + (long)config.HeadCount * contextLength * contextLength) + 2L * contextLength * config.VocabSize;
        return 4 * (weights + activations);
    }

    /// <summary>Decodes the tuned weights again from their current values (after an optimizer step).</summary>
    public void Refresh()
    {
        foreach (var dense in tuned)
            dense.Refresh();
    }

    /// <summary>Zeroes every gradient the graph accumulates: the norms' and the tuned weights' dense ones.</summary>
    public void ClearGradients()
    {
        foreach (var norm in Norms)
            Array.Clear(norm.Gradient);
        foreach (var dense in tuned)
            Array.Clear(dense.Gradient!);
    }

    private readonly Norm outputNorm;

    // saved by Forward for Backward
    private readonly float[] finalInput;  // [T, dim] residual stream after the last block
    private readonly float[] finalRms;    // [T]
    private readonly float[] finalNormed; // [T, dim]
    private readonly float[] logits;      // [T, vocab]; Backward turns them into the logit gradient
    private readonly int[] tokens;
    private int length;

    /// <summary>
    /// Runs <paramref name="tokens"/> (positions 0 …) and returns Σ over positions t in [<paramref name="scoredFrom"/>,
    /// <paramref name="scoredTo"/>) of KL(teacher_t ‖ model_t), where <paramref name="teacherLogProbs"/> holds the
    /// teacher's log-probabilities of every position, [tokens, vocab]. <see cref="Backward"/> differentiates that sum.
    /// </summary>
    public double Forward(ReadOnlySpan<int> tokens, float[] teacherLogProbs, int scoredFrom, int scoredTo)
    {
        int n = tokens.Length, dim = config.Dim, vocab = config.VocabSize;
        if (n < 1 || n > contextLength)
            throw new ArgumentOutOfRangeException(nameof(tokens), $"{n} tokens do not fit the context of {contextLength}");
        length = n;
        tokens.CopyTo(this.tokens);
        var x = new float[n * dim];
        for (int t = 0; t < n; t++)
            embedding.Weight.AsSpan(tokens[t] * dim, dim).CopyTo(x.AsSpan(t * dim, dim));
        foreach (var block in blocks)
            x = ForwardBlock(block, x, n);
        x.AsSpan().CopyTo(finalInput);
        for (int t = 0; t < n; t++)
            finalRms[t] = Transformer.RmsNorm(x.AsSpan(t * dim, dim), outputNorm.Values, config.RmsNormEps, finalNormed.AsSpan(t * dim, dim));
        LinearAlgebra.MultiplyTransposed(finalNormed, classifier.Weight, n, dim, vocab, logits, threads);
        double kl = 0;
        var logProbs = new float[vocab];
        for (int t = 0; t < n; t++)
        {
            var row = logits.AsSpan(t * vocab, vocab);
            LogSoftmax.Compute(row, logProbs);
            var teacher = teacherLogProbs.AsSpan(t * vocab, vocab);
            bool scored = t >= scoredFrom && t < scoredTo;
            if (scored)
                kl += Evaluator.KlDivergence(teacher, logProbs);
            // The gradient of KL(p ‖ q) with respect to the logits of q is q − p; kept in place of the logits.
            for (int v = 0; v < vocab; v++)
                row[v] = scored ? MathF.Exp(logProbs[v]) - MathF.Exp(teacher[v]) : 0f;
        }
        return kl;
    }

    /// <summary>Adds <paramref name="weight"/> times the gradient of the last <see cref="Forward"/>'s KL sum to every
    /// norm's <see cref="Norm.Gradient"/> and every tuned weight's dense gradient.</summary>
    public void Backward(float weight)
    {
        int n = length, dim = config.Dim, vocab = config.VocabSize;
        var dLogits = logits;
        TensorPrimitives.Multiply(dLogits.AsSpan(0, n * vocab), weight, dLogits.AsSpan(0, n * vocab));
        var dNormed = new float[n * dim];
        LinearAlgebra.MultiplyTransposed(dLogits, classifier.Transposed!, n, vocab, dim, dNormed, threads);
        AccumulateWeightGradients(finalNormed, n, (classifier, dLogits));
        var dx = new float[n * dim];
        for (int t = 0; t < n; t++)
            RmsNormBackward(finalInput.AsSpan(t * dim, dim), finalRms[t], outputNorm, dNormed.AsSpan(t * dim, dim), dx.AsSpan(t * dim, dim));
        for (int l = blocks.Length - 1; l >= 0; l--)
            BackwardBlock(blocks[l], dx, n);
        // dx is now the gradient at the embedding rows read for the tokens.
        if (embedding.Gradient is { } gEmbedding)
        {
            for (int t = 0; t < n; t++)
                TensorPrimitives.Add(gEmbedding.AsSpan(tokens[t] * dim, dim), dx.AsSpan(t * dim, dim), gEmbedding.AsSpan(tokens[t] * dim, dim));
        }
    }

    /// <summary>Adds dYᵀ · X, the gradient of a tuned weight, to its gradient, for each of <paramref name="products"/>
    /// that read the input <paramref name="x"/> [n, columns] and have dY [n, rows]; X is transposed once for all of them.</summary>
    private void AccumulateWeightGradients(float[] x, int n, params (Dense Weight, float[] DY)[] products)
    {
        float[]? xt = null;
        foreach (var (weight, dY) in products)
        {
            if (weight.Gradient is null)
                continue;
            if (xt is null)
            {
                xt = new float[weight.Columns * n];
                LinearAlgebra.Transpose(x.AsSpan(0, n * weight.Columns), n, weight.Columns, xt);
            }
            var dYt = new float[weight.Rows * n];
            LinearAlgebra.Transpose(dY.AsSpan(0, n * weight.Rows), n, weight.Rows, dYt);
            LinearAlgebra.MultiplyTransposed(dYt, xt, weight.Rows, n, weight.Columns, weight.Gradient, threads, accumulate: true);
        }
    }

    private float[] ForwardBlock(Block b, float[] x, int n)
    {
        int dim = config.Dim, qDim = config.QDim, kvDim = config.KvDim, hidden = config.HiddenDim, headDim = config.HeadDim;
        var s = b.Saved;
        x.AsSpan(0, n * dim).CopyTo(s.Input);
        for (int t = 0; t < n; t++)
            s.Rms1[t] = Transformer.RmsNorm(x.AsSpan(t * dim, dim), b.AttentionNorm.Values, config.RmsNormEps, s.Normed1.AsSpan(t * dim, dim));
        LinearAlgebra.MultiplyTransposed(s.Normed1, b.Query.Weight, n, dim, qDim, s.QueryRaw, threads);
        LinearAlgebra.MultiplyTransposed(s.Normed1, b.Key.Weight, n, dim, kvDim, s.KeyRaw, threads);
        LinearAlgebra.MultiplyTransposed(s.Normed1, b.Value.Weight, n, dim, kvDim, s.Value, threads);
        for (int t = 0; t < n; t++)
        {
            if (b.QueryBias is not null)
            {
                TensorPrimitives.Add(s.QueryRaw.AsSpan(t * qDim, qDim), b.QueryBias, s.QueryRaw.AsSpan(t * qDim, qDim));
                TensorPrimitives.Add(s.KeyRaw.AsSpan(t * kvDim, kvDim), b.KeyBias!, s.KeyRaw.AsSpan(t * kvDim, kvDim));
                TensorPrimitives.Add(s.Value.AsSpan(t * kvDim, kvDim), b.ValueBias!, s.Value.AsSpan(t * kvDim, kvDim));
            }
            for (int h = 0; h < config.HeadCount; h++)
                HeadIn(s.QueryRaw, s.Query, s.QueryRms, b.QueryNorm, t * qDim + h * headDim, t * config.HeadCount + h, t);
            for (int h = 0; h < config.KvHeadCount; h++)
                HeadIn(s.KeyRaw, s.Key, s.KeyRms, b.KeyNorm, t * kvDim + h * headDim, t * config.KvHeadCount + h, t);
        }
        AttentionForward(s, n);
        var projected = new float[n * dim];
        LinearAlgebra.MultiplyTransposed(s.Attended, b.Output.Weight, n, qDim, dim, projected, threads);
        var mid = new float[n * dim];
        TensorPrimitives.Add(x.AsSpan(0, n * dim), projected, mid);

        mid.AsSpan().CopyTo(s.Middle);
        for (int t = 0; t < n; t++)
            s.Rms2[t] = Transformer.RmsNorm(mid.AsSpan(t * dim, dim), b.FeedForwardNorm.Values, config.RmsNormEps, s.Normed2.AsSpan(t * dim, dim));
        LinearAlgebra.MultiplyTransposed(s.Normed2, b.Gate.Weight, n, dim, hidden, s.Gate, threads);
        LinearAlgebra.MultiplyTransposed(s.Normed2, b.Up.Weight, n, dim, hidden, s.Up, threads);
        for (int i = 0; i < n * hidden; i++)
        {
            float a = s.Gate[i];
            s.Hidden[i] = a / (1f + MathF.Exp(-a)) * s.Up[i];
        }
        LinearAlgebra.MultiplyTransposed(s.Hidden, b.Down.Weight, n, hidden, dim, projected, threads);
        var output = new float[n * dim];
        TensorPrimitives.Add(mid, projected, output);
        return output;
    }

    /// <summary>A head of q or k: optional per-head RMSNorm, then RoPE at position <paramref name="pos"/>.</summary>
    private void HeadIn(float[] raw, float[] rotated, float[] rms, Norm? norm, int offset, int headIndex, int pos)
    {
        int headDim = config.HeadDim;
        var head = rotated.AsSpan(offset, headDim);
        if (norm is not null)
            rms[headIndex] = Transformer.RmsNorm(raw.AsSpan(offset, headDim), norm.Values, config.RmsNormEps, head);
        else
            raw.AsSpan(offset, headDim).CopyTo(head);
        Rope(head, pos, inverse: false);
    }

    private void AttentionForward(Saved s, int n)
    {
        int headDim = config.HeadDim, qDim = config.QDim, kvDim = config.KvDim, heads = config.HeadCount, group = heads / config.KvHeadCount;
        float scale = 1f / MathF.Sqrt(headDim);
        Parallel.For(0, heads, new ParallelOptions { MaxDegreeOfParallelism = threads }, h =>
        {
            int kvh = h / group;
            for (int t = 0; t < n; t++)
            {
                var q = s.Query.AsSpan(t * qDim + h * headDim, headDim);
                var p = s.Probabilities.AsSpan((h * contextLength + t) * contextLength, t + 1);
                for (int u = 0; u <= t; u++)
                    p[u] = LinearAlgebra.Dot(q, s.Key.AsSpan(u * kvDim + kvh * headDim, headDim)) * scale;
                float max = TensorPrimitives.Max(p);
                TensorPrimitives.Subtract(p, max, p);
                TensorPrimitives.Exp(p, p);
                TensorPrimitives.Divide(p, TensorPrimitives.Sum(p), p);
                var o = s.Attended.AsSpan(t * qDim + h * headDim, headDim);
                o.Clear();
                for (int u = 0; u <= t; u++)
                    TensorPrimitives.MultiplyAdd(s.Value.AsSpan(u * kvDim + kvh * headDim, headDim), p[u], o, o);
            }
        });
    }

    /// <summary>Turns dx (gradient at the block's output) into the gradient at its input, adding the norms' gradients.</summary>
    private void BackwardBlock(Block b, float[] dx, int n)
    {
        int dim = config.Dim, qDim = config.QDim, kvDim = config.KvDim, hidden = config.HiddenDim;
        var s = b.Saved;

        // feed-forward: out = mid + Down(silu(Gate(n2)) · Up(n2)), n2 = RmsNorm(mid)
        var dHidden = new float[n * hidden];
        LinearAlgebra.MultiplyTransposed(dx, b.Down.Transposed!, n, dim, hidden, dHidden, threads);
        AccumulateWeightGradients(s.Hidden, n, (b.Down, dx));
        var dGate = new float[n * hidden];
        var dUp = new float[n * hidden];
        for (int i = 0; i < n * hidden; i++)
        {
            float a = s.Gate[i], sigma = 1f / (1f + MathF.Exp(-a));
            dUp[i] = dHidden[i] * a * sigma;
            dGate[i] = dHidden[i] * s.Up[i] * sigma * (1f + a * (1f - sigma));
        }
        var dNormed = new float[n * dim];
        var partial = new float[n * dim];
        LinearAlgebra.MultiplyTransposed(dGate, b.Gate.Transposed!, n, hidden, dim, dNormed, threads);
        LinearAlgebra.MultiplyTransposed(dUp, b.Up.Transposed!, n, hidden, dim, partial, threads);
        TensorPrimitives.Add(dNormed, partial, dNormed);
        AccumulateWeightGradients(s.Normed2, n, (b.Gate, dGate), (b.Up, dUp));
        for (int t = 0; t < n; t++)
            RmsNormBackward(s.Middle.AsSpan(t * dim, dim), s.Rms2[t], b.FeedForwardNorm, dNormed.AsSpan(t * dim, dim), dx.AsSpan(t * dim, dim));

        // attention: mid = input + Output(attend(q, k, v)), q, k, v from n1 = RmsNorm(input)
        var dAttended = new float[n * qDim];
        LinearAlgebra.MultiplyTransposed(dx, b.Output.Transposed!, n, dim, qDim, dAttended, threads);
        AccumulateWeightGradients(s.Attended, n, (b.Output, dx));
        var dQuery = new float[n * qDim];
        var dKey = new float[n * kvDim];
        var dValue = new float[n * kvDim];
        AttentionBackward(s, n, dAttended, dQuery, dKey, dValue);
        for (int t = 0; t < n; t++)
        {
            for (int h = 0; h < config.HeadCount; h++)
                HeadBackward(s.QueryRaw, s.QueryRms, b.QueryNorm, dQuery, t * qDim + h * config.HeadDim, t * config.HeadCount + h, t);
            for (int h = 0; h < config.KvHeadCount; h++)
                HeadBackward(s.KeyRaw, s.KeyRms, b.KeyNorm, dKey, t * kvDim + h * config.HeadDim, t * config.KvHeadCount + h, t);
        }
        LinearAlgebra.MultiplyTransposed(dQuery, b.Query.Transposed!, n, qDim, dim, dNormed, threads);
        LinearAlgebra.MultiplyTransposed(dKey, b.Key.Transposed!, n, kvDim, dim, partial, threads);
        TensorPrimitives.Add(dNormed, partial, dNormed);
        LinearAlgebra.MultiplyTransposed(dValue, b.Value.Transposed!, n, kvDim, dim, partial, threads);
        TensorPrimitives.Add(dNormed, partial, dNormed);
        AccumulateWeightGradients(s.Normed1, n, (b.Query, dQuery), (b.Key, dKey), (b.Value, dValue));
        for (int t = 0; t < n; t++)
            RmsNormBackward(s.Input.AsSpan(t * dim, dim), s.Rms1[t], b.AttentionNorm, dNormed.AsSpan(t * dim, dim), dx.AsSpan(t * dim, dim));
    }

    /// <summary>Backward of <see cref="HeadIn"/>: the gradient at the rotated head becomes the gradient at the raw head, in place.</summary>
    private void HeadBackward(float[] raw, float[] rms, Norm? norm, float[] gradient, int offset, int headIndex, int pos)
    {
        int headDim = config.HeadDim;
        var head = gradient.AsSpan(offset, headDim);
        Rope(head, pos, inverse: true);
        if (norm is null)
            return;
        Span<float> result = stackalloc float[headDim];
        result.Clear();
        RmsNormBackward(raw.AsSpan(offset, headDim), rms[headIndex], norm, head, result);
        result.CopyTo(head);
    }

    private void AttentionBackward(Saved s, int n, float[] dAttended, float[] dQuery, float[] dKey, float[] dValue)
    {
        int headDim = config.HeadDim, qDim = config.QDim, kvDim = config.KvDim, heads = config.HeadCount, group = heads / config.KvHeadCount;
        float scale = 1f / MathF.Sqrt(headDim);
        // Heads that share a key/value head write the same dKey/dValue rows: one work item per key/value head.
        Parallel.For(0, config.KvHeadCount, new ParallelOptions { MaxDegreeOfParallelism = threads }, kvh =>
        {
            var dp = new float[contextLength];
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
            {
                for (int t = 0; t < n; t++)
                {
                    var p = s.Probabilities.AsSpan((h * contextLength + t) * contextLength, t + 1);
                    var dOut = dAttended.AsSpan(t * qDim + h * headDim, headDim);
                    var d = dp.AsSpan(0, t + 1);
                    for (int u = 0; u <= t; u++)
                    {
                        d[u] = LinearAlgebra.Dot(dOut, s.Value.AsSpan(u * kvDim + kvh * headDim, headDim));
                        TensorPrimitives.MultiplyAdd(dOut, p[u], dValue.AsSpan(u * kvDim + kvh * headDim, headDim), dValue.AsSpan(u * kvDim + kvh * headDim, headDim));
                    }
                    float mean = TensorPrimitives.Dot(p, d);
                    var dq = dQuery.AsSpan(t * qDim + h * headDim, headDim);
                    var q = s.Query.AsSpan(t * qDim + h * headDim, headDim);
                    for (int u = 0; u <= t; u++)
                    {
                        float dScore = p[u] * (d[u] - mean) * scale;
                        if (dScore == 0)
                            continue;
                        var key = s.Key.AsSpan(u * kvDim + kvh * headDim, headDim);
                        TensorPrimitives.MultiplyAdd(key, dScore, dq, dq);
                        TensorPrimitives.MultiplyAdd(q, dScore, dKey.AsSpan(u * kvDim + kvh * headDim, headDim), dKey.AsSpan(u * kvDim + kvh * headDim, headDim));
                    }
                }
            }
        });
    }

    /// <summary>Given dy at y = x·r·w: adds dy·x·r to the norm's gradient and the gradient at x,
    /// r·w·dy − x·r³·mean(w·dy·x), to <paramref name="dx"/>.</summary>
    private static void RmsNormBackward(ReadOnlySpan<float> x, float r, Norm norm, ReadOnlySpan<float> dy, Span<float> dx)
    {
        int count = x.Length;
        float[] weight = norm.Values, weightGradient = norm.Gradient;
        double projection = 0;
        for (int i = 0; i < count; i++)
        {
            float wdy = weight[i] * dy[i];
            weightGradient[i] += dy[i] * x[i] * r;
            projection += (double)wdy * x[i];
        }
        float c = (float)(projection / count) * r * r * r;
        for (int i = 0; i < count; i++)
            dx[i] += r * weight[i] * dy[i] - c * x[i];
    }

    /// <summary>Rotates the pairs of one head by the angles of <paramref name="pos"/>, or back by them.</summary>
    private void Rope(Span<float> head, int pos, bool inverse)
    {
        int half = config.RopeDimensions / 2;
        Transformer.Rope(head, ropeCos.AsSpan(pos * half, half), (inverse ? ropeSinBack : ropeSin).AsSpan(pos * half, half), config.RopeStyle);
    }

    /// <summary>A linear weight decoded to f32 [rows, columns], with its transpose when the backward pass needs it, and
    /// its gradient when it is tuned.</summary>
    private sealed class Dense
    {
        public Dense(LinearWeight weight, bool transpose, bool tune)
        {
            Rows = weight.Rows;
            Columns = weight.Columns;
            Weight = weight.Decode();
            Transposed = transpose ? new float[Weight.Length] : null;
            Tunable = tune ? TunableWeight.For(weight) : null;
            Gradient = Tunable is null ? null : new float[Weight.Length];
            if (Tunable is not null)
                Refresh();
            else if (Transposed is not null)
                LinearAlgebra.Transpose(Weight, Rows, Columns, Transposed);
        }

        public float[] Weight { get; }
        public float[]? Transposed { get; }
        public TunableWeight? Tunable { get; }
        public float[]? Gradient { get; }
        public int Rows { get; }
        public int Columns { get; }

        public void Refresh()
        {
            Tunable!.Decode(Weight);
            if (Transposed is not null)
                LinearAlgebra.Transpose(Weight, Rows, Columns, Transposed);
        }
    }

    /// <summary>An RMSNorm weight vector, by tensor name, and the gradient <see cref="Backward"/> adds to.</summary>
    public sealed class Norm(string name, float[] values)
    {
        public string Name { get; } = name;
        public float[] Values { get; } = values;
        public float[] Gradient { get; } = new float[values.Length];
    }

    private sealed class Block
    {
        public required Norm AttentionNorm { get; init; }
        public required Norm? QueryNorm { get; init; }
        public required Norm? KeyNorm { get; init; }
        public required Norm FeedForwardNorm { get; init; }
        public required Dense Query { get; init; }
        public required Dense Key { get; init; }
        public required Dense Value { get; init; }
        public required Dense Output { get; init; }
        public required Dense Gate { get; init; }
        public required Dense Up { get; init; }
        public required Dense Down { get; init; }
        public required float[]? QueryBias { get; init; }
        public required float[]? KeyBias { get; init; }
        public required float[]? ValueBias { get; init; }
        public required Saved Saved { get; init; }
    }

    /// <summary>A block's activations of the last forward pass, at most contextLength positions.</summary>
    private sealed class Saved(ModelConfig c, int n)
    {
        public float[] Input { get; } = new float[n * c.Dim];
        public float[] Rms1 { get; } = new float[n];
        public float[] Normed1 { get; } = new float[n * c.Dim];
        public float[] QueryRaw { get; } = new float[n * c.QDim];
        public float[] KeyRaw { get; } = new float[n * c.KvDim];
        public float[] QueryRms { get; } = new float[n * c.HeadCount];
        public float[] KeyRms { get; } = new float[n * c.KvHeadCount];
        public float[] Query { get; } = new float[n * c.QDim];
        public float[] Key { get; } = new float[n * c.KvDim];
        public float[] Value { get; } = new float[n * c.KvDim];
        public float[] Probabilities { get; } = new float[(long)c.HeadCount * n * n];
        public float[] Attended { get; } = new float[n * c.QDim];
        public float[] Middle { get; } = new float[n * c.Dim];
        public float[] Rms2 { get; } = new float[n];
        public float[] Normed2 { get; } = new float[n * c.Dim];
        public float[] Gate { get; } = new float[n * c.HiddenDim];
        public float[] Up { get; } = new float[n * c.HiddenDim];
        public float[] Hidden { get; } = new float[n * c.HiddenDim];
    }
}

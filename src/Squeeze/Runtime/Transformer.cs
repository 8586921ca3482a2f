using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Runtime;

/// <summary>Settings of a <see cref="Transformer"/>.</summary>
public sealed record RuntimeOptions
{
    /// <summary>Threads for the matrix products and attention.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>Positions the KV cache holds; 0 means the model's training context length.</summary>
    public int ContextLength { get; init; }

    /// <summary>Tokens processed together in one prompt batch (matrix-matrix products).</summary>
    public int BatchSize { get; init; } = 256;

    /// <summary>How the KV cache stores keys and values; f32 (exact) by default.</summary>
    public KvCachePolicy KvCache { get; init; } = KvCachePolicy.Float32;

    /// <summary>Logits with the same bits on every machine, at every SIMD level and thread count (what <c>squeeze zip</c>
    /// needs): deterministic kernels and attention, the logistic function and the RoPE tables from
    /// <see cref="DeterministicMath"/>. Slower; only with the f32 KV cache; see docs/FORMAT.md.</summary>
    public bool Deterministic { get; init; }
}

/// <summary>
/// The forward pass of a Llama-family decoder on the CPU: RMSNorm, RoPE (interleaved or NeoX), grouped-query
/// attention over a KV cache, SwiGLU, tied or untied classifier; and Gemma's variations as the config asks for them
/// (scaled embeddings, GeGLU, norms on the sub-layers' outputs, query scaling, soft-capped scores and logits,
/// sliding-window layers with their own rotary base), and mixture-of-experts feed-forwards (Mixtral, Qwen2-MoE, Qwen3-MoE:
/// routed experts, a shared expert). Runs on the weights as stored (any
/// <see cref="GgmlType"/>): a quantized model is never dequantized whole. A batch of prompt tokens goes through
/// matrix-matrix products; decoding is the batch of one.
/// </summary>
public sealed class Transformer : IDisposable
{
    private readonly Model model;
    private readonly ModelConfig config;
    private readonly ComputeContext compute;
    private readonly Layer[] layers;
    private readonly LinearWeight embedding;  // [vocab, dim]
    private readonly LinearWeight classifier; // [vocab, dim]: output.weight, or token_embd.weight when tied
    private readonly List<RowGroupWeight> rowGroups = []; // the weights above and the layers' that decode on row groups
    private readonly float[] outputNorm; // [dim]
    private readonly float[] ropeCos;   // [contextLength, ropeDimensions / 2]
    private readonly float[] ropeSin;   // [contextLength, ropeDimensions / 2]
    private readonly float attentionScale; // what the attention multiplies q·k by
    private readonly int batchSize;
    private readonly bool deterministic;
    private readonly KvCachePolicy cachePolicy;
    private readonly KvCache[] rowCaches; // [batch] the cache each row of the batch reads and writes
    private readonly int[] rowPositions;  // [batch] the position of each row in its cache

    // activations of one batch, row-major [batch, width]
    private readonly float[] x;      // [batch, dim] the residual stream
    private readonly float[] xb;     // [batch, dim] normalised input of a block
    private readonly float[] q;      // [batch, qDim]
    private readonly float[] k;      // [batch, kvDim]
    private readonly float[] v;      // [batch, kvDim]
    private readonly float[] att;    // [batch, qDim] attention output before attn_output
    private readonly float[] proj;   // [batch, dim] output of attn_output or ffn_down
    private readonly float[] gate;   // [batch, hidden]
    private readonly float[] up;     // [batch, hidden]
    // mixture of experts (empty for a dense model)
    private readonly float[] routerLogits; // [batch, experts] router logits, then softmax probabilities
    private readonly int[] slotExpert;     // [batch, expertsUsed] the experts each token is routed to, most probable first
    private readonly float[] slotWeight;   // [batch, expertsUsed] their routing weights
    private readonly float[] slotOutput;   // [batch, expertsUsed, dim] each routed expert's weighted output
    private readonly float[] expertInput;  // [batch, dim] the rows routed to one expert, gathered
    private readonly float[] expertOutput; // [batch, dim] that expert's output
    private readonly int[] routedRows;     // [batch] the tokens routed to one expert
    private readonly int[] routedSlots;    // [batch] and the slot each of them routed it in
    private readonly AttentionJob attention;
    private readonly TokenRangeJob tokenRanges = new();
    private float[] logits = [];     // [logitRows, vocab]

    /// <summary>Prepares <paramref name="model"/> to run: the per-layer weights as the runtime multiplies them, rotary tables, scratch
    /// for <see cref="RuntimeOptions.BatchSize"/> tokens and an empty <see cref="Cache"/>. <see cref="InvalidOperationException"/> when the
    /// embedding or classifier shapes disagree with the config; <see cref="NotSupportedException"/> for a deterministic run
    /// with a cache other than f32.</summary>
    public Transformer(Model model, RuntimeOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new RuntimeOptions();
        this.model = model;
        config = model.Config;
        int contextLength = options.ContextLength > 0 ? options.ContextLength : config.ContextLength;
        batchSize = Math.Max(1, options.BatchSize);
        deterministic = options.Deterministic;
        if (deterministic && options.KvCache != KvCachePolicy.Float32)
            throw new NotSupportedException($"the deterministic mode runs with the f32 KV cache, not {options.KvCache}");
        if ((config.SlidingWindow > 0 || config.AttentionSoftCap > 0) && options.KvCache.Kind == KvCacheKind.Evicting)
            throw new NotSupportedException($"{model.Source}: sliding-window or soft-capped attention runs with the f32, f16 or quantized KV caches, not the evicting {options.KvCache}");
        if (deterministic && (config.AttentionSoftCap > 0 || config.FinalLogitSoftCap > 0 || config.Activation != FeedForwardActivation.Silu))
            throw new NotSupportedException($"{model.Source}: the deterministic mode has no tanh; soft-capping and GELU are not supported in it");
        compute = new ComputeContext(Math.Max(1, options.Threads)) { Deterministic = deterministic };
        cachePolicy = options.KvCache;
        Cache = NewCache(contextLength);
        rowCaches = new KvCache[batchSize];
        rowPositions = new int[batchSize];

        embedding = model.Weight(TensorNames.TokenEmbedding);
        classifier = Decoding(model.Contains(TensorNames.Output) ? model.Weight(TensorNames.Output) : embedding);
        if (embedding.Rows != config.VocabSize || embedding.Columns != config.Dim || classifier.Rows != config.VocabSize || classifier.Columns != config.Dim)
            throw new InvalidOperationException($"{model.Source}: the embedding and classifier must be [{config.VocabSize}, {config.Dim}]");
        outputNorm = ReadVector(model, TensorNames.OutputNorm, config.Dim);
        (ropeCos, ropeSin) = RopeTables(model, contextLength, deterministic);
        var (slidingCos, slidingSin) = config.SlidingRopeTheta is float slidingTheta
            ? RopeTables(config.RopeDimensions, slidingTheta, 1f, null, null, 1f, contextLength, deterministic)
            : (ropeCos, ropeSin);
        layers = new Layer[config.LayerCount];
        for (int l = 0; l < layers.Length; l++)
        {
            bool sliding = config.IsSlidingLayer(l);
            layers[l] = new Layer(model, l, sliding ? slidingCos : ropeCos, sliding ? slidingSin : ropeSin, name => Decoding(model.Weight(name)));
        }
        attentionScale = config.QueryScale is null ? 1f / MathF.Sqrt(config.HeadDim) : 1f;

        x = new float[batchSize * config.Dim];
        xb = new float[batchSize * config.Dim];
        q = new float[batchSize * config.QDim];
        k = new float[batchSize * config.KvDim];
        v = new float[batchSize * config.KvDim];
        att = new float[batchSize * config.QDim];
        proj = new float[batchSize * config.Dim];
        int widest = Math.Max(config.HiddenDim, Math.Max(config.ExpertHiddenDim, config.SharedExpertHiddenDim));
        gate = new float[batchSize * widest];
        up = new float[batchSize * widest];
        int experts = config.ExpertCount, used = config.ExpertUsedCount;
        routerLogits = new float[batchSize * experts];
        slotExpert = new int[batchSize * used];
        slotWeight = new float[batchSize * used];
        slotOutput = new float[checked(batchSize * used * config.Dim)];
        expertInput = new float[experts > 0 ? batchSize * config.Dim : 0];
        expertOutput = new float[experts > 0 ? batchSize * config.Dim : 0];
        routedRows = new int[experts > 0 ? batchSize : 0];
        routedSlots = new int[experts > 0 ? batchSize : 0];
        attention = new AttentionJob(this, parts: 4 * compute.Threads, Cache.ScratchLength);
    }

    /// <summary>The model this runtime runs.</summary>
    public Model Model => model;

    /// <summary>The cache of the default sequence, the one <c>Forward</c> appends to.</summary>
    public KvCache Cache { get; }

    /// <summary>A new, empty cache of this runtime's policy (and determinism) for a sequence of its own, to run with
    /// <see cref="ForwardSequences"/>; <paramref name="contextLength"/> 0 means the model's.</summary>
    public KvCache NewCache(int contextLength = 0)
    {
        int length = contextLength > 0 ? contextLength : config.ContextLength;
        return deterministic ? new Float32KvCache(config, length) { Deterministic = true } : cachePolicy.CreateCache(config, length);
    }

    /// <summary>The rotary tables <paramref name="layer"/>'s keys and queries are rotated with: cos and sin of every
    /// (position, pair), [contextLength, headDim / 2] each (a saved cache stores keys before RoPE and rotates them again
    /// with these on loading).</summary>
    internal (float[] Cos, float[] Sin) RotaryTables(int layer) => (layers[layer].RopeCos, layers[layer].RopeSin);

    /// <summary>Sees the input of every linear layer (for calibration); null when nobody listens.</summary>
    public IActivationObserver? Observer { get; set; }

    /// <summary>Checked before each layer of a forward pass, so long work stops within one layer's time of being
    /// cancelled (an <see cref="OperationCanceledException"/>; the cache is then in no defined state: <see cref="Reset"/>).</summary>
    public CancellationToken Cancellation { get; set; }

    /// <summary>Number of positions already in the cache; the next token goes here.</summary>
    public int Position { get; private set; }

    /// <summary>Forgets every cached position.</summary>
    public void Reset() => Position = 0;

    /// <summary>Continues after the first <paramref name="positions"/> positions, which the caller has put into
    /// <see cref="Cache"/> itself (a saved cache loaded): the next token goes at <paramref name="positions"/>.</summary>
    public void Resume(int positions)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(positions);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(positions, Cache.ContextLength);
        Position = positions;
    }

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions [Position, Position + tokens.Length) and returns the logits of the
    /// last <paramref name="logitCount"/> of them: [logitCount, vocab]. The span is valid until the next call.
    /// </summary>
    public ReadOnlySpan<float> Forward(ReadOnlySpan<int> tokens, int logitCount = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens.Length, 1, nameof(tokens));
        ArgumentOutOfRangeException.ThrowIfNegative(logitCount);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(logitCount, tokens.Length);
        if (Position + tokens.Length > Cache.ContextLength)
            throw new InvalidOperationException($"{tokens.Length} tokens at position {Position} do not fit the context of {Cache.ContextLength}");
        int vocab = config.VocabSize;
        if (logits.Length < (long)logitCount * vocab)
            logits = new float[logitCount * vocab];

        for (int start = 0; start < tokens.Length; start += batchSize)
        {
            int n = Math.Min(batchSize, tokens.Length - start);
            for (int t = 0; t < n; t++)
            {
                rowCaches[t] = Cache;
                rowPositions[t] = Position + t;
            }
            RunBatch(tokens.Slice(start, n));
            Position += n;
            // Logit rows that fall in this batch: global indices [tokens.Length - logitCount, tokens.Length).
            int firstWanted = tokens.Length - logitCount;
            int from = Math.Max(firstWanted, start);
            int to = start + n;
            if (from < to)
            {
                int rows = to - from;
                var normed = NormalizeRows(from - start, rows, outputNorm);
                Observer?.Observe(-1, LinearInput.Output, normed, rows);
                classifier.Multiply(normed, rows, compute, logits.AsSpan((from - firstWanted) * vocab, rows * vocab));
                SoftCapLogits(logits.AsSpan((from - firstWanted) * vocab, rows * vocab));
            }
        }
        return logits.AsSpan(0, logitCount * vocab);
    }

    /// <summary>
    /// Runs rows that belong to different sequences, each with its own cache: row i puts <paramref name="tokens"/>[i] at
    /// position <paramref name="positions"/>[i] of <paramref name="caches"/>[i] and attends to positions [0, that
    /// position] of that cache. Several rows may share a cache at consecutive positions (in increasing order). Returns the
    /// logits of the rows listed in <paramref name="logitRows"/> (increasing), [logitRows.Length, vocab], valid until the
    /// next call. <see cref="Cache"/> and <see cref="Position"/> are not used. In the deterministic mode a row's logits do
    /// not depend on the other rows of the batch.
    /// </summary>
    public ReadOnlySpan<float> ForwardSequences(ReadOnlySpan<int> tokens, ReadOnlySpan<KvCache> caches, ReadOnlySpan<int> positions, ReadOnlySpan<int> logitRows)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens.Length, 1, nameof(tokens));
        if (caches.Length != tokens.Length || positions.Length != tokens.Length)
            throw new ArgumentException($"{tokens.Length} tokens need as many caches and positions, not {caches.Length} and {positions.Length}");
        for (int i = 0; i < tokens.Length; i++)
        {
            if (caches[i].KvDim != config.KvDim || (uint)positions[i] >= (uint)caches[i].ContextLength || caches[i].ContextLength > ropeCos.Length / (config.RopeDimensions / 2)
                || caches[i].ScratchLength > Cache.ScratchLength)
                throw new ArgumentOutOfRangeException(nameof(positions), $"row {i}: position {positions[i]} does not fit its cache");
        }
        for (int i = 0; i < logitRows.Length; i++)
        {
            if ((uint)logitRows[i] >= (uint)tokens.Length || (i > 0 && logitRows[i] <= logitRows[i - 1]))
                throw new ArgumentException($"logit rows must be increasing row indices below {tokens.Length}", nameof(logitRows));
        }
        int vocab = config.VocabSize, dim = config.Dim;
        if (logits.Length < (long)logitRows.Length * vocab)
            logits = new float[logitRows.Length * vocab];
        int done = 0; // logit rows computed so far
        for (int start = 0; start < tokens.Length; start += batchSize)
        {
            int n = Math.Min(batchSize, tokens.Length - start);
            caches.Slice(start, n).CopyTo(rowCaches);
            positions.Slice(start, n).CopyTo(rowPositions);
            RunBatch(tokens.Slice(start, n));
            int count = 0;
            for (; done + count < logitRows.Length && logitRows[done + count] < start + n; count++)
            {
                int row = logitRows[done + count] - start;
                RmsNorm(x.AsSpan(row * dim, dim), outputNorm, config.RmsNormEps, xb.AsSpan(count * dim, dim));
            }
            if (count == 0)
                continue;
            var normed = xb.AsSpan(0, count * dim);
            Observer?.Observe(-1, LinearInput.Output, normed, count);
            classifier.Multiply(normed, count, compute, logits.AsSpan(done * vocab, count * vocab));
            SoftCapLogits(logits.AsSpan(done * vocab, count * vocab));
            done += count;
        }
        return logits.AsSpan(0, logitRows.Length * vocab);
    }

    /// <summary>Gemma 2's final soft-capping, z ← c·tanh(z · (1/c)) in ggml's order; nothing when the model has none.</summary>
    private void SoftCapLogits(Span<float> values)
    {
        float cap = config.FinalLogitSoftCap;
        if (cap == 0)
            return;
        TensorPrimitives.Multiply(values, 1f / cap, values);
        TensorPrimitives.Tanh(values, values);
        TensorPrimitives.Multiply(values, cap, values);
    }

    /// <summary>Runs one batch of at most batchSize rows, row t at <c>rowPositions[t]</c> of <c>rowCaches[t]</c>.</summary>
    private void RunBatch(ReadOnlySpan<int> tokens)
    {
        int n = tokens.Length;
        int dim = config.Dim;
        var xs = x.AsSpan(0, n * dim);
        for (int t = 0; t < n; t++)
        {
            int token = tokens[t];
            if ((uint)token >= (uint)config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token {token} is outside the vocabulary of {config.VocabSize}");
            embedding.DecodeRow(token, xs.Slice(t * dim, dim));
        }
        if (config.ScaleEmbedding)
            TensorPrimitives.Multiply(xs, MathF.Sqrt(dim), xs);

        foreach (var layer in layers)
            RunLayer(layer, n);
    }

    /// <summary>Runs one decoder block on the first <paramref name="n"/> rows of x, at <c>rowPositions</c> of <c>rowCaches</c>.</summary>
    private void RunLayer(Layer layer, int n)
    {
        Cancellation.ThrowIfCancellationRequested();
        // A sub-layer whose output projection was dropped (ZeroWeight) adds nothing to the residual stream: skipped.
        if (layer.AttentionOutput is not ZeroWeight)
            Attention(layer, n);
        if (layer.Down is not ZeroWeight)
            FeedForward(layer, n);
    }

    /// <summary>
    /// Looks up the embedding of each of <paramref name="tokens"/> into <paramref name="hidden"/> ([tokens, dim]): the
    /// residual stream entering block 0, for running the model one block at a time (<see cref="ForwardBlock"/>).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="hidden"/> is not [tokens, dim].</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token outside the vocabulary.</exception>
    public void Embed(ReadOnlySpan<int> tokens, Span<float> hidden)
    {
        int dim = config.Dim;
        if (hidden.Length != (long)tokens.Length * dim)
            throw new ArgumentException($"{tokens.Length} tokens need [{tokens.Length}, {dim}] hidden values, not {hidden.Length}", nameof(hidden));
        for (int t = 0; t < tokens.Length; t++)
        {
            int token = tokens[t];
            if ((uint)token >= (uint)config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token {token} is outside the vocabulary of {config.VocabSize}");
            embedding.DecodeRow(token, hidden.Slice(t * dim, dim));
        }
    }

    /// <summary>
    /// Runs decoder block <paramref name="layer"/> in place on <paramref name="hidden"/> ([tokens, dim], the residual
    /// stream of one sequence at positions 0 … tokens − 1), with that layer of <see cref="Cache"/> starting empty, in
    /// batches of <see cref="RuntimeOptions.BatchSize"/>; the <see cref="Observer"/> sees the block's linear inputs. Block
    /// after block from <see cref="Embed"/>, this computes exactly what <see cref="Forward"/> does (same batches, same bits),
    /// but holds only the block's work: the model can be run, and replaced, one layer at a time.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="hidden"/> is not whole rows of dim, or more than the cache holds.</exception>
    public void ForwardBlock(int layer, Span<float> hidden)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, layers.Length);
        int dim = config.Dim;
        if (hidden.Length == 0 || hidden.Length % dim != 0 || hidden.Length / dim > Cache.ContextLength)
            throw new ArgumentException($"{hidden.Length} hidden values are not between 1 and {Cache.ContextLength} rows of {dim}", nameof(hidden));
        int tokens = hidden.Length / dim;
        for (int start = 0; start < tokens; start += batchSize)
        {
            int n = Math.Min(batchSize, tokens - start);
            for (int t = 0; t < n; t++)
            {
                rowCaches[t] = Cache;
                rowPositions[t] = start + t;
            }
            hidden.Slice(start * dim, n * dim).CopyTo(x);
            RunLayer(layers[layer], n);
            x.AsSpan(0, n * dim).CopyTo(hidden.Slice(start * dim, n * dim));
        }
    }

    /// <summary>Normalises the rows of <paramref name="hidden"/> ([tokens, dim], the residual stream after the last block)
    /// with the final RMSNorm and shows them to the <see cref="Observer"/> as the classifier's input, without computing
    /// logits: the last step of running the model one block at a time for calibration.</summary>
    /// <exception cref="ArgumentException"><paramref name="hidden"/> is not whole rows of dim.</exception>
    public void ObserveClassifierInput(ReadOnlySpan<float> hidden)
    {
        int dim = config.Dim;
        if (hidden.Length % dim != 0)
            throw new ArgumentException($"{hidden.Length} hidden values are not whole rows of {dim}", nameof(hidden));
        int tokens = hidden.Length / dim;
        for (int start = 0; start < tokens; start += batchSize)
        {
            int n = Math.Min(batchSize, tokens - start);
            hidden.Slice(start * dim, n * dim).CopyTo(x);
            Observer?.Observe(-1, LinearInput.Output, NormalizeRows(0, n, outputNorm), n);
        }
    }

    private void Attention(Layer layer, int n)
    {
        int dim = config.Dim, qDim = config.QDim, kvDim = config.KvDim, headDim = config.HeadDim;
        var xs = x.AsSpan(0, n * dim);
        var normed = NormalizeRows(0, n, layer.AttentionNorm);

        Observer?.Observe(layer.Index, LinearInput.Attention, normed, n);
        var qs = q.AsSpan(0, n * qDim);
        var ks = k.AsSpan(0, n * kvDim);
        var vs = v.AsSpan(0, n * kvDim);
        layer.Query.Multiply(normed, n, compute, qs);
        layer.Key.Multiply(normed, n, compute, ks);
        layer.Value.Multiply(normed, n, compute, vs);
        ForTokens(n, (t0, t1) =>
        {
            for (int t = t0; t < t1; t++)
            {
                var qt = q.AsSpan(t * qDim, qDim);
                var kt = k.AsSpan(t * kvDim, kvDim);
                if (layer.QueryBias is not null)
                {
                    TensorPrimitives.Add(qt, layer.QueryBias, qt);
                    TensorPrimitives.Add(kt, layer.KeyBias!, kt);
                    TensorPrimitives.Add(v.AsSpan(t * kvDim, kvDim), layer.ValueBias!, v.AsSpan(t * kvDim, kvDim));
                }
                int pos = rowPositions[t];
                for (int h = 0; h < config.HeadCount; h++)
                {
                    var head = qt.Slice(h * headDim, headDim);
                    if (layer.QueryNorm is not null)
                        RmsNorm(head, layer.QueryNorm, config.RmsNormEps, head);
                    Rope(head, pos, layer);
                    if (config.QueryScale is float queryScale)
                        TensorPrimitives.Multiply(head, queryScale, head);
                }
                if (config.AttentionTemperatureScale != 0)
                    TensorPrimitives.Multiply(qt, AttentionTemperature(config, pos, deterministic), qt);
                for (int h = 0; h < config.KvHeadCount; h++)
                {
                    var head = kt.Slice(h * headDim, headDim);
                    if (layer.KeyNorm is not null)
                        RmsNorm(head, layer.KeyNorm, config.RmsNormEps, head);
                    Rope(head, pos, layer);
                }
            }
        });
        bool inOrder = false;
        for (int t = 0; t < n && !inOrder; t++)
            inOrder = rowCaches[t].AttendsInOrder;
        if (inOrder)
        {
            for (int t = 0; t < n; t++)
            {
                rowCaches[t].Append(layer.Index, rowPositions[t], ks.Slice(t * kvDim, kvDim), vs.Slice(t * kvDim, kvDim));
                CausalAttention(layer.Index, t, 1);
            }
        }
        else
        {
            // Rows of one sequence at consecutive positions (a prompt) are appended together.
            for (int t0 = 0; t0 < n;)
            {
                int t1 = t0 + 1;
                while (t1 < n && rowCaches[t1] == rowCaches[t0] && rowPositions[t1] == rowPositions[t1 - 1] + 1)
                    t1++;
                rowCaches[t0].Append(layer.Index, rowPositions[t0], ks.Slice(t0 * kvDim, (t1 - t0) * kvDim), vs.Slice(t0 * kvDim, (t1 - t0) * kvDim));
                t0 = t1;
            }
            CausalAttention(layer.Index, 0, n);
        }

        var projected = proj.AsSpan(0, n * dim);
        Observer?.Observe(layer.Index, LinearInput.AttentionOutput, att.AsSpan(0, n * qDim), n);
        layer.AttentionOutput.Multiply(att.AsSpan(0, n * qDim), n, compute, projected);
        if (layer.PostAttentionNorm is not null)
            NormalizeProjection(n, layer.PostAttentionNorm);
        TensorPrimitives.Add(xs, projected, xs);
    }

    /// <summary>att[t, head] = Σ_p softmax_p(q[t, head] · K[p, kvHead] / √headDim) · V[p, kvHead] over positions
    /// p ≤ rowPositions[t] of rowCaches[t] as that cache holds them, for tokens t in [first, first + n).</summary>
    private void CausalAttention(int layerIndex, int first, int n)
    {
        // query heads of one key/value head attend together (a cache may then read each key and value once for them),
        // in groups small enough that every thread has some
        int group = config.HeadCount / config.KvHeadCount, perItem = group;
        while (perItem > 1 && (long)n * config.HeadCount / perItem < compute.Threads)
        {
            do
                perItem--;
            while (group % perItem != 0);
        }
        attention.Layer = layerIndex;
        attention.FirstToken = first;
        attention.Tokens = n;
        attention.HeadsPerItem = perItem;
        compute.Run(attention, Math.Min(n * config.HeadCount / perItem, attention.Parts));
    }

    /// <summary>The (token, group of query heads) items of one attention call, split into parts for the worker pool; each
    /// part has its own score buffer. Part i takes items i, i + parts, i + 2·parts … so that every part gets short and
    /// long rows of the causal triangle. Which thread runs a part, and how heads are grouped, does not change what it
    /// computes.</summary>
    private sealed unsafe class AttentionJob(Transformer owner, int parts, int scratchLength) : IParallelJob
    {
        private readonly float[][] scratch = Enumerable.Range(0, parts).Select(_ => new float[scratchLength]).ToArray();

        public int Parts => parts;
        public int Layer { get; set; }
        public int FirstToken { get; set; }
        public int Tokens { get; set; }
        public int HeadsPerItem { get; set; } = 1;

        public void Run(int part, int partCount)
        {
            var config = owner.config;
            int headDim = config.HeadDim, qDim = config.QDim, heads = config.HeadCount;
            float scale = owner.attentionScale;
            fixed (float* buffer = scratch[part])
            fixed (float* q = owner.q)
            fixed (float* att = owner.att)
            {
                int perItem = HeadsPerItem, itemsPerToken = heads / perItem;
                for (int item = part; item < Tokens * itemsPerToken; item += partCount)
                {
                    int t = FirstToken + item / itemsPerToken, h = item % itemsPerToken * perItem;
                    owner.rowCaches[t].AttendGroup(Layer, h, perItem, q + t * qDim + h * headDim, owner.rowPositions[t], scale, buffer,
                        att + t * qDim + h * headDim);
                }
            }
        }
    }

    private void FeedForward(Layer layer, int n)
    {
        int dim = config.Dim, hidden = config.HiddenDim;
        var xs = x.AsSpan(0, n * dim);
        var normed = NormalizeRows(0, n, layer.FeedForwardNorm);
        Observer?.Observe(layer.Index, LinearInput.FeedForward, normed, n);
        if (config.IsMixtureOfExperts)
        {
            MixtureOfExperts(layer, normed, n);
            TensorPrimitives.Add(xs, proj.AsSpan(0, n * dim), xs);
            return;
        }
        var g = gate.AsSpan(0, n * hidden);
        layer.Gate!.Multiply(normed, n, compute, g);
        layer.Up!.Multiply(normed, n, compute, up.AsSpan(0, n * hidden));
        GatedActivation(n, hidden);
        var projected = proj.AsSpan(0, n * dim);
        Observer?.Observe(layer.Index, LinearInput.FeedForwardDown, g, n);
        layer.Down!.Multiply(g, n, compute, projected);
        if (layer.PostFeedForwardNorm is not null)
            NormalizeProjection(n, layer.PostFeedForwardNorm);
        TensorPrimitives.Add(xs, projected, xs);
    }

    /// <summary>
    /// The mixture-of-experts feed-forward of the first <paramref name="n"/> rows of <paramref name="normed"/> (after
    /// ffn_norm) into proj, as llama.cpp's <c>build_moe_ffn</c> computes it: router logits, their softmax over every
    /// expert, the <see cref="ModelConfig.ExpertUsedCount"/> most probable experts (ties to the lower index) with their
    /// probabilities as weights (divided by their sum when <see cref="ModelConfig.NormalizeExpertWeights"/>), each expert's
    /// SwiGLU on the rows routed to it, and the weighted outputs summed slot by slot, most probable first; then the shared
    /// expert, scaled per token by σ(ffn_gate_inp_shexp · x), when the model has one. Each expert sees only its own rows,
    /// and so does the observer (<see cref="IActivationObserver.ObserveExpert"/>).
    /// </summary>
    private void MixtureOfExperts(Layer layer, Span<float> normed, int n)
    {
        int dim = config.Dim, experts = config.ExpertCount, used = config.ExpertUsedCount, hidden = config.ExpertHiddenDim;
        layer.Router!.Multiply(normed, n, compute, routerLogits.AsSpan(0, n * experts));
        for (int t = 0; t < n; t++)
            Route(routerLogits.AsSpan(t * experts, experts), config.NormalizeExpertWeights, deterministic, slotExpert.AsSpan(t * used, used), slotWeight.AsSpan(t * used, used));
        for (int e = 0; e < experts; e++)
        {
            int count = 0;
            for (int t = 0; t < n; t++)
            {
                for (int k = 0; k < used; k++)
                {
                    if (slotExpert[t * used + k] == e)
                    {
                        routedRows[count] = t;
                        routedSlots[count++] = k;
                    }
                }
            }
            if (count == 0)
                continue;
            var input = expertInput.AsSpan(0, count * dim);
            for (int i = 0; i < count; i++)
                normed.Slice(routedRows[i] * dim, dim).CopyTo(input.Slice(i * dim, dim));
            Observer?.ObserveExpert(layer.Index, LinearInput.ExpertFeedForward, e, input, count);
            var g = gate.AsSpan(0, count * hidden);
            layer.GateExperts![e].Multiply(input, count, compute, g);
            layer.UpExperts![e].Multiply(input, count, compute, up.AsSpan(0, count * hidden));
            GatedActivation(count, hidden);
            Observer?.ObserveExpert(layer.Index, LinearInput.ExpertFeedForwardDown, e, g, count);
            var output = expertOutput.AsSpan(0, count * dim);
            layer.DownExperts![e].Multiply(g, count, compute, output);
            for (int i = 0; i < count; i++)
            {
                int t = routedRows[i], k = routedSlots[i];
                TensorPrimitives.Multiply(output.Slice(i * dim, dim), slotWeight[t * used + k], slotOutput.AsSpan((t * used + k) * dim, dim));
            }
        }
        var projected = proj.AsSpan(0, n * dim);
        for (int t = 0; t < n; t++)
        {
            var row = projected.Slice(t * dim, dim);
            slotOutput.AsSpan(t * used * dim, dim).CopyTo(row);
            for (int k = 1; k < used; k++)
                TensorPrimitives.Add(row, slotOutput.AsSpan((t * used + k) * dim, dim), row);
        }
        if (layer.SharedDown is null)
            return;
        int shared = config.SharedExpertHiddenDim;
        var sg = gate.AsSpan(0, n * shared);
        layer.SharedGate!.Multiply(normed, n, compute, sg);
        layer.SharedUp!.Multiply(normed, n, compute, up.AsSpan(0, n * shared));
        GatedActivation(n, shared);
        Observer?.Observe(layer.Index, LinearInput.SharedExpertDown, sg, n);
        var sharedOutput = expertOutput.AsSpan(0, n * dim);
        layer.SharedDown.Multiply(sg, n, compute, sharedOutput);
        var scales = routerLogits.AsSpan(0, n); // the routing is done: its scratch holds the shared expert's gates
        layer.SharedExpertGate!.Multiply(normed, n, compute, scales);
        if (deterministic)
            DeterministicMath.Sigmoid(scales, scales);
        else
            TensorPrimitives.Sigmoid(scales, scales);
        for (int t = 0; t < n; t++)
            TensorPrimitives.MultiplyAdd(sharedOutput.Slice(t * dim, dim), scales[t], projected.Slice(t * dim, dim), projected.Slice(t * dim, dim));
    }

    /// <summary>
    /// Routes one token: <paramref name="logits"/> (the router's, [experts]) become their softmax in place; the
    /// <paramref name="experts"/>.Length most probable experts, most probable first (ties to the lower index), go into
    /// <paramref name="experts"/> and their probabilities into <paramref name="weights"/>, divided by their sum when
    /// <paramref name="normalize"/>.
    /// </summary>
    internal static void Route(Span<float> logits, bool normalize, bool deterministic, Span<int> experts, Span<float> weights)
    {
        float max = TensorPrimitives.Max(logits);
        float sum = 0;
        for (int e = 0; e < logits.Length; e++)
        {
            logits[e] = deterministic ? DeterministicMath.Exp(logits[e] - max) : MathF.Exp(logits[e] - max);
            sum += logits[e];
        }
        TensorPrimitives.Multiply(logits, 1f / sum, logits);
        float total = 0;
        for (int k = 0; k < experts.Length; k++)
        {
            int best = -1;
            for (int e = 0; e < logits.Length; e++)
            {
                if ((best < 0 || logits[e] > logits[best]) && !experts[..k].Contains(e))
                    best = e;
            }
            experts[k] = best;
            weights[k] = logits[best];
            total += logits[best];
        }
        if (normalize)
            TensorPrimitives.Multiply(weights, 1f / total, weights);
    }

    /// <summary>In place over the first <paramref name="n"/> rows of <paramref name="hidden"/> values of gate and up: gate ←
    /// silu(gate) · up (SwiGLU) or gelu(gate) · up (GeGLU), split by tokens across the pool.</summary>
    private void GatedActivation(int n, int hidden)
    {
        // SwiGLU: h = silu(g) · u = σ(g) · (g · u), computed in place as u ← g·u, g ← σ(g), g ← g·u; GeGLU: g ← gelu(g)·u.
        ForTokens(n, (t0, t1) =>
        {
            if (config.Activation == FeedForwardActivation.GeluTanh)
            {
                GeGlu(gate.AsSpan(t0 * hidden, (t1 - t0) * hidden), up.AsSpan(t0 * hidden, (t1 - t0) * hidden));
                return;
            }
            var gt = gate.AsSpan(t0 * hidden, (t1 - t0) * hidden);
            var ut = up.AsSpan(t0 * hidden, (t1 - t0) * hidden);
            TensorPrimitives.Multiply(gt, ut, ut);
            if (deterministic)
                DeterministicMath.Sigmoid(gt, gt);
            else
                TensorPrimitives.Sigmoid(gt, gt);
            TensorPrimitives.Multiply(gt, ut, gt);
        });
    }

    /// <summary>Runs <c>body(t0, t1)</c> over [0, n) split in token ranges across the threads (inline for a few tokens).
    /// Each token is computed the same way whichever range holds it.</summary>
    /// <summary>xb[t] = RmsNorm(x[first + t]) · weight for t in [0, count): the normalised input of a block or of
    /// the classifier, split by tokens across the pool. Returns xb's first <paramref name="count"/> rows.</summary>
    private Span<float> NormalizeRows(int first, int count, float[] weight)
    {
        int dim = config.Dim;
        ForTokens(count, (t0, t1) =>
        {
            for (int t = t0; t < t1; t++)
                RmsNorm(x.AsSpan((first + t) * dim, dim), weight, config.RmsNormEps, xb.AsSpan(t * dim, dim));
        });
        return xb.AsSpan(0, count * dim);
    }

    /// <summary>proj[t] = RmsNorm(proj[t]) · weight for t in [0, count): Gemma's norm on a sub-layer's output.</summary>
    private void NormalizeProjection(int count, float[] weight)
    {
        int dim = config.Dim;
        ForTokens(count, (t0, t1) =>
        {
            for (int t = t0; t < t1; t++)
                RmsNorm(proj.AsSpan(t * dim, dim), weight, config.RmsNormEps, proj.AsSpan(t * dim, dim));
        });
    }

    /// <summary>GeGLU in place: gate[i] ← gelu(gate[i]) · up[i], GELU in its tanh approximation as ggml defines it.</summary>
    internal static void GeGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        const float SqrtTwoOverPi = 0.79788456080286535587989211986876f, Coefficient = 0.044715f;
        for (int i = 0; i < gate.Length; i++)
        {
            float x = gate[i];
            gate[i] = 0.5f * x * (1f + MathF.Tanh(SqrtTwoOverPi * x * (1f + Coefficient * x * x))) * up[i];
        }
    }

    private void ForTokens(int n, Action<int, int> body)
    {
        if (n < MinTokensPerSplit || compute.Threads == 1)
        {
            body(0, n);
            return;
        }
        tokenRanges.Body = body;
        tokenRanges.Tokens = n;
        compute.Run(tokenRanges, compute.Threads);
        tokenRanges.Body = null;
    }

    private const int MinTokensPerSplit = 16;

    private sealed class TokenRangeJob : IParallelJob
    {
        public Action<int, int>? Body { get; set; }
        public int Tokens { get; set; }

        public void Run(int part, int parts) => Body!((int)((long)Tokens * part / parts), (int)((long)Tokens * (part + 1) / parts));
    }

    /// <summary>destination = x · r · weight with r = 1/√(mean(x²) + eps); returns r.</summary>
    internal static float RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> destination)
    {
        double sum = 0;
        foreach (float value in x)
            sum += (double)value * value;
        float scale = 1f / MathF.Sqrt((float)(sum / x.Length) + eps);
        TensorPrimitives.Multiply(x, scale, destination);
        TensorPrimitives.Multiply(destination, weight, destination);
        return scale;
    }

    /// <summary>Rotates the pairs of one head in place by the angles of position <paramref name="pos"/> in <paramref name="layer"/>'s tables.</summary>
    private void Rope(Span<float> head, int pos, Layer layer)
    {
        int half = config.RopeDimensions / 2;
        Rope(head, layer.RopeCos.AsSpan(pos * half, half), layer.RopeSin.AsSpan(pos * half, half), config.RopeStyle);
    }

    /// <summary>Rotates pair i of the first 2 × <paramref name="cos"/>.Length values of <paramref name="head"/> (paired as
    /// <paramref name="style"/> says within them) by the angle whose cosine and sine are <paramref name="cos"/>[i] and
    /// <paramref name="sin"/>[i]; the head's later values (a partial rotary embedding's) stay as they are, as in ggml.</summary>
    internal static void Rope(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, RopeStyle style)
    {
        int half = cos.Length;
        if (style == RopeStyle.Interleaved)
        {
            for (int i = 0; i < half; i++)
            {
                float a = head[2 * i], b = head[2 * i + 1];
                head[2 * i] = a * cos[i] - b * sin[i];
                head[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        }
        else
        {
            for (int i = 0; i < half; i++)
            {
                float a = head[i], b = head[i + half];
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = a * sin[i] + b * cos[i];
            }
        }
    }

    /// <summary>cos and sin of the rotary angle of every (position, pair) of the model's rotating values, as ggml's rope
    /// computes them: pair i of the RopeDimensions rotates by position × θ^(−2i / RopeDimensions), divided by pair i's
    /// divisor when the model has them (Llama 3's <see cref="TensorNames.RopeFrequencies"/>; Phi-3's long factors when
    /// <paramref name="contextLength"/> exceeds the original context, its short ones otherwise, as llama.cpp chooses),
    /// then divided by the linear factor or mixed by YaRN's ramp, and cos and sin multiplied by the attention factor
    /// (and YaRN's 1 + 0.1·ln(factor)). [contextLength, RopeDimensions / 2] each; <paramref name="deterministic"/>
    /// computes them with <see cref="DeterministicMath"/> instead of the C runtime.</summary>
    internal static (float[] Cos, float[] Sin) RopeTables(Model model, int contextLength, bool deterministic)
    {
        var config = model.Config;
        int half = config.RopeDimensions / 2;
        float[]? divisors = config.RopeFrequencyFactors ? ReadVector(model, TensorNames.RopeFrequencies, half)
            : config.LongRope ? ReadVector(model, contextLength > config.RopeOriginalContext ? TensorNames.RopeFactorsLong : TensorNames.RopeFactorsShort, half)
            : null;
        float attention = config.RopeAttentionFactor;
        (float Low, float High)? yarnRamp = null;
        if (config.Yarn)
        {
            yarnRamp = YarnCorrectionDimensions(config, deterministic);
            float mscale = 1f + 0.1f * Log(config.RopeScalingFactor, deterministic);
            attention *= config.YarnLogMultiplier == 0 ? mscale : mscale / (1f + 0.1f * config.YarnLogMultiplier * Log(config.RopeScalingFactor, deterministic));
        }
        return RopeTables(config.RopeDimensions, config.RopeTheta, config.RopeScalingFactor, divisors, yarnRamp, attention, contextLength, deterministic);
    }

    /// <summary>ggml's YaRN correction range: the pairs (floor of β_fast's, ceiling of β_slow's dimension, within
    /// [0, RopeDimensions − 1]) between which the angles move from unscaled to interpolated; dimension of β rotations over
    /// the original context n: RopeDimensions · ln(n / (2π·β)) / (2·ln θ), in f32 as ggml computes it.</summary>
    private static (float Low, float High) YarnCorrectionDimensions(ModelConfig config, bool deterministic)
    {
        int dims = config.RopeDimensions;
        float original = config.RopeOriginalContext > 0 ? config.RopeOriginalContext : config.ContextLength;
        float Dimension(float rotations) => dims * Log(original / (rotations * 2 * MathF.PI), deterministic) / (2 * Log(config.RopeTheta, deterministic));
        return (Math.Max(0f, MathF.Floor(Dimension(config.YarnBetaFast))), Math.Min(dims - 1f, MathF.Ceiling(Dimension(config.YarnBetaSlow))));
    }

    /// <summary>Llama 4's query temperature at <paramref name="position"/>, as llama.cpp's <c>llm_graph_input_attn_temp</c>
    /// computes it: 1 + β·ln(1 + ⌊position / original context⌋) (<see cref="ModelConfig.AttentionTemperatureScale"/>).</summary>
    internal static float AttentionTemperature(ModelConfig config, int position, bool deterministic)
    {
        double steps = 1 + Math.Floor((float)position / config.RopeOriginalContext);
        return (float)(1 + config.AttentionTemperatureScale * (deterministic ? DeterministicMath.Log(steps) : Math.Log(steps)));
    }

    private static float Log(float x, bool deterministic) => deterministic ? (float)DeterministicMath.Log(x) : MathF.Log(x);

    /// <summary>The rotary tables of <paramref name="dims"/> rotating values, base <paramref name="theta"/>, factor
    /// <paramref name="scalingFactor"/> (linear, or YaRN's between the pairs of <paramref name="yarnRamp"/>), per-pair
    /// <paramref name="divisors"/> (or none), cos and sin multiplied by <paramref name="attentionFactor"/>.</summary>
    private static (float[] Cos, float[] Sin) RopeTables(int dims, float theta, float scalingFactor, float[]? divisors, (float Low, float High)? yarnRamp,
        float attentionFactor, int contextLength, bool deterministic)
    {
        int half = dims / 2;
        var cos = new float[contextLength * half];
        var sin = new float[contextLength * half];
        for (int i = 0; i < half; i++)
        {
            double frequency = deterministic ? DeterministicMath.Pow(theta, -2.0 * i / dims) : Math.Pow(theta, -2.0 * i / dims);
            if (yarnRamp is var (low, high))
            {
                // ggml's rope_yarn: ramp 1 below the low pair (unscaled), 0 above the high one (interpolated).
                float ramp = 1 - Math.Min(1f, Math.Max(0f, (i - low) / Math.Max(0.001f, high - low)));
                frequency /= divisors?[i] ?? 1f;
                frequency *= (1 - ramp) / scalingFactor + ramp;
            }
            else
            {
                frequency /= scalingFactor * (divisors?[i] ?? 1f);
            }
            for (int pos = 0; pos < contextLength; pos++)
            {
                double angle = pos * frequency;
                (double c, double s) = deterministic ? DeterministicMath.CosSin(angle) : (Math.Cos(angle), Math.Sin(angle));
                cos[pos * half + i] = (float)c * attentionFactor;
                sin[pos * half + i] = (float)s * attentionFactor;
            }
        }
        return (cos, sin);
    }

    internal static float[] ReadVector(Model model, string name, int length)
    {
        var tensor = model[name];
        if (tensor.ElementCount != length)
            throw new InvalidOperationException($"{model.Source}: tensor '{name}' has {tensor.ElementCount} values, expected {length}");
        var values = new float[length];
        Dequantize.Row(tensor.Type, tensor.Row(0), values);
        return values;
    }

    internal static float[]? ReadOptionalVector(Model model, string name, int length)
        => model.TryGetTensor(name, out _) ? ReadVector(model, name, length) : null;

    /// <summary>Stops the worker threads and frees the scratch memory and the row groups.</summary>
    public void Dispose()
    {
        compute.Dispose();
        foreach (var weight in rowGroups)
            weight.Dispose();
    }

    /// <summary><paramref name="weight"/>, or outside the deterministic mode its <see cref="RowGroupWeight"/> when its
    /// decode steps can run on row groups (kept to be freed with the runtime).</summary>
    private LinearWeight Decoding(LinearWeight weight)
    {
        if (deterministic || RowGroupWeight.For(weight) is not { } grouped)
            return weight;
        rowGroups.Add(grouped);
        return grouped;
    }

    /// <summary>The weights of one decoder block.</summary>
    private sealed class Layer
    {
        public Layer(Model model, int index, float[] ropeCos, float[] ropeSin, Func<string, LinearWeight> weight)
        {
            var config = model.Config;
            Index = index;
            RopeCos = ropeCos;
            RopeSin = ropeSin;
            if (config.PostNorms)
            {
                PostAttentionNorm = ReadVector(model, TensorNames.PostAttentionNorm(index), config.Dim);
                PostFeedForwardNorm = ReadVector(model, TensorNames.PostFeedForwardNorm(index), config.Dim);
            }
            AttentionNorm = ReadVector(model, TensorNames.AttentionNorm(index), config.Dim);
            FeedForwardNorm = ReadVector(model, TensorNames.FeedForwardNorm(index), config.Dim);
            Query = weight(TensorNames.Query(index));
            Key = weight(TensorNames.Key(index));
            Value = weight(TensorNames.Value(index));
            AttentionOutput = weight(TensorNames.AttentionOutput(index));
            if (config.IsMixtureOfExperts)
            {
                Router = model.Weight(TensorNames.ExpertRouter(index));
                GateExperts = model.ExpertWeights(TensorNames.GateExperts(index));
                UpExperts = model.ExpertWeights(TensorNames.UpExperts(index));
                DownExperts = model.ExpertWeights(TensorNames.DownExperts(index));
                CheckShape(model, Router, config.ExpertCount, config.Dim);
                foreach (var (experts, rows, columns) in new[] { (GateExperts, config.ExpertHiddenDim, config.Dim), (UpExperts, config.ExpertHiddenDim, config.Dim), (DownExperts, config.Dim, config.ExpertHiddenDim) })
                {
                    if (experts.Count != config.ExpertCount)
                        throw new InvalidOperationException($"{model.Source}: tensor '{experts[0].Name}' holds {experts.Count} experts, expected {config.ExpertCount}");
                    CheckShape(model, experts[0], rows, columns);
                }
                if (config.SharedExpertHiddenDim > 0)
                {
                    SharedGate = weight(TensorNames.GateShared(index));
                    SharedUp = weight(TensorNames.UpShared(index));
                    SharedDown = weight(TensorNames.DownShared(index));
                    var sharedExpertGate = model[TensorNames.SharedExpertGate(index)];
                    if (sharedExpertGate.Shape is not [var width] || width != config.Dim)
                        throw new InvalidOperationException($"{model.Source}: tensor '{sharedExpertGate.Name}' is [{string.Join(", ", sharedExpertGate.Shape)}], expected [{config.Dim}]");
                    SharedExpertGate = new BlockWeight(new Tensor(sharedExpertGate.Name, sharedExpertGate.Type, [1, config.Dim], sharedExpertGate.Buffer, sharedExpertGate.Offset));
                    CheckShape(model, SharedGate, config.SharedExpertHiddenDim, config.Dim);
                    CheckShape(model, SharedUp, config.SharedExpertHiddenDim, config.Dim);
                    CheckShape(model, SharedDown, config.Dim, config.SharedExpertHiddenDim);
                }
            }
            else
            {
                Gate = weight(TensorNames.Gate(index));
                Up = weight(TensorNames.Up(index));
                Down = weight(TensorNames.Down(index));
                CheckShape(model, Gate, config.HiddenDim, config.Dim);
                CheckShape(model, Up, config.HiddenDim, config.Dim);
                CheckShape(model, Down, config.Dim, config.HiddenDim);
            }
            QueryBias = ReadOptionalVector(model, TensorNames.QueryBias(index), config.QDim);
            KeyBias = ReadOptionalVector(model, TensorNames.KeyBias(index), config.KvDim);
            ValueBias = ReadOptionalVector(model, TensorNames.ValueBias(index), config.KvDim);
            QueryNorm = ReadOptionalVector(model, TensorNames.QueryNorm(index), config.HeadDim);
            KeyNorm = ReadOptionalVector(model, TensorNames.KeyNorm(index), config.HeadDim);
            if ((QueryBias is null) != (KeyBias is null) || (KeyBias is null) != (ValueBias is null))
                throw new InvalidOperationException($"{model.Source}: layer {index} has biases on some of q, k, v but not all");
            CheckShape(model, Query, config.QDim, config.Dim);
            CheckShape(model, Key, config.KvDim, config.Dim);
            CheckShape(model, Value, config.KvDim, config.Dim);
            CheckShape(model, AttentionOutput, config.Dim, config.QDim);
        }

        public int Index { get; }
        public float[] AttentionNorm { get; }   // [dim]
        public float[] FeedForwardNorm { get; } // [dim]
        public LinearWeight Query { get; }            // [qDim, dim]
        public LinearWeight Key { get; }              // [kvDim, dim]
        public LinearWeight Value { get; }            // [kvDim, dim]
        public LinearWeight AttentionOutput { get; }  // [dim, qDim]
        public LinearWeight? Gate { get; }            // [hidden, dim] (dense)
        public LinearWeight? Up { get; }              // [hidden, dim]
        public LinearWeight? Down { get; }            // [dim, hidden]
        public LinearWeight? Router { get; }                        // [experts, dim] (mixture of experts)
        public IReadOnlyList<LinearWeight>? GateExperts { get; }    // [experts][expertHidden, dim]
        public IReadOnlyList<LinearWeight>? UpExperts { get; }      // [experts][expertHidden, dim]
        public IReadOnlyList<LinearWeight>? DownExperts { get; }    // [experts][dim, expertHidden]
        public LinearWeight? SharedGate { get; }      // [sharedHidden, dim] (Qwen2-MoE's shared expert)
        public LinearWeight? SharedUp { get; }        // [sharedHidden, dim]
        public LinearWeight? SharedDown { get; }      // [dim, sharedHidden]
        public LinearWeight? SharedExpertGate { get; } // [1, dim]
        public float[]? QueryBias { get; }      // [qDim]
        public float[]? KeyBias { get; }        // [kvDim]
        public float[]? ValueBias { get; }      // [kvDim]
        public float[]? QueryNorm { get; }      // [headDim]
        public float[]? KeyNorm { get; }        // [headDim]
        public float[]? PostAttentionNorm { get; }   // [dim] Gemma's norm on the attention's output
        public float[]? PostFeedForwardNorm { get; } // [dim] Gemma's norm on the feed-forward's output
        public float[] RopeCos { get; }         // [contextLength, ropeDimensions / 2] this layer's rotary tables (sliding or global)
        public float[] RopeSin { get; }         // [contextLength, ropeDimensions / 2]

        private static void CheckShape(Model model, LinearWeight weight, long rows, long columns)
        {
            if (weight.Rows != rows || weight.Columns != columns)
                throw new InvalidOperationException($"{model.Source}: tensor '{weight.Name}' is [{weight.Rows}, {weight.Columns}], expected [{rows}, {columns}]");
        }
    }
}

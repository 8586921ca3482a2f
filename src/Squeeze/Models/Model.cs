using Squeeze.Tensors;
using Squeeze.Tokenizers;
using Squeeze.Weights;

namespace Squeeze.Models;

/// <summary>
/// A loaded checkpoint: hyperparameters, named tensors (llama.cpp's GGUF names, q/k rows in the order
/// <see cref="ModelConfig.RopeStyle"/> says) and the vocabulary. Tensors in GGUF's types are <see cref="Tensors"/>;
/// weight matrices in representations GGUF cannot express (a native file's codebooks, low-rank factors …) are
/// <see cref="Weights"/>. <see cref="Weight"/> gives any weight matrix as the runtime multiplies it. Tensors point into
/// memory-mapped files or owned buffers, which the model releases when disposed.
/// </summary>
public sealed class Model : IDisposable
{
    private readonly Dictionary<string, Tensor> byName;
    private readonly Dictionary<string, LinearWeight> weightsByName;
    private readonly IReadOnlyList<IDisposable> owned;
    private Tokenizer? tokenizer;

    /// <param name="config">Hyperparameters.</param>
    /// <param name="vocabulary">The vocabulary.</param>
    /// <param name="tensors">Tensors in GGUF's types.</param>
    /// <param name="source">The file or directory read.</param>
    /// <param name="owned">Buffers and files the model releases when disposed.</param>
    /// <param name="weights">Weight matrices in other representations; none may share a name with a tensor.</param>
    public Model(ModelConfig config, Vocabulary vocabulary, IReadOnlyList<Tensor> tensors, string source, IReadOnlyList<IDisposable> owned,
        IReadOnlyList<LinearWeight>? weights = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(vocabulary);
        ArgumentNullException.ThrowIfNull(tensors);
        Config = config;
        Vocabulary = vocabulary;
        Tensors = tensors;
        Weights = weights ?? [];
        Source = source;
        this.owned = owned;
        byName = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (!byName.TryAdd(t.Name, t))
                throw new ArgumentException($"{source}: tensor '{t.Name}' appears twice", nameof(tensors));
        }
        weightsByName = new Dictionary<string, LinearWeight>(StringComparer.Ordinal);
        foreach (var w in Weights)
        {
            if (byName.ContainsKey(w.Name) || !weightsByName.TryAdd(w.Name, w))
                throw new ArgumentException($"{source}: tensor '{w.Name}' appears twice", nameof(weights));
        }
    }

    /// <summary>The hyperparameters.</summary>
    public ModelConfig Config { get; }

    /// <summary>Tokens, scores and special ids, as GGUF stores them.</summary>
    public Vocabulary Vocabulary { get; }

    /// <summary>The tokenizer built from <see cref="Vocabulary"/> on first use.</summary>
    public Tokenizer Tokenizer => tokenizer ??= Tokenizer.Create(Vocabulary);

    /// <summary>Tensors in GGUF's types, in file order.</summary>
    public IReadOnlyList<Tensor> Tensors { get; }

    /// <summary>Weight matrices in representations other than GGUF's types (empty for GGUF, llama2.c and Hugging Face
    /// checkpoints).</summary>
    public IReadOnlyList<LinearWeight> Weights { get; }

    /// <summary>The file or directory the model was read from.</summary>
    public string Source { get; }

    /// <summary>What of the source this model does not hold, in a sentence (a multimodal checkpoint's vision tower and
    /// projector: only its language model is read), or null when it holds all of it.</summary>
    public string? LeftOut { get; init; }

    /// <summary>The tensor <paramref name="name"/> in a GGUF type; <see cref="KeyNotFoundException"/> naming the source if there is none.</summary>
    public Tensor this[string name] => byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"{Source}: no tensor '{name}'");

    /// <summary>The tensor <paramref name="name"/>, if the model holds it in a GGUF type (a weight in another representation is not a tensor).</summary>
    public bool TryGetTensor(string name, out Tensor tensor) => byName.TryGetValue(name, out tensor!);

    /// <summary>True when <paramref name="name"/> is a tensor or a weight.</summary>
    public bool Contains(string name) => byName.ContainsKey(name) || weightsByName.ContainsKey(name);

    /// <summary>The weight <paramref name="name"/> as the runtime multiplies it: one of <see cref="Weights"/>, a
    /// <see cref="BlockWeight"/> over the 2-D tensor of that name, or, for a stacked 3-D tensor of routed experts, an
    /// <see cref="ExpertStackWeight"/> of <see cref="ExpertWeights"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such weight.</exception>
    /// <exception cref="ArgumentException">The tensor is neither 2-D nor 3-D.</exception>
    public LinearWeight Weight(string name)
        => weightsByName.TryGetValue(name, out var w) ? w
            : this[name].Shape.Length == 3 ? new ExpertStackWeight(name, ExpertWeights(name)) : new BlockWeight(this[name]);

    /// <summary>The routed experts of the stacked tensor <paramref name="name"/> ([experts, rows, columns], llama.cpp's
    /// <c>ffn_*_exps</c>): a native model's <see cref="ExpertStackWeight"/>'s experts, or, for a 3-D tensor, each expert
    /// as a 2-D weight over its own rows of the same bytes (every GGUF type quantizes along rows, so expert e is rows
    /// [e·rows, (e + 1)·rows) of the stored matrix).</summary>
    /// <exception cref="KeyNotFoundException">No such tensor or weight.</exception>
    /// <exception cref="ArgumentException">Neither a 3-D tensor nor a stack of experts.</exception>
    public IReadOnlyList<LinearWeight> ExpertWeights(string name)
    {
        if (weightsByName.TryGetValue(name, out var w))
            return w is ExpertStackWeight stack ? stack.Experts : throw new ArgumentException($"{Source}: weight '{name}' is {w.Scheme}, not a stack of experts", nameof(name));
        var t = this[name];
        if (t.Shape.Length != 3)
            throw new ArgumentException($"{Source}: tensor '{name}' is [{string.Join(", ", t.Shape)}], not [experts, rows, columns]", nameof(name));
        long rows = t.Shape[1];
        return [.. Enumerable.Range(0, checked((int)t.Shape[0])).Select(e =>
            (LinearWeight)new BlockWeight(new Tensor(name, t.Type, [rows, t.Columns], t.Buffer, t.Offset + e * rows * t.RowBytes)))];
    }

    /// <summary>Number of weights (elements of every tensor and weight matrix).</summary>
    public long ParameterCount => Tensors.Sum(t => t.ElementCount) + Weights.Sum(w => (long)w.Rows * w.Columns);

    /// <summary>Bytes of every tensor's data and every weight's stored representation.</summary>
    public long TensorBytes => Tensors.Sum(t => t.ByteLength) + Weights.Sum(w => w.StoredBytes);

    /// <summary>
    /// A model with this one's configuration, vocabulary and tensors, except those named in
    /// <paramref name="replacements"/>: each is given as its type and encoded bytes (same shape as the tensor it replaces)
    /// and copied into a buffer the new model owns. The new model shares every other tensor with this one, so this model
    /// must outlive it.
    /// </summary>
    /// <exception cref="ArgumentException">A replacement names no tensor, or its bytes are not the tensor's size in its type.</exception>
    public unsafe Model WithTensors(IReadOnlyDictionary<string, (GgmlType Type, byte[] Bytes)> replacements)
    {
        ArgumentNullException.ThrowIfNull(replacements);
        foreach (string name in replacements.Keys)
        {
            if (!byName.ContainsKey(name))
                throw new ArgumentException($"{Source}: no tensor '{name}' to replace", nameof(replacements));
        }
        var copies = new List<IDisposable>();
        var tensors = new List<Tensor>(Tensors.Count);
        foreach (var t in Tensors)
        {
            if (!replacements.TryGetValue(t.Name, out var r))
            {
                tensors.Add(t);
                continue;
            }
            long expected = GgmlTypes.RowBytes(r.Type, t.Columns) * t.Rows;
            if (r.Bytes.LongLength != expected)
                throw new ArgumentException($"tensor '{t.Name}' in {r.Type} takes {expected} bytes, not {r.Bytes.LongLength}", nameof(replacements));
            var buffer = NativeBuffer.Allocate(r.Bytes.LongLength);
            copies.Add(buffer);
            r.Bytes.CopyTo(new Span<byte>(buffer.Pointer, r.Bytes.Length));
            tensors.Add(new Tensor(t.Name, r.Type, t.Shape, buffer, 0));
        }
        return new Model(Config, Vocabulary, tensors, Source, copies, Weights);
    }

    /// <summary>
    /// A model with this one's configuration, vocabulary, tensors and weights, except that the weights named by
    /// <paramref name="replacements"/> (tensors or weights of this model) are those representations. The new model owns
    /// nothing and shares everything else, so this model must outlive it.
    /// </summary>
    /// <exception cref="ArgumentException">A replacement names nothing in this model or has another shape.</exception>
    public Model WithWeights(IEnumerable<LinearWeight> replacements)
    {
        ArgumentNullException.ThrowIfNull(replacements);
        var byReplacement = new Dictionary<string, LinearWeight>(StringComparer.Ordinal);
        foreach (var w in replacements)
        {
            var original = Contains(w.Name) ? Weight(w.Name) : throw new ArgumentException($"{Source}: no tensor '{w.Name}' to replace", nameof(replacements));
            if (original.Rows != w.Rows || original.Columns != w.Columns)
                throw new ArgumentException($"tensor '{w.Name}' is [{original.Rows}, {original.Columns}] but its replacement is [{w.Rows}, {w.Columns}]", nameof(replacements));
            if (original is ExpertStackWeight stack && (w is not ExpertStackWeight replacement || replacement.Experts.Count != stack.Experts.Count))
                throw new ArgumentException($"tensor '{w.Name}' holds {stack.Experts.Count} experts; its replacement {w.Scheme} is not a stack of as many", nameof(replacements));
            if (!byReplacement.TryAdd(w.Name, w))
                throw new ArgumentException($"tensor '{w.Name}' is replaced twice", nameof(replacements));
        }
        var tensors = Tensors.Where(t => !byReplacement.ContainsKey(t.Name)).ToList();
        var weights = Weights.Where(w => !byReplacement.ContainsKey(w.Name)).Concat(byReplacement.Values).ToList();
        return new Model(Config, Vocabulary, tensors, Source, [], weights);
    }

    /// <summary>Releases the files and buffers this model owns (not those of a model it was copied from).</summary>
    public void Dispose()
    {
        foreach (var d in owned)
            d.Dispose();
    }
}

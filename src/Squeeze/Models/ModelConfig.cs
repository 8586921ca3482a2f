namespace Squeeze.Models;

/// <summary>How rotary position embedding pairs up the values of a head.</summary>
public enum RopeStyle
{
    /// <summary>Meta's order: pairs (0,1), (2,3), … (llama2.c, GGUF llama).</summary>
    Interleaved,

    /// <summary>GPT-NeoX / Hugging Face order: pairs (i, i + headDim/2) (GGUF qwen2, qwen3).</summary>
    Neox,
}

/// <summary>Hyperparameters of a Llama-family decoder. Tensor names follow llama.cpp's GGUF convention
/// (<c>token_embd.weight</c>, <c>blk.N.attn_q.weight</c> …) whatever the source file was.</summary>
public sealed record ModelConfig
{
    /// <summary>GGUF architecture name: "llama", "qwen2", "qwen3".</summary>
    public required string Architecture { get; init; }

    /// <summary>Model width (embedding length).</summary>
    public required int Dim { get; init; }

    /// <summary>Feed-forward width.</summary>
    public required int HiddenDim { get; init; }

    /// <summary>Number of transformer blocks.</summary>
    public required int LayerCount { get; init; }

    /// <summary>Number of query heads.</summary>
    public required int HeadCount { get; init; }

    /// <summary>Number of key/value heads; fewer than <see cref="HeadCount"/> under grouped-query attention.</summary>
    public required int KvHeadCount { get; init; }

    /// <summary>Values per attention head; usually Dim / HeadCount (Qwen3 may differ).</summary>
    public required int HeadDim { get; init; }

    /// <summary>Number of tokens: rows of the token embedding and of the output classifier.</summary>
    public required int VocabSize { get; init; }

    /// <summary>The context length the model was trained with.</summary>
    public required int ContextLength { get; init; }

    /// <summary>Base of the rotary embedding's frequencies (10000 for Llama 2).</summary>
    public float RopeTheta { get; init; } = 10000f;

    /// <summary>Number of values per head that rotate (GGUF <c>rope.dimension_count</c>).</summary>
    public int RopeDimensions => HeadDim;

    /// <summary>How the rotary embedding pairs up a head's values.</summary>
    public RopeStyle RopeStyle { get; init; } = RopeStyle.Interleaved;

    /// <summary>Linear rotary scaling (GGUF <c>rope.scaling.type</c> "linear", <c>rope.scaling.factor</c>): positions are
    /// divided by this factor; 1 means none.</summary>
    public float RopeScalingFactor { get; init; } = 1f;

    /// <summary>Llama 3 rotary scaling: the model holds <see cref="TensorNames.RopeFrequencies"/> ([HeadDim / 2]), by
    /// which each pair's rotary frequency is divided, as llama.cpp stores and applies it (<see cref="RopeScaling.Llama3Factors"/>).</summary>
    public bool RopeFrequencyFactors { get; init; }

    /// <summary>Epsilon added to the mean square in every RMSNorm.</summary>
    public float RmsNormEps { get; init; } = 1e-5f;

    /// <summary>True when the output classifier reuses <c>token_embd.weight</c> (no <c>output.weight</c>).</summary>
    public bool TiedEmbeddings { get; init; }

    /// <summary>Qwen2: q, k and v projections carry biases (<c>blk.N.attn_q.bias</c> …).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Qwen3: RMSNorm on each head of q and k (<c>blk.N.attn_q_norm.weight</c>).</summary>
    public bool QkNorm { get; init; }

    /// <summary>Width of the key and value projections.</summary>
    public int KvDim => KvHeadCount * HeadDim;

    /// <summary>Width of the query projection.</summary>
    public int QDim => HeadCount * HeadDim;
}

using Squeeze.Runtime;

namespace Squeeze.Server;

/// <summary>Settings of a <see cref="SqueezeServer"/>: what <c>squeeze serve</c>'s flags set.</summary>
public sealed record ServerOptions
{
    /// <summary>The model served: any checkpoint Squeeze reads (GGUF, native, Hugging Face, llama2.c).</summary>
    public required string Model { get; init; }

    /// <summary>Tokenizer file for a llama2.c checkpoint.</summary>
    public string? Tokenizer { get; init; }

    /// <summary>The original model the comparison page sets beside <see cref="Model"/>; null for none.</summary>
    public string? Base { get; init; }

    /// <summary>Tokenizer file for a llama2.c <see cref="Base"/>.</summary>
    public string? BaseTokenizer { get; init; }

    /// <summary>Address to listen on.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>Port to listen on; 0 picks a free one (see <see cref="SqueezeServer.Address"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>Sequences decoded together in one forward pass (and KV caches held), per model.</summary>
    public int Parallel { get; init; } = 4;

    /// <summary>Requests waiting for a free sequence beyond which new ones are refused (429).</summary>
    public int QueueLength { get; init; } = 64;

    /// <summary>KV-cache policy of every sequence.</summary>
    public KvCachePolicy KvCache { get; init; } = KvCachePolicy.Float32;

    /// <summary>Positions each sequence's cache holds (prompt and answer); 0 means the model's context length.</summary>
    public int ContextLength { get; init; }

    /// <summary>Threads of the forward pass.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>Most prompt tokens a request may send; 0 means the context less one.</summary>
    public int MaxPromptTokens { get; init; }

    /// <summary>Most tokens one request may generate (and the default of <c>max_tokens</c>).</summary>
    public int MaxTokens { get; init; } = 1024;

    /// <summary>Longest a request may run, queued and generating, before it ends with finish reason "length".</summary>
    public TimeSpan TimeLimit { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Largest request body accepted (413 beyond).</summary>
    public long MaxBodyBytes { get; init; } = 1 << 20;

    /// <summary>Chat template instead of the model's: a family name or a Jinja text (<see cref="Generation.ChatTemplate"/>).</summary>
    public string? ChatTemplate { get; init; }

    /// <summary>Prompt tokens run for one sequence in one forward pass, so that a long prompt does not stall the others'
    /// decoding for long.</summary>
    public int PrefillChunk { get; init; } = 128;
}

using System.Collections.Concurrent;
using Squeeze.Runtime;

namespace Squeeze.Server;

/// <summary>Why a sequence stopped, in the OpenAI API's words ("stop", "length") or as the server ended it.</summary>
internal enum FinishReason
{
    /// <summary>Still running.</summary>
    None,

    /// <summary>An end-of-sequence or end-of-turn token, or a stop text.</summary>
    Stop,

    /// <summary>max_tokens, the end of the context, or the server's time limit.</summary>
    Length,

    /// <summary>The client went away or the server is stopping.</summary>
    Cancelled,

    /// <summary>The forward pass failed.</summary>
    Error,
}

/// <summary>
/// One sequence a <see cref="ModelWorker"/> runs in its batches, with a KV cache of its own while it runs. Tokens to run
/// wait in <see cref="Feed"/> (the prompt first); after the last of them the worker hands the sequence that position's
/// logits (<see cref="OnLogits"/>), and the sequence decides what to feed next. Everything but <see cref="Feed"/>,
/// <see cref="Cancel"/> and the completion task is touched by the worker's thread alone.
/// </summary>
internal abstract class Sequence : IDisposable
{
    private readonly CancellationTokenSource cancellation;
    private readonly TaskCompletionSource<FinishReason> finished = new(TaskCreationOptions.RunContinuationsAsynchronously);

    protected Sequence(int[] prompt, TimeSpan timeLimit, CancellationToken requestAborted)
    {
        Prompt = prompt;
        foreach (int token in prompt)
            Feed.Enqueue(token);
        cancellation = CancellationTokenSource.CreateLinkedTokenSource(requestAborted);
        Deadline = DateTime.UtcNow + timeLimit;
    }

    /// <summary>The prompt's token ids.</summary>
    public int[] Prompt { get; }

    /// <summary>Tokens to run next, in order.</summary>
    public ConcurrentQueue<int> Feed { get; } = new();

    /// <summary>The cache the sequence runs in, while it holds one.</summary>
    public KvCache? Cache { get; set; }

    /// <summary>Positions run so far (the next token goes here).</summary>
    public int Position { get; set; }

    /// <summary>When the time limit ends the sequence.</summary>
    public DateTime Deadline { get; }

    /// <summary>Whether the client went away or someone cancelled the sequence.</summary>
    public bool IsCancelled => cancellation.IsCancellationRequested;

    /// <summary>Whether, past the prompt, the sequence runs one token per step and wants the logits after each (a
    /// follower scores each of another model's tokens); otherwise it wants logits only after the last token fed.</summary>
    public virtual bool OneTokenAtATime => false;

    /// <summary>True when the sequence has nothing more to run and is done (a follower whose source has finished).</summary>
    public virtual bool IsComplete => false;

    /// <summary>Ends the sequence at the worker's next step.</summary>
    public void Cancel() => cancellation.Cancel();

    /// <summary>Completes when the worker has let the sequence go, with why.</summary>
    public Task<FinishReason> Finished => finished.Task;

    /// <summary>Logits [vocab] after the token at <paramref name="position"/>; returns the reason to stop, or
    /// <see cref="FinishReason.None"/> to go on (having fed what comes next, or waiting for it).</summary>
    public abstract FinishReason OnLogits(ReadOnlySpan<float> logits, int position);

    /// <summary>Called once by the worker when the sequence stops, before <see cref="Finished"/> completes.</summary>
    protected virtual void OnFinished(FinishReason reason)
    {
    }

    /// <summary>The worker lets the sequence go.</summary>
    public void Finish(FinishReason reason)
    {
        OnFinished(reason);
        finished.TrySetResult(reason);
    }

    /// <summary>Unlinks the sequence from its request; call once it has finished.</summary>
    public void Dispose() => cancellation.Dispose();
}

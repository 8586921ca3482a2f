namespace Squeeze.Server;

/// <summary>
/// Runs another model's prompt and generated tokens, one at a time, to score them: after the prompt and after each
/// token but the last it hands its logits (its distribution for that model's next token) to <c>onScore</c> with the
/// index of the generated token they predict. Finishes once it has scored every token its source generated.
/// </summary>
internal sealed class FollowerSequence(ModelWorker worker, int[] prompt, Action<int, ReadOnlySpan<float>> onScore, TimeSpan timeLimit, CancellationToken requestAborted)
    : Sequence(prompt, timeLimit, requestAborted)
{
    private int expected = -1; // tokens the source generated, once it has finished
    private int scored;

    /// <inheritdoc/>
    public override bool OneTokenAtATime => true;

    /// <inheritdoc/>
    public override bool IsComplete
    {
        get
        {
            int n = Volatile.Read(ref expected);
            return n >= 0 && scored >= n;
        }
    }

    /// <summary>The source generated <paramref name="token"/>: run it next.</summary>
    public void Follow(int token)
    {
        Feed.Enqueue(token);
        worker.Wake();
    }

    /// <summary>The source finished after generating <paramref name="generated"/> tokens.</summary>
    public void SourceFinished(int generated)
    {
        Volatile.Write(ref expected, generated);
        worker.Wake();
    }

    /// <inheritdoc/>
    public override FinishReason OnLogits(ReadOnlySpan<float> logits, int position)
    {
        int index = position - (Prompt.Length - 1);
        int n = Volatile.Read(ref expected);
        if (n < 0 || index < n)
            onScore(index, logits);
        scored = index + 1;
        return IsComplete ? FinishReason.Stop : FinishReason.None;
    }
}

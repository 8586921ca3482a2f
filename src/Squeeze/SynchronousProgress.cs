namespace Squeeze;

/// <summary>An <see cref="IProgress{T}"/> that calls its handler on the reporting thread, at once
/// (<see cref="Progress{T}"/> posts to the thread pool and lags behind long work).</summary>
public sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    /// <summary>Calls the handler with <paramref name="value"/> before returning.</summary>
    public void Report(T value) => report(value);
}

/// <summary>Progress of one stage of a job of several: the stage's name and number (1-based) of the job's
/// <paramref name="Count"/>, its steps done of its total, and a note (what is being worked on).</summary>
public readonly record struct StageProgress(string Stage, int Number, int Count, double Done, double Total, string Note);

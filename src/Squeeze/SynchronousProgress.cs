namespace Squeeze;

/// <summary>An <see cref="IProgress{T}"/> that calls its handler on the reporting thread, at once
/// (<see cref="Progress{T}"/> posts to the thread pool and lags behind long work).</summary>
public sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    /// <summary>Calls the handler with <paramref name="value"/> before returning.</summary>
    public void Report(T value) => report(value);
}

namespace Squeeze.Cli;

/// <summary>An IProgress that reports on the calling thread (System.Progress posts to the thread pool and lags behind).</summary>
internal sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

namespace Squeeze.Kernels;

/// <summary>Threads and scratch memory for the kernels. One context per runtime; not thread-safe itself.</summary>
public sealed class ComputeContext : IDisposable
{
    public ComputeContext(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        Threads = threads;
    }

    public int Threads { get; }

    public void Dispose()
    {
    }
}

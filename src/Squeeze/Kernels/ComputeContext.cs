using System.Runtime.InteropServices;

namespace Squeeze.Kernels;

/// <summary>
/// Threads and scratch memory for the kernels: a persistent pool of <see cref="Threads"/> − 1 worker threads (the
/// calling thread does one share of each job itself; with one thread everything runs inline) and a reusable 64-byte
/// aligned scratch buffer, so products allocate nothing per call. One context per runtime; not thread-safe itself.
/// </summary>
public sealed unsafe class ComputeContext : IDisposable
{
    private readonly WorkerPool? pool;
    private byte* scratch;
    private nuint scratchBytes;

    /// <summary>A context running jobs on <paramref name="threads"/> threads (≥ 1, the caller included).</summary>
    public ComputeContext(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        Threads = threads;
        if (threads > 1)
            pool = new WorkerPool(threads - 1);
    }

    /// <summary>Number of threads a job is split across (the caller included).</summary>
    public int Threads { get; }

    internal MatMul.Job MatMulJob { get; } = new();

    /// <summary>At least <paramref name="bytes"/> bytes of 64-byte aligned scratch memory, valid until the next call.</summary>
    internal byte* Scratch(long bytes)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if ((nuint)bytes > scratchBytes)
        {
            NativeMemory.AlignedFree(scratch);
            scratch = null;
            nuint size = Math.Max((nuint)bytes, scratchBytes * 2);
            scratch = (byte*)NativeMemory.AlignedAlloc(size, 64);
            scratchBytes = size;
        }
        return scratch;
    }

    /// <summary>Runs <c>job.Run(part, parts)</c> for every part in [0, parts): part 0 on the calling thread, the others
    /// on the pool. Returns when all are done; rethrows the first exception a part threw.</summary>
    internal void Run(IParallelJob job, int parts)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        parts = Math.Clamp(parts, 1, Threads);
        if (parts == 1 || pool is null)
            job.Run(0, 1);
        else
            pool.Run(job, parts);
    }

    private bool disposed;

    /// <summary>Stops the worker threads and frees the scratch memory.</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        pool?.Dispose();
        NativeMemory.AlignedFree(scratch);
        scratch = null;
        scratchBytes = 0;
    }
}

/// <summary>A job split in parts that run on different threads.</summary>
internal interface IParallelJob
{
    /// <summary>Does part <paramref name="part"/> of <paramref name="parts"/>.</summary>
    void Run(int part, int parts);
}

/// <summary>Persistent worker threads that each wait for a signal, run their part of a job, and count down.</summary>
internal sealed class WorkerPool : IDisposable
{
    // Spin a while before blocking: the forward pass issues products back to back, microseconds apart.
    private const int SpinCount = 2000;

    private readonly Thread[] threads;
    private readonly ManualResetEventSlim[] start;
    private readonly ManualResetEventSlim done = new(false, SpinCount);
    private IParallelJob? job;
    private int parts;
    private int remaining;
    private volatile bool stopping;
    private Exception? error;

    public WorkerPool(int workers)
    {
        threads = new Thread[workers];
        start = new ManualResetEventSlim[workers];
        for (int i = 0; i < workers; i++)
        {
            start[i] = new ManualResetEventSlim(false, SpinCount);
            int index = i;
            threads[i] = new Thread(() => Work(index)) { IsBackground = true, Name = $"Squeeze kernel worker {i + 1}" };
            threads[i].Start();
        }
    }

    public void Run(IParallelJob job, int parts)
    {
        this.job = job;
        this.parts = parts;
        error = null;
        Volatile.Write(ref remaining, parts - 1);
        for (int i = 0; i < parts - 1; i++)
            start[i].Set();
        try
        {
            job.Run(0, parts);
        }
        finally
        {
            done.Wait();
            done.Reset();
            this.job = null;
        }
        if (error is not null)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
    }

    private void Work(int index)
    {
        ManualResetEventSlim signal = start[index];
        while (true)
        {
            signal.Wait();
            signal.Reset();
            if (stopping)
                return;
            try
            {
                job!.Run(index + 1, parts);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref error, e, null);
            }
            if (Interlocked.Decrement(ref remaining) == 0)
                done.Set();
        }
    }

    public void Dispose()
    {
        stopping = true;
        foreach (ManualResetEventSlim s in start)
            s.Set();
        foreach (Thread t in threads)
            t.Join();
        foreach (ManualResetEventSlim s in start)
            s.Dispose();
        done.Dispose();
    }
}

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
    private readonly Dictionary<Type, IParallelJob> jobs = [];

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

    /// <summary>Products use the deterministic kernels: the same bits at every SIMD level on every machine
    /// (<see cref="DeterministicMath"/>; slower for the types that fall back to the scalar references).</summary>
    public bool Deterministic { get; init; }

    /// <summary>This context's one instance of the job type <typeparamref name="T"/> (a product's parameters and its
    /// per-part code), made on first use and reused by every later call, so products allocate nothing per call.</summary>
    internal T Job<T>() where T : class, IParallelJob, new()
    {
        if (!jobs.TryGetValue(typeof(T), out var job))
            jobs[typeof(T)] = job = new T();
        return (T)job;
    }

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

    /// <summary>Runs <c>job.Run(part, parts)</c> for every part in [0, parts) (at most 65535), on the calling thread and the
    /// pool's workers, whichever is free. Returns when all are done; rethrows the first exception a part threw.</summary>
    internal void Run(IParallelJob job, int parts)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        parts = Math.Clamp(parts, 1, ushort.MaxValue);
        if (parts == 1 || pool is null)
        {
            for (int part = 0; part < parts; part++)
                job.Run(part, parts);
        }
        else
        {
            pool.Run(job, parts);
        }
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

/// <summary>
/// Persistent worker threads. A job's parts are claimed one at a time by whoever is free (the calling thread included),
/// so a worker that wakes late, or not at all on a busy machine, only means the caller does more parts itself. Which
/// thread runs a part never changes what the part computes.
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    // Spin a while before blocking: the forward pass issues products back to back, microseconds apart.
    private const int SpinCount = 2000;

    private readonly Thread[] threads;
    private readonly ManualResetEventSlim[] start;
    private readonly ManualResetEventSlim done = new(false, SpinCount);
    private IParallelJob? job;
    // generation (32 bits) | next part to claim (16 bits) | parts (16 bits): a claim succeeds only for the current job
    private long state;
    private int remaining;
    private uint generation;
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
        ArgumentOutOfRangeException.ThrowIfGreaterThan(parts, ushort.MaxValue);
        this.job = job;
        error = null;
        Volatile.Write(ref remaining, parts);
        generation++;
        Volatile.Write(ref state, ((long)generation << 32) | (uint)parts); // publishes job and remaining first
        for (int i = 0; i < Math.Min(threads.Length, parts - 1); i++)
            start[i].Set();
        RunParts();
        done.Wait();
        done.Reset();
        if (error is not null)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
    }

    /// <summary>Claims and runs parts of the current job until none is left.</summary>
    private void RunParts()
    {
        while (true)
        {
            long s = Volatile.Read(ref state);
            IParallelJob? current = Volatile.Read(ref job);
            int parts = (int)(s & 0xFFFF), next = (int)((s >> 16) & 0xFFFF);
            if (next >= parts || current is null)
                return;
            if (Interlocked.CompareExchange(ref state, s + 0x10000, s) != s)
                continue; // another thread claimed a part (or a new job started): look again
            try
            {
                current.Run(next, parts);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref error, e, null);
            }
            if (Interlocked.Decrement(ref remaining) == 0)
                done.Set();
        }
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
            RunParts();
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

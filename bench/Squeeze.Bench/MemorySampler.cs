using System.Globalization;

namespace Squeeze.Bench;

/// <summary>
/// This process's private memory (RssAnon) sampled every 50 ms while a job runs, after a full compacting collection;
/// each sample is charged to the step the job last reported (<see cref="Step"/>), which tells where the peak is.
/// </summary>
internal sealed class MemorySampler : IDisposable
{
    private readonly CancellationTokenSource stop = new();
    private readonly Dictionary<string, long> peaks = [];
    private readonly Task sampler;
    private string step = "start";
    private long peak;

    /// <summary>Collects, takes <see cref="Before"/> and starts sampling.</summary>
    public MemorySampler()
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        Before = peak = RssAnon();
        sampler = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                long now = RssAnon();
                Volatile.Write(ref peak, Math.Max(Volatile.Read(ref peak), now));
                string at = Volatile.Read(ref step);
                lock (peaks)
                    peaks[at] = Math.Max(peaks.GetValueOrDefault(at), now);
                await Task.Delay(50).ConfigureAwait(false);
            }
        });
    }

    /// <summary>Private memory before the job.</summary>
    public long Before { get; }

    /// <summary>The step the following samples are charged to.</summary>
    public string Step { set => Volatile.Write(ref step, value); }

    /// <summary>The highest sample so far (after <see cref="Stop"/>: of the whole job, with a last sample at its end).</summary>
    public long Peak => Volatile.Read(ref peak);

    /// <summary>The <paramref name="count"/> steps of highest peak, highest first.</summary>
    public IReadOnlyList<(string Step, long Bytes)> Steps(int count)
    {
        lock (peaks)
            return [.. peaks.OrderByDescending(p => p.Value).Take(count).Select(p => (p.Key, p.Value))];
    }

    /// <summary>Stops sampling after one last sample.</summary>
    public void Stop()
    {
        if (stop.IsCancellationRequested)
            return;
        stop.Cancel();
        sampler.Wait();
        Volatile.Write(ref peak, Math.Max(peak, RssAnon()));
    }

    /// <summary>Stops sampling.</summary>
    public void Dispose()
    {
        Stop();
        stop.Dispose();
    }

    /// <summary>This process's RssAnon (bytes), from /proc/self/status.</summary>
    internal static long RssAnon()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("RssAnon:", StringComparison.Ordinal))
                return long.Parse(line["RssAnon:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        }
        throw new PlatformNotSupportedException("no RssAnon in /proc/self/status");
    }
}

using System.Diagnostics;
using System.Threading.Channels;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Server;

/// <summary>
/// One model behind the server: a thread of its own runs every sequence admitted, a batch per step. Each step takes,
/// from every running sequence, the tokens it has to run (a chunk of its prompt, or its last sampled token) and runs
/// them all in one <see cref="Transformer.ForwardSequences"/> call, each row in its sequence's own KV cache; the
/// sequences whose last fed token was run get that row's logits. At most <see cref="ServerOptions.Parallel"/> sequences
/// run at once, each holding one of as many caches made at start; the others wait in a bounded queue.
/// </summary>
internal sealed class ModelWorker : IDisposable
{
    private readonly Transformer runtime;
    private readonly ServerOptions options;
    private readonly Channel<Sequence> queue;
    private readonly Stack<KvCache> freeCaches = new();
    private readonly List<Sequence> active = [];
    private readonly AutoResetEvent wake = new(false);
    private readonly Thread thread;
    private readonly Lock rateLock = new();
    private readonly Queue<(long Ticks, long Generated)> rateSamples = new(); // generated-token counts over the last seconds
    private volatile bool stopping;
    private int queued;
    private long generatedTokens, processedTokens, forwardTicks, kvBytes, requests;
    private int running;

    /// <summary>Prepares <paramref name="model"/> with <paramref name="options"/>' threads, context and cache policy, and
    /// starts the worker's thread.</summary>
    public ModelWorker(string name, Model model, ServerOptions options)
    {
        Name = name;
        Model = model;
        this.options = options;
        runtime = new Transformer(model, new RuntimeOptions { Threads = options.Threads, ContextLength = options.ContextLength, KvCache = options.KvCache });
        ContextLength = runtime.Cache.ContextLength;
        freeCaches.Push(runtime.Cache);
        for (int i = 1; i < options.Parallel; i++)
            freeCaches.Push(runtime.NewCache(ContextLength));
        CacheCapacityBytes = freeCaches.Sum(c => c.BytesAfter(ContextLength));
        queue = Channel.CreateBounded<Sequence>(new BoundedChannelOptions(options.QueueLength) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        thread = new Thread(Run) { IsBackground = true, Name = "squeeze-" + name };
        thread.Start();
    }

    /// <summary>The name the API gives the model.</summary>
    public string Name { get; }

    /// <summary>The model run.</summary>
    public Model Model { get; }

    /// <summary>Positions each sequence's cache holds.</summary>
    public int ContextLength { get; }

    /// <summary>Bytes the caches hold when every one is full.</summary>
    public long CacheCapacityBytes { get; }

    /// <summary>Sequences waiting for a cache.</summary>
    public int QueueLength => Volatile.Read(ref queued);

    /// <summary>Sequences holding a cache.</summary>
    public int Running => Volatile.Read(ref running);

    /// <summary>Bytes the running sequences' caches hold now.</summary>
    public long KvBytes => Interlocked.Read(ref kvBytes);

    /// <summary>Tokens sampled by generation sequences since start.</summary>
    public long GeneratedTokens => Interlocked.Read(ref generatedTokens);

    /// <summary>Rows run (prompt and generated tokens) since start.</summary>
    public long ProcessedTokens => Interlocked.Read(ref processedTokens);

    /// <summary>Sequences submitted since start.</summary>
    public long Requests => Interlocked.Read(ref requests);

    /// <summary>Seconds spent in forward passes since start.</summary>
    public double ForwardSeconds => Interlocked.Read(ref forwardTicks) / (double)Stopwatch.Frequency;

    /// <summary>Tokens generated per second over the last ten seconds.</summary>
    public double TokensPerSecond
    {
        get
        {
            lock (rateLock)
            {
                Trim(Stopwatch.GetTimestamp());
                if (rateSamples.Count < 2)
                    return 0;
                var (firstTicks, firstCount) = rateSamples.Peek();
                var (lastTicks, lastCount) = rateSamples.Last();
                double seconds = Math.Max((Stopwatch.GetTimestamp() - firstTicks) / (double)Stopwatch.Frequency, 1e-3);
                return lastTicks == firstTicks ? 0 : (lastCount - firstCount) / seconds;
            }
        }
    }

    /// <summary>Queues <paramref name="sequence"/>; false when the queue is full (nothing queued).</summary>
    public bool TrySubmit(Sequence sequence)
    {
        if (stopping || !queue.Writer.TryWrite(sequence))
            return false;
        Interlocked.Increment(ref queued);
        Interlocked.Increment(ref requests);
        wake.Set();
        return true;
    }

    /// <summary>Wakes the worker: a sequence has new tokens to run, or was cancelled.</summary>
    public void Wake() => wake.Set();

    /// <summary>Counts a token a generation sequence sampled.</summary>
    public void CountGenerated() => Interlocked.Increment(ref generatedTokens);

    private void Run()
    {
        var tokens = new List<int>();
        var caches = new List<KvCache>();
        var positions = new List<int>();
        var logitRows = new List<int>();
        var owners = new List<Sequence>();
        while (!stopping)
        {
            Admit();
            Retire();
            tokens.Clear();
            caches.Clear();
            positions.Clear();
            logitRows.Clear();
            owners.Clear();
            foreach (var s in active)
            {
                if (s.Feed.IsEmpty)
                    continue;
                bool one = s.OneTokenAtATime && s.Position >= s.Prompt.Length;
                // a sequence scored token by token ends a batch at its prompt's end, whose logits it needs, even when the
                // tokens it follows are already queued behind its prompt
                int take = one ? 1 : s.OneTokenAtATime ? Math.Min(options.PrefillChunk, s.Prompt.Length - s.Position) : options.PrefillChunk;
                for (int i = 0; i < take && s.Position < ContextLength && s.Feed.TryDequeue(out int token); i++)
                {
                    tokens.Add(token);
                    caches.Add(s.Cache!);
                    positions.Add(s.Position++);
                }
                if (one || s.Feed.IsEmpty || (s.OneTokenAtATime && s.Position == s.Prompt.Length))
                {
                    logitRows.Add(tokens.Count - 1);
                    owners.Add(s);
                }
            }
            if (tokens.Count == 0)
            {
                wake.WaitOne(active.Count == 0 ? 1000 : 50);
                continue;
            }
            try
            {
                long start = Stopwatch.GetTimestamp();
                var logits = runtime.ForwardSequences(tokens.ToArray(), caches.ToArray(), positions.ToArray(), logitRows.ToArray());
                Interlocked.Add(ref forwardTicks, Stopwatch.GetTimestamp() - start);
                Interlocked.Add(ref processedTokens, tokens.Count);
                int vocab = Model.Config.VocabSize;
                for (int i = 0; i < owners.Count; i++)
                {
                    var s = owners[i];
                    if (s.IsCancelled)
                        continue;
                    var reason = s.OnLogits(logits.Slice(i * vocab, vocab), positions[logitRows[i]]);
                    if (reason != FinishReason.None)
                        Release(s, reason);
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Console.Error.WriteLine($"squeeze serve: {Name}: the forward pass failed: {e.Message}");
                foreach (var s in active.ToArray())
                    Release(s, FinishReason.Error);
            }
            long held = 0;
            foreach (var s in active)
                held += s.Cache!.HeldBytes;
            Interlocked.Exchange(ref kvBytes, held);
            lock (rateLock)
            {
                long now = Stopwatch.GetTimestamp();
                rateSamples.Enqueue((now, GeneratedTokens));
                Trim(now);
            }
        }
        foreach (var s in active.ToArray())
            Release(s, FinishReason.Cancelled);
        while (queue.Reader.TryRead(out var waiting))
            waiting.Finish(FinishReason.Cancelled);
    }

    // Ten seconds of samples, and the one before them.
    private void Trim(long now)
    {
        while (rateSamples.Count > 2 && now - rateSamples.ElementAt(1).Ticks > 10 * Stopwatch.Frequency)
            rateSamples.Dequeue();
    }

    private void Admit()
    {
        while (freeCaches.Count > 0 && queue.Reader.TryRead(out var s))
        {
            Interlocked.Decrement(ref queued);
            if (s.IsCancelled)
            {
                s.Finish(FinishReason.Cancelled);
                continue;
            }
            s.Cache = freeCaches.Pop();
            s.Position = 0;
            active.Add(s);
            Interlocked.Increment(ref running);
        }
    }

    private void Retire()
    {
        var now = DateTime.UtcNow;
        foreach (var s in active.ToArray())
        {
            if (s.IsCancelled)
                Release(s, FinishReason.Cancelled);
            else if (s.IsComplete)
                Release(s, FinishReason.Stop);
            else if (now > s.Deadline || (s.Position >= ContextLength && !s.Feed.IsEmpty))
                Release(s, FinishReason.Length);
        }
        if (active.Count == 0)
            Interlocked.Exchange(ref kvBytes, 0);
    }

    private void Release(Sequence s, FinishReason reason)
    {
        if (!active.Remove(s))
            return;
        freeCaches.Push(s.Cache!);
        s.Cache = null;
        Interlocked.Decrement(ref running);
        s.Finish(reason);
    }

    /// <summary>Stops the thread; running and queued sequences finish as cancelled.</summary>
    public void Dispose()
    {
        stopping = true;
        queue.Writer.TryComplete();
        wake.Set();
        thread.Join();
        wake.Dispose();
        runtime.Dispose();
    }
}

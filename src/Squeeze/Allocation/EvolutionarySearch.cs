using System.Diagnostics;

namespace Squeeze.Allocation;

/// <summary>Settings of <see cref="EvolutionarySearch.Run"/>.</summary>
public sealed record EvolutionOptions
{
    /// <summary>Seed of the mutations and of the first-cut chunk draws; with a generation limit (no time limit hit) the result is the same for the same seed.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>Stop after this many generations.</summary>
    public int Generations { get; init; } = 400;

    /// <summary>Stop when this much time has passed (checked between generations); null for no time limit.</summary>
    public TimeSpan? TimeLimit { get; init; }

    /// <summary>Offspring per generation, each scored on <see cref="FirstCutChunks"/> chunks.</summary>
    public int Offspring { get; init; } = 8;

    /// <summary>Best offspring of the first cut scored again on the <see cref="FinalChunks"/> chunks against the parent.</summary>
    public int Survivors { get; init; } = 2;

    /// <summary>Chunks of the first cut, drawn at random from the meter's chunks each generation.</summary>
    public int FirstCutChunks { get; init; } = 1;

    /// <summary>Chunks of the final selection: the meter's first chunks, the same every generation.</summary>
    public int FinalChunks { get; init; } = 4;

    /// <summary>At most this many tensors go up one level per mutation (at least one).</summary>
    public int MaxRaises { get; init; } = 2;
}

/// <summary>One improvement of the search: generation, time since start, chunk forwards spent, fitness (mean KLD on the final chunks) and file size.</summary>
public readonly record struct SearchStep(int Generation, double Seconds, long ChunkForwards, double Fitness, long FileBytes);

/// <summary>What the search found.</summary>
/// <param name="Selection">The best assignment (index of the candidate per tensor).</param>
/// <param name="Fitness">Its mean KLD on the final chunks.</param>
/// <param name="StartFitness">The starting assignment's mean KLD on the final chunks.</param>
/// <param name="Generations">Generations run.</param>
/// <param name="ChunkForwards">Forward passes of one chunk spent on fitness.</param>
/// <param name="Seconds">Time spent.</param>
/// <param name="History">The start and every improvement.</param>
public sealed record EvolutionResult(int[] Selection, double Fitness, double StartFitness, int Generations, long ChunkForwards, double Seconds, IReadOnlyList<SearchStep> History);

/// <summary>
/// EvoPress-style search of per-tensor formats under a byte budget, with the model's own KL divergence as fitness:
/// a (1 + λ) evolution from a starting assignment (the knapsack's). A mutation raises one or a few tensors one level
/// (the next larger candidate; the parts of a fused file tensor move together) and lowers randomly chosen others one
/// level until the file fits the budget again, so every candidate fits. Selection is in two stages: all offspring on a few random chunks, the best few again on more
/// fixed chunks against the parent, which is replaced only when beaten there.
/// </summary>
public static class EvolutionarySearch
{
    /// <summary>Searches from <paramref name="start"/> (which must fit <paramref name="budget"/>).</summary>
    /// <exception cref="ArgumentException">The start does not fit the budget, or the meter has fewer chunks than the final stage needs.</exception>
    public static EvolutionResult Run<T>(CandidateSet<T> set, KldMeter meter, long budget, IReadOnlyList<int> start, EvolutionOptions options, IProgress<SearchStep>? progress = null,
        CancellationToken cancellationToken = default)
        where T : Candidate
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(meter);
        ArgumentNullException.ThrowIfNull(start);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Offspring, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Survivors, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.FirstCutChunks, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxRaises, 1, nameof(options));
        if (options.FinalChunks < 1 || options.FinalChunks > meter.ChunkCount || options.FirstCutChunks > meter.ChunkCount)
            throw new ArgumentException($"the meter has {meter.ChunkCount} chunks; the search needs {Math.Max(options.FinalChunks, options.FirstCutChunks)}", nameof(options));
        if (set.FileBytes(start) > budget)
            throw new ArgumentException($"the starting assignment takes {set.FileBytes(start):N0} bytes, over the budget of {budget:N0}", nameof(start));

        var clock = Stopwatch.StartNew();
        var random = new Random(options.Seed);
        int[] final = Enumerable.Range(0, options.FinalChunks).ToArray();
        long forwards = 0;
        double Fitness(int[] selection, int[] chunks)
        {
            forwards += chunks.Length;
            using var model = set.Compose(selection);
            return meter.Measure(model, chunks);
        }

        int[] parent = [.. start];
        double parentFitness = Fitness(parent, final);
        double startFitness = parentFitness;
        var history = new List<SearchStep> { new(0, clock.Elapsed.TotalSeconds, forwards, parentFitness, set.FileBytes(parent)) };
        progress?.Report(history[^1]);
        int generation = 0;
        while (generation < options.Generations && (options.TimeLimit is not { } limit || clock.Elapsed < limit))
        {
            cancellationToken.ThrowIfCancellationRequested();
            generation++;
            int[] firstCut = Draw(random, meter.ChunkCount, options.FirstCutChunks);
            var offspring = new List<(int[] Selection, double Fitness)>(options.Offspring);
            for (int k = 0; k < options.Offspring; k++)
            {
                var child = Mutate(set, parent, budget, random, options.MaxRaises);
                if (child is not null)
                    offspring.Add((child, Fitness(child, firstCut)));
            }
            foreach (var (selection, _) in offspring.OrderBy(o => o.Fitness).Take(options.Survivors).ToList())
            {
                double fitness = Fitness(selection, final);
                if (fitness < parentFitness)
                    (parent, parentFitness) = (selection, fitness);
            }
            if (parentFitness < history[^1].Fitness)
            {
                history.Add(new SearchStep(generation, clock.Elapsed.TotalSeconds, forwards, parentFitness, set.FileBytes(parent)));
                progress?.Report(history[^1]);
            }
        }
        return new EvolutionResult(parent, parentFitness, startFitness, generation, forwards, clock.Elapsed.TotalSeconds, history);
    }

    /// <summary>
    /// A child of <paramref name="parent"/>: one to <paramref name="maxRaises"/> units (<see cref="CandidateSet{T}.Units"/>:
    /// a tensor, or the parts of a fused file tensor together) one level up, then random other units one level down until
    /// the file fits <paramref name="budget"/>; null when no such child is found.
    /// </summary>
    internal static int[]? Mutate<T>(CandidateSet<T> set, IReadOnlyList<int> parent, long budget, Random random, int maxRaises)
        where T : Candidate
    {
        var units = set.Units;
        int n = units.Count;
        int Level(int[] selection, int u) => selection[units[u][0]];
        void Set(int[] selection, int u, int level)
        {
            foreach (int i in units[u])
                selection[i] = level;
        }
        for (int attempt = 0; attempt < 16; attempt++)
        {
            int[] child = [.. parent];
            var raised = new HashSet<int>();
            int raises = 1 + random.Next(maxRaises);
            for (int r = 0; r < raises; r++)
            {
                int u = random.Next(n);
                if (Level(child, u) + 1 < set.Tensors[units[u][0]].Options.Count)
                {
                    Set(child, u, Level(child, u) + 1);
                    raised.Add(u);
                }
            }
            if (raised.Count == 0)
                continue;
            long bytes = set.FileBytes(child);
            var lowerable = Enumerable.Range(0, n).Where(j => !raised.Contains(j) && Level(child, j) > 0).ToList();
            while (bytes > budget && lowerable.Count > 0)
            {
                int pick = random.Next(lowerable.Count);
                int j = lowerable[pick];
                int level = Level(child, j);
                bytes -= set.UnitBytes(j, level) - set.UnitBytes(j, level - 1);
                Set(child, j, level - 1);
                if (level - 1 == 0)
                    lowerable.RemoveAt(pick);
            }
            if (bytes <= budget && !child.AsSpan().SequenceEqual(parent.ToArray()))
                return child;
        }
        return null;
    }

    private static int[] Draw(Random random, int count, int take)
    {
        var all = Enumerable.Range(0, count).ToArray();
        random.Shuffle(all);
        return all[..take];
    }
}

using System.Diagnostics;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Prompts;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>
/// Prompt compression on held-out stories: stories sampled from stories15M with new seeds (temperature 1, 240 tokens,
/// the shared texts' ten openers cycled); the first two thirds (cut at a word) are the prompt, the rest the answer.
/// For each method and ratio: the answer's NLL under stories15M given the compressed prompt, reported as the share of
/// the full prompt's gain over no prompt that is kept, (NLL_none − NLL_compressed) / (NLL_none − NLL_full); the
/// compression time against the prefill time it saves. Options: <c>--stories N</c> (200), <c>--ratios 2,3,5</c>,
/// <c>--methods llmlingua,…</c>, <c>--seed S</c> (first story seed, 240000), <c>--threads N</c>,
/// <c>--segment-tokens N</c>, <c>--coarse-factor X</c>, <c>--instruction-share X</c>, <c>--tail-shares X,Y,…</c>, <c>--probe-share X</c> (LLMLingua's settings),
/// <c>--compressor MODEL</c> (the small model that scores and compresses the prompts, with its own tokenizer; default
/// stories15M itself), <c>--cost-reader MODEL</c> (a larger model, such as a random checkpoint of a real model's shape
/// from <c>shapes</c>, whose prefill of the first <c>--cost-stories N</c> (10) prompts, full and compressed, is timed: the
/// prefill a real-size reader is spared; its speed is meaningful, its quality is not; each compressed prompt is timed
/// between two runs of its full prompt, whose mean it is subtracted from, so the machine's load drifts out of the pair). Ratios are counted in
/// stories15M's tokens of the prompt and of the re-encoded compressed text.
/// </summary>
internal static class PromptsSuite
{
    private static readonly string[] Openers = ["Once upon a time", "One day, a", "Lily wanted to", "Tom and his", "There was a",
        "The sun was", "Sam had a", "In a big", "A little bird", "Mom said"];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int count = Program.Option(args, "--stories", 200);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int firstSeed = Program.Option(args, "--seed", 240000);
        double[] ratios = Program.Value(args, "--ratios") is { } r ? [.. r.Split(',').Select(double.Parse)] : [2, 3, 5];
        var methods = Program.Value(args, "--methods") is { } m ? m.Split(',').Select(PromptCompressionOptions.Parse).ToArray() : Enum.GetValues<PromptCompressionMethod>();
        var defaults = new PromptCompressionOptions();
        int segmentTokens = Program.Option(args, "--segment-tokens", defaults.SegmentTokens);
        double coarseFactor = Program.Value(args, "--coarse-factor") is { } c ? double.Parse(c) : defaults.CoarseFactor;
        double[] tailShares = Program.Value(args, "--tail-shares") is { } t ? [.. t.Split(',').Select(double.Parse)] : [.. defaults.TailShares];
        double probeShare = Program.Value(args, "--probe-share") is { } ps ? double.Parse(ps) : defaults.ProbeShare;
        double instructionShare = Program.Value(args, "--instruction-share") is { } i0 ? double.Parse(i0) : defaults.InstructionShare;

        using var model = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = threads });
        string? compressorPath = Program.Value(args, "--compressor");
        using var compressorModel = compressorPath is null ? null : ModelLoader.Load(compressorPath);
        using var compressorRuntime = compressorModel is null ? null : new Transformer(compressorModel, new RuntimeOptions { Threads = threads });
        var compressor = compressorRuntime ?? runtime;
        string? costReaderPath = Program.Value(args, "--cost-reader");
        int costStories = Program.Option(args, "--cost-stories", 10);
        using var costModel = costReaderPath is null ? null : ModelLoader.Load(costReaderPath);
        using var costRuntime = costModel is null ? null : new Transformer(costModel, new RuntimeOptions { Threads = threads, ContextLength = 1024, BatchSize = 512 });
        var tokenizer = model.Tokenizer;
        var clock = Stopwatch.StartNew();
        var stories = new List<(string Prompt, int[] PromptTokens, int[] Answer)>();
        foreach (int[] tokens in SampleStories(runtime, firstSeed, count))
        {
            int cut = (2 * tokens.Length + 2) / 3;
            while (cut < tokens.Length && tokenizer.TokenBytes(tokens[cut]) is var b && (b.Length == 0 || b[0] != (byte)' '))
                cut++;
            if (cut >= tokens.Length - 8)
                continue; // too short a story to have an answer
            string prompt = tokenizer.Decode(tokens.AsSpan(0, cut));
            stories.Add((prompt, tokenizer.Encode(prompt, addBos: false), tokens[cut..]));
        }
        Console.Error.WriteLine($"{stories.Count} stories sampled in {clock.Elapsed.TotalSeconds:0.0} s");

        double none = MeanNll(runtime, stories.Select(s => (Array.Empty<int>(), s.Answer)).ToList(), out _, out _);
        double full = MeanNll(runtime, stories.Select(s => (s.PromptTokens, s.Answer)).ToList(), out double fullPrefill, out _);
        long answerTokens = stories.Sum(s => (long)s.Answer.Length);
        var perStory = new Dictionary<(PromptCompressionMethod, double), double[]>(); // each story's answer NLL (nats, summed over its tokens)
        int promptTokens = stories.Sum(s => s.PromptTokens.Length);
        var costTexts = stories.Take(costStories).Select(s => s.Prompt).ToList();
        if (costRuntime is not null)
            PrefillSeconds(costRuntime, costTexts[0]); // warm-up: JIT tiers, page faults of the mapped weights
        double fullCost = costRuntime is null ? 0 : costTexts.Sum(text => PrefillSeconds(costRuntime, text));

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- prompts --stories {count} --seed {firstSeed} --threads {threads}" +
            $"{(compressorPath is null ? "" : $" --compressor {compressorPath}")}{(costReaderPath is null ? "" : $" --cost-reader {costReaderPath} --cost-stories {costTexts.Count}")}` " +
            $"(compressor {(compressorModel is null ? "stories15M" : Path.GetFileName(compressorPath))}, reader stories15M; {stories.Count} stories sampled from stories15M, seeds {firstSeed}…{firstSeed + count - 1}, temperature 1, 240 tokens; " +
            $"prompts {promptTokens / (double)stories.Count:0.0} tokens on average; answer NLL in nats per token under stories15M; " +
            $"LLMLingua segments of {segmentTokens} tokens, coarse factor {coarseFactor}, instruction share {instructionShare}, tail shares {string.Join(", ", tailShares)}, probe share {probeShare})");
        Console.WriteLine();
        Console.WriteLine($"Answer NLL with no prompt {none:0.0000}, with the full prompt {full:0.0000} (full prompt's prefill {1000 * fullPrefill / stories.Count:0.00} ms per prompt"
            + (costRuntime is null ? ")." : $"; {1000 * fullCost / costTexts.Count:0.0} ms in {Path.GetFileName(costReaderPath!.TrimEnd('/'))}, over the first {costTexts.Count} prompts)."));
        Console.WriteLine();
        string costColumn = costRuntime is null ? "" : $" {Path.GetFileName(costReaderPath!.TrimEnd('/'))}'s prefill ms saved / prompt (first {costTexts.Count}) |";
        Console.WriteLine($"| method | target ratio | ratio | answer NLL | kept share | compression ms / prompt | prefill ms saved / prompt | compressor tokens run / prompt |{costColumn}");
        Console.WriteLine($"|---|---|---|---|---|---|---|---|{(costRuntime is null ? "" : "---|")}");
        foreach (double ratio in ratios)
        {
            foreach (var method in methods)
            {
                var options = new PromptCompressionOptions { Ratio = ratio, Method = method, Seed = 7, SegmentTokens = segmentTokens, CoarseFactor = coarseFactor, TailShares = tailShares, ProbeShare = probeShare, InstructionShare = instructionShare };
                var compressed = new List<(int[] Prompt, int[] Answer)>();
                var texts = new List<string>();
                long original = 0, kept = 0, scored = 0;
                var watch = Stopwatch.StartNew();
                foreach (var story in stories)
                {
                    var result = PromptCompressor.Compress(compressor, story.Prompt, options);
                    int[] encoded = tokenizer.Encode(result.Text, addBos: false);
                    original += story.PromptTokens.Length;
                    kept += encoded.Length;
                    scored += result.ScoredTokens;
                    compressed.Add((encoded, story.Answer));
                    texts.Add(result.Text);
                }
                double seconds = watch.Elapsed.TotalSeconds;
                double nll = MeanNll(runtime, compressed, out double prefill, out double[] totals);
                perStory[(method, ratio)] = totals;
                Console.WriteLine($"| {PromptCompressionOptions.Name(method)} | {ratio:0.#}× | {(double)original / kept:0.00}× | {nll:0.0000} | " +
                    $"{(none - nll) / (none - full):0.000} | {1000 * seconds / stories.Count:0.0} | {1000 * (fullPrefill - prefill) / stories.Count:0.00} | {(double)scored / stories.Count:0} |" +
                    (costRuntime is null ? "" : $" {1000 * SavedPrefillSeconds(costRuntime, costTexts, texts) / costTexts.Count:0.0} |"));
            }
        }
        // LLMLingua against each baseline, story by story: the difference in kept share and its standard error over stories
        // (the per-story differences of the answer's summed NLL, divided by all answer tokens and by the full prompt's gain).
        Console.WriteLine();
        foreach (double ratio in ratios)
        {
            if (!perStory.TryGetValue((PromptCompressionMethod.LlmLingua, ratio), out double[]? lingua))
                continue;
            var parts = new List<string>();
            foreach (var method in methods.Where(m => m != PromptCompressionMethod.LlmLingua))
            {
                double[] d = [.. perStory[(method, ratio)].Zip(lingua, (b, a) => b - a)];
                double mean = d.Average(), sd = Math.Sqrt(d.Sum(x => (x - mean) * (x - mean)) / Math.Max(1, d.Length - 1));
                double scale = answerTokens * (none - full);
                parts.Add($"{PromptCompressionOptions.Name(method)} {d.Sum() / scale:+0.000;-0.000} ± {Math.Sqrt(d.Length) * sd / scale:0.000}");
            }
            Console.WriteLine($"- LLMLingua's kept share minus each method's at {ratio:0.#}× (± standard error over the stories): {string.Join(", ", parts)}");
        }
    }

    // Story i: the opener i mod 10 and up to 240 tokens in all sampled after it (temperature 1, seed firstSeed + i, up to
    // EOS), without BOS. The stories are sampled side by side, each with its own cache, one row per story and step
    // through ForwardSequences (the weights read once per step for all of them, not once per story).
    private static List<int[]> SampleStories(Transformer runtime, int firstSeed, int count)
    {
        const int length = 240, group = 50;
        var tokenizer = runtime.Model.Tokenizer;
        var vocabulary = runtime.Model.Vocabulary;
        int vocab = runtime.Model.Config.VocabSize;
        var stories = new List<int[]>(count);
        for (int g0 = 0; g0 < count; g0 += group)
        {
            int n = Math.Min(group, count - g0);
            var samplers = new Sampler[n];
            var caches = new KvCache[n];
            var sequences = new List<int>[n];
            var rowTokens = new List<int>();
            var rowCaches = new List<KvCache>();
            var rowPositions = new List<int>();
            var logitRows = new List<int>();
            for (int s = 0; s < n; s++)
            {
                samplers[s] = new Sampler(new SamplingOptions { Temperature = 1, Seed = firstSeed + g0 + s });
                caches[s] = runtime.NewCache(length + 1);
                sequences[s] = [.. tokenizer.Encode(Openers[(g0 + s) % Openers.Length], addBos: false)];
                int[] start = [tokenizer.BosId, .. sequences[s]];
                for (int t = 0; t < start.Length; t++)
                {
                    rowTokens.Add(start[t]);
                    rowCaches.Add(caches[s]);
                    rowPositions.Add(t);
                }
                logitRows.Add(rowTokens.Count - 1);
            }
            var open = Enumerable.Range(0, n).ToList(); // stories still growing, in the order of their logit rows
            while (open.Count > 0)
            {
                var logits = runtime.ForwardSequences([.. rowTokens], [.. rowCaches], [.. rowPositions], [.. logitRows]);
                var next = new List<int>();
                for (int k = 0; k < open.Count; k++)
                {
                    int s = open[k];
                    int token = samplers[s].Sample(logits.Slice(k * vocab, vocab));
                    if (vocabulary.EndsGeneration(token))
                        continue;
                    sequences[s].Add(token);
                    if (sequences[s].Count < length)
                        next.Add(s);
                }
                open = next;
                rowTokens.Clear();
                rowCaches.Clear();
                rowPositions.Clear();
                logitRows.Clear();
                foreach (int s in open)
                {
                    rowTokens.Add(sequences[s][^1]);
                    rowCaches.Add(caches[s]);
                    rowPositions.Add(sequences[s].Count); // BOS at 0
                    logitRows.Add(logitRows.Count);
                }
            }
            stories.AddRange(sequences.Select(q => q.ToArray()));
        }
        return stories;
    }

    // Seconds of prefill of a text: BOS and the text in the runtime's own tokens, one batch.
    private static double PrefillSeconds(Transformer runtime, string text)
    {
        int[] prefix = [runtime.Model.Tokenizer.BosId, .. runtime.Model.Tokenizer.Encode(text, addBos: false)];
        runtime.Reset();
        var watch = Stopwatch.StartNew();
        runtime.Forward(prefix, 1);
        return watch.Elapsed.TotalSeconds;
    }

    // Prefill seconds the compressed texts spare, summed over the first full.Count pairs: each compressed text timed between
    // two runs of its full text and subtracted from their mean.
    private static double SavedPrefillSeconds(Transformer runtime, List<string> full, List<string> compressed)
    {
        double saved = 0;
        for (int k = 0; k < full.Count; k++)
        {
            double before = PrefillSeconds(runtime, full[k]);
            double cut = PrefillSeconds(runtime, compressed[k]);
            saved += (before + PrefillSeconds(runtime, full[k])) / 2 - cut;
        }
        return saved;
    }

    // The answers' mean NLL per token (nats) given their prompts, the seconds spent on the prompts' prefill (BOS and the
    // prompt, run as one batch before the answer is scored), and each answer's NLL summed over its tokens.
    private static double MeanNll(Transformer runtime, IReadOnlyList<(int[] Prompt, int[] Answer)> pairs, out double prefillSeconds, out double[] storyTotals)
    {
        int bos = runtime.Model.Tokenizer.BosId;
        int vocab = runtime.Model.Config.VocabSize;
        var logProbabilities = new float[vocab];
        double total = 0;
        long tokens = 0;
        prefillSeconds = 0;
        storyTotals = new double[pairs.Count];
        for (int k = 0; k < pairs.Count; k++)
        {
            var (prompt, answer) = pairs[k];
            runtime.Reset();
            int[] prefix = [bos, .. prompt];
            var watch = Stopwatch.StartNew();
            var last = runtime.Forward(prefix, 1).ToArray();
            prefillSeconds += watch.Elapsed.TotalSeconds;
            LogSoftmax.Compute(last, logProbabilities);
            double story = -logProbabilities[answer[0]];
            var logits = runtime.Forward(answer.AsSpan(0, answer.Length - 1), answer.Length - 1);
            for (int i = 1; i < answer.Length; i++)
            {
                LogSoftmax.Compute(logits.Slice((i - 1) * vocab, vocab), logProbabilities);
                story -= logProbabilities[answer[i]];
            }
            storyTotals[k] = story;
            total += story;
            tokens += answer.Length;
        }
        return total / tokens;
    }
}

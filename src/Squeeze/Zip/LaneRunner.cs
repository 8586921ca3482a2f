using System.Runtime.InteropServices;
using Squeeze.Coding;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Zip;

/// <summary>One segment of a block: its length, whether its first symbol's leading space is dropped, and (encoding) its bytes.</summary>
internal sealed class Lane(int length, bool droppedSpace, byte[]? text)
{
    public int Length { get; } = length;
    public bool DroppedSpace { get; set; } = droppedSpace;
    public byte[]? Text { get; } = text;
    public byte[] Output { get; } = new byte[length];

    /// <summary>The sequence the model runs (the chosen one, when the encoder is comparing two).</summary>
    public Branch Main { get; set; } = null!;

    /// <summary>The encoder's alternative parses being compared with <see cref="Main"/>.</summary>
    public List<Branch> Alternatives { get; } = [];
}

/// <summary>How often the encoder tries one kind of alternative: every candidate while at least one trial in eight
/// succeeds (the first eight failures are free), else every 16th (text the model does not read as separate documents then
/// costs little time).</summary>
internal sealed class Trials
{
    private int tried, won, candidates;

    /// <summary>Whether to try this candidate.</summary>
    public bool Take() => 8 * won >= tried - 8 || ++candidates % 16 == 0;

    public void Report(bool success)
    {
        tried++;
        if (success)
            won++;
    }
}

/// <summary>What one step coded for a segment (the encoder records these, then writes them in the decoder's order).</summary>
/// <param name="FlagContext">The break flag's context (−1: no flag before this symbol).</param>
/// <param name="Break">The flag is set: the document breaks here and nothing else is coded this step.</param>
/// <param name="Symbol">Token id, or −1 − b for the escaped byte b.</param>
/// <param name="Cumulative">Sum of the frequencies of the symbols before this one in the coding table.</param>
/// <param name="Frequency">The symbol's frequency in the coding table.</param>
/// <param name="Total">Sum of every frequency of the table.</param>
/// <param name="Bits">−log2 p(symbol) by the model's softmax (for the statistics).</param>
internal readonly record struct CodedStep(int FlagContext, bool Break, int Symbol, uint Cumulative, uint Frequency, uint Total, double Bits);

/// <summary>A token sequence the model runs for a segment: its KV cache and window, and where it stands in the text.</summary>
internal sealed class Branch
{
    public KvCache? Cache;
    public int Position;                    // next position in the cache
    public readonly List<int> Pending = []; // tokens to feed in the next step
    public readonly List<int> WindowTokens = []; // tokens fed since the window's BOS
    public int LastFed;

    public int Bytes;        // text bytes produced (decoder) or coded (encoder)
    public int NewlineRun;   // trailing newlines of those bytes since the segment's start or the last break
    public bool Flagged;     // the break flag at this byte position is already coded
    public bool DropSpace;   // the next symbol's leading space is not part of the text
    public bool Done;

    // encoder only
    public int Span, Index;  // the next token: Tokens[Span][Index] of the continuing or the prefixed tokenization
    public bool Prefixed;
    public double Bits;      // coded bits so far (range-coder cost of the symbols)
    public List<CodedStep> Steps = [];
    public Dictionary<int, double>? Boundaries; // while compared: Bits at each byte position a symbol ended on
    public int ForkSteps;    // an alternative: steps since it forked
    public int Kind;         // an alternative: 0 a BOS token, 1 a document break

    public Branch CloneText()
    {
        var copy = new Branch
        {
            Position = Position, LastFed = LastFed, Bytes = Bytes, NewlineRun = NewlineRun, Flagged = Flagged, DropSpace = DropSpace,
            Span = Span, Index = Index, Prefixed = Prefixed, Bits = Bits, Steps = [.. Steps], Boundaries = [],
        };
        copy.WindowTokens.AddRange(WindowTokens);
        return copy;
    }
}

internal readonly record struct BlockStats(long Tokens, long Escapes, long Breaks, long Bos, double ModelBits, double EscapeBits);

/// <summary>
/// The model in deterministic mode and the lockstep loops of the encoder and the decoder (docs/FORMAT.md, "The .sqz
/// container", section 3). Every step runs one row (or a window restart's rows) per sequence as one batch of
/// <see cref="Transformer.ForwardSequences"/>, turns each sequence's last logits into frequencies, and codes one step
/// per segment: a document break, or a symbol (after a break flag where one is due).
/// </summary>
internal sealed class LaneRunner : IDisposable
{
    /// <summary>An alternative parse is tried where the model gives BOS at least this probability.</summary>
    private const double BosTrial = 1.0 / 16;

    /// <summary>The estimated cost of a set break flag, in bits, charged to a break when parses are compared.</summary>
    private const double BreakBits = 1;

    /// <summary>Alternatives compared with a segment's parse at one time (and, over the block, at most one per segment
    /// on average, which bounds the KV caches to twice the segments').</summary>
    private const int MaxAlternatives = 4;

    private readonly Transformer runtime;
    private readonly int window, overlap, threads, vocab, bos, lookahead;
    private readonly bool breaks;
    private readonly Stack<KvCache> spareCaches = new();
    private readonly Trials[] trials = [new(), new()]; // the encoder's trials of each kind (0: BOS, 1: break) in the block
    private int alternatives, lanesInBlock;            // the encoder's alternatives alive, and the block's segments
    private readonly List<uint[]> cumulative = [];
    private readonly List<float[]> scratch = [];
    private readonly List<int> rowTokens = [], rowPositions = [], logitRows = [];
    private readonly List<KvCache> rowCaches = [];
    private double[] logPartitions = [];
    private float[] logits = [];

    /// <param name="model">The model whose probabilities code the symbols.</param>
    /// <param name="window">Positions of each segment's KV cache (BOS included).</param>
    /// <param name="overlap">Tokens re-fed after BOS when a window is full.</param>
    /// <param name="threads">Threads of the forward passes (the result does not depend on it).</param>
    /// <param name="breaks">Version 2 coding: BOS symbols and document breaks (false: version 1, tokens and escapes only).</param>
    /// <param name="lookahead">Encoder: symbols over which two parses are compared (0: code the plain tokenization).</param>
    /// <param name="cancellationToken">Stops the work within one layer of a forward pass.</param>
    public LaneRunner(Model model, int window, int overlap, int threads, bool breaks, int lookahead = 0, CancellationToken cancellationToken = default)
    {
        this.window = window;
        this.overlap = overlap;
        this.threads = Math.Max(1, threads);
        this.breaks = breaks;
        this.lookahead = breaks ? lookahead : 0;
        vocab = model.Config.VocabSize;
        var v = model.Vocabulary;
        bos = v.BosId >= 0 ? v.BosId : v.EosId >= 0 ? v.EosId : 0;
        runtime = new Transformer(model, new RuntimeOptions { Threads = this.threads, ContextLength = window, BatchSize = 256, Deterministic = true })
        {
            Cancellation = cancellationToken,
        };
        Symbols = new SymbolTokenizer(model.Tokenizer);
        if (model.Tokenizer.Vocabulary.Count != vocab)
            throw new InvalidOperationException($"{model.Source}: the tokenizer has {model.Tokenizer.Vocabulary.Count} tokens, the model {vocab}");
    }

    public SymbolTokenizer Symbols { get; }

    // ---- shared by both directions ------------------------------------------------------------------------------

    private void Start(Lane lane)
    {
        lane.Main = new Branch { Cache = TakeCache(), DropSpace = lane.DroppedSpace };
        Restart(lane.Main);
    }

    private KvCache TakeCache() => spareCaches.Count > 0 ? spareCaches.Pop() : runtime.NewCache(window);

    private void Release(Branch branch)
    {
        if (branch.Cache is not null)
            spareCaches.Push(branch.Cache);
        branch.Cache = null;
    }

    /// <summary>A fresh window from BOS (a segment's start, or a document break).</summary>
    private void Restart(Branch branch)
    {
        branch.Position = 0;
        branch.Pending.Clear();
        branch.Pending.Add(bos);
        branch.WindowTokens.Clear();
        branch.LastFed = bos;
        branch.NewlineRun = 0;
    }

    /// <summary>Queues <paramref name="token"/>; a full window restarts from BOS and the last <c>overlap</c> tokens first.</summary>
    private void Feed(Branch branch, int token)
    {
        if (branch.Position == window)
        {
            var kept = branch.WindowTokens.GetRange(branch.WindowTokens.Count - overlap, overlap);
            branch.WindowTokens.Clear();
            branch.WindowTokens.AddRange(kept);
            branch.Position = 0;
            branch.Pending.Add(bos);
            branch.Pending.AddRange(kept);
        }
        branch.Pending.Add(token);
        branch.WindowTokens.Add(token);
        branch.LastFed = token;
    }

    /// <summary>After a symbol with bytes: the segment is done when its <paramref name="length"/> bytes are reached,
    /// else the symbol (the feed token for an escape) is queued.</summary>
    private void FinishOrFeed(Branch branch, int length, int symbol)
    {
        if (branch.Bytes == length)
        {
            branch.Done = true;
            Release(branch);
        }
        else
        {
            Feed(branch, symbol >= 0 ? symbol : Symbols.FeedForEscape);
        }
    }

    /// <summary>Moves the byte state past <paramref name="text"/> (a symbol's bytes, less a dropped space).</summary>
    private static void Advance(Branch branch, ReadOnlySpan<byte> text)
    {
        if (text.IsEmpty)
            return;
        branch.Bytes += text.Length;
        branch.Flagged = false;
        int end = text.LastIndexOfAnyExcept((byte)'\n', (byte)'\r');
        int newlines = text[(end + 1)..].Count((byte)'\n');
        branch.NewlineRun = end < 0 ? branch.NewlineRun + newlines : newlines;
    }

    private static bool IsLineEnd(byte b) => b is (byte)'\n' or (byte)'\r';

    /// <summary>A break flag is coded before the next symbol: the text so far ends with line ends (CR or LF) that hold a
    /// newline, and no flag was coded at this byte yet.</summary>
    private bool FlagDue(Branch branch) => breaks && branch.NewlineRun > 0 && !branch.Flagged;

    /// <summary>Runs every branch's pending tokens as one batch; fills <see cref="cumulative"/>[k] and
    /// <see cref="logPartitions"/>[k] for branch k, and <see cref="logits"/> rows in branch order.</summary>
    private void Step(List<Branch> branches)
    {
        rowTokens.Clear();
        rowCaches.Clear();
        rowPositions.Clear();
        logitRows.Clear();
        foreach (var b in branches)
        {
            foreach (int token in b.Pending)
            {
                rowTokens.Add(token);
                rowCaches.Add(b.Cache!);
                rowPositions.Add(b.Position++);
            }
            b.Pending.Clear();
            logitRows.Add(rowTokens.Count - 1);
        }
        var rows = runtime.ForwardSequences(CollectionsMarshal.AsSpan(rowTokens), CollectionsMarshal.AsSpan(rowCaches), CollectionsMarshal.AsSpan(rowPositions),
            CollectionsMarshal.AsSpan(logitRows));
        if (logits.Length < rows.Length)
            logits = new float[rows.Length];
        rows.CopyTo(logits);
        while (cumulative.Count < branches.Count)
        {
            cumulative.Add(new uint[vocab + 2]);
            scratch.Add(new float[vocab]);
        }
        if (logPartitions.Length < branches.Count)
            logPartitions = new double[branches.Count];
        Parallel.For(0, branches.Count, new ParallelOptions { MaxDegreeOfParallelism = threads }, k =>
            logPartitions[k] = TokenFrequencies.Compute(logits.AsSpan(k * vocab, vocab), scratch[k], cumulative[k]));
    }

    private double Nll(int k, int token) => (logPartitions[k] - logits[k * vocab + token]) / Math.Log(2);

    // ---- decoding -----------------------------------------------------------------------------------------------

    public List<byte[]> Decode(List<Lane> lanes, RangeDecoder decoder, string path, int block, Action<long>? progress)
    {
        foreach (var lane in lanes)
            Start(lane);
        var flags = new BreakFlags();
        var escaped = new byte[1];
        var branches = new List<Branch>(lanes.Count);
        var owners = new List<Lane>(lanes.Count);
        long done = 0;
        try
        {
            while (true)
            {
                branches.Clear();
                owners.Clear();
                foreach (var lane in lanes)
                {
                    if (!lane.Main.Done)
                    {
                        branches.Add(lane.Main);
                        owners.Add(lane);
                    }
                }
                if (branches.Count == 0)
                    break;
                Step(branches);
                for (int k = 0; k < branches.Count; k++)
                {
                    var lane = owners[k];
                    var b = branches[k];
                    if (FlagDue(b))
                    {
                        b.Flagged = true;
                        if (flags.Decode(decoder, BreakFlags.Context(b.NewlineRun)))
                        {
                            Restart(b);
                            b.DropSpace = Symbols.AddsSpacePrefix;
                            continue;
                        }
                    }
                    var c = cumulative[k];
                    uint total = c[^1];
                    int symbol = TokenFrequencies.Find(c, decoder.Target(total));
                    decoder.Consume(c[symbol], c[symbol + 1] - c[symbol]);
                    if (symbol == vocab)
                    {
                        escaped[0] = (byte)decoder.DecodeUniform(8);
                        symbol = -1 - escaped[0];
                    }
                    if (symbol == bos && breaks)
                    {
                        if (b.LastFed == bos)
                            throw new InvalidDataException($"{path}: block {block} is corrupt (BOS right after BOS)");
                        Feed(b, bos);
                        continue;
                    }
                    ReadOnlySpan<byte> bytes = symbol < 0 ? escaped : Symbols.Bytes(symbol);
                    if (bytes.IsEmpty)
                        throw new InvalidDataException($"{path}: block {block} is corrupt (a token that stands for no bytes)");
                    if (b.DropSpace)
                    {
                        if (bytes[0] != (byte)' ')
                            throw new InvalidDataException($"{path}: block {block} is corrupt (no space prefix where one was marked)");
                        bytes = bytes[1..];
                        b.DropSpace = false;
                    }
                    if (b.Bytes + bytes.Length > lane.Length)
                        throw new InvalidDataException($"{path}: block {block} is corrupt (a segment longer than its table entry)");
                    bytes.CopyTo(lane.Output.AsSpan(b.Bytes));
                    Advance(b, bytes);
                    done += bytes.Length;
                    FinishOrFeed(b, lane.Length, symbol);
                }
                progress?.Invoke(done);
            }
        }
        finally
        {
            foreach (var lane in lanes)
                Release(lane.Main);
        }
        return lanes.Select(l => l.Output).ToList();
    }

    // ---- encoding -----------------------------------------------------------------------------------------------

    /// <summary>A segment's text cut into spans at the end of every run of line ends (CR, LF) that holds a newline, each
    /// tokenized continuing (no space prefix); the first span, and with a lookahead every span after two or more newlines
    /// (where a break is tried), also prefixed when the tokenizer adds a prefix and it round-trips (a span that starts a
    /// document).</summary>
    private sealed class Spans
    {
        public required List<int>[] Continuing;
        public required List<int>?[] Prefixed;

        /// <summary>The symbol <paramref name="b"/> codes next.</summary>
        public int Next(Branch b) => (b.Prefixed ? Prefixed[b.Span]! : Continuing[b.Span])[b.Index];
    }

    private Spans Tokenize(byte[] text)
    {
        var starts = new List<int> { 0 };
        var newlinesBefore = new List<int> { 0 }; // LFs in the run of line ends before each span
        if (breaks)
        {
            for (int i = 1; i < text.Length; i++)
            {
                if (IsLineEnd(text[i]) || !IsLineEnd(text[i - 1]))
                    continue;
                int newlines = 0;
                for (int j = i - 1; j >= 0 && IsLineEnd(text[j]); j--)
                    newlines += text[j] == (byte)'\n' ? 1 : 0;
                if (newlines > 0)
                {
                    starts.Add(i);
                    newlinesBefore.Add(newlines);
                }
            }
        }
        starts.Add(text.Length);
        int count = starts.Count - 1;
        var spans = new Spans { Continuing = new List<int>[count], Prefixed = new List<int>?[count] };
        for (int s = 0; s < count; s++)
        {
            var span = text.AsSpan(starts[s], starts[s + 1] - starts[s]);
            spans.Continuing[s] = Symbols.Tokenize(span, tryPrefix: false, out _);
            if (s == 0 || (lookahead > 0 && newlinesBefore[s] >= 2))
            {
                var prefixed = Symbols.Tokenize(span, tryPrefix: true, out bool dropped);
                spans.Prefixed[s] = dropped ? prefixed : null;
            }
        }
        return spans;
    }

    /// <summary>
    /// Codes every lane's text. The encoder is free to choose the symbols, as long as they decode to the text: where
    /// <see cref="lookahead"/> &gt; 0 it compares two parses, side by side, wherever one of them might pay — a BOS token
    /// where the model gives BOS at least <see cref="BosTrial"/> (the text reads as a new document), and a document break
    /// (a fresh window from BOS, the next span tokenized with the space prefix) at the end of a run of newlines — and keeps
    /// the one that costs fewer bits once both have coded at least <c>lookahead</c> symbols and reached the same byte.
    /// The chosen steps are recorded, then written in the decoder's order (step by step, lane by lane).
    /// </summary>
    public BlockStats Encode(List<Lane> lanes, RangeEncoder encoder, Action<long>? progress)
    {
        trials[0] = new Trials();
        trials[1] = new Trials();
        lanesInBlock = lanes.Count;
        alternatives = 0;
        var texts = new Spans[lanes.Count];
        for (int i = 0; i < lanes.Count; i++)
        {
            texts[i] = Tokenize(lanes[i].Text!);
            lanes[i].DroppedSpace = texts[i].Prefixed[0] is not null;
            Start(lanes[i]);
            lanes[i].Main.Prefixed = lanes[i].DroppedSpace;
        }
        var branches = new List<Branch>(2 * lanes.Count);
        var owners = new List<int>(2 * lanes.Count);
        try
        {
            while (true)
            {
                branches.Clear();
                owners.Clear();
                for (int i = 0; i < lanes.Count; i++)
                {
                    if (!lanes[i].Main.Done)
                    {
                        branches.Add(lanes[i].Main);
                        owners.Add(i);
                    }
                    foreach (var alternative in lanes[i].Alternatives)
                    {
                        if (!alternative.Done)
                        {
                            branches.Add(alternative);
                            owners.Add(i);
                        }
                    }
                }
                if (branches.Count == 0)
                    break;
                Step(branches);
                for (int k = 0; k < branches.Count; k++)
                    Act(lanes[owners[k]], texts[owners[k]], branches[k], k);
                long done = 0;
                foreach (var lane in lanes)
                {
                    Resolve(lane);
                    done += lane.Main.Bytes;
                }
                progress?.Invoke(done);
            }
        }
        finally
        {
            foreach (var lane in lanes)
            {
                Release(lane.Main);
                foreach (var alternative in lane.Alternatives)
                    Release(alternative);
                lane.Alternatives.Clear();
            }
        }
        return Write(lanes, encoder);
    }

    /// <summary>One step of branch <paramref name="b"/> with the frequencies of batch row <paramref name="k"/>.</summary>
    private void Act(Lane lane, Spans text, Branch b, int k)
    {
        bool main = b == lane.Main;
        int flagContext = -1;
        if (FlagDue(b))
        {
            b.Flagged = true;
            flagContext = BreakFlags.Context(b.NewlineRun);
            if (main && CanFork(lane) && b.Index == 0 && b.Span > 0 && text.Prefixed[b.Span] is not null && trials[1].Take())
            {
                // try a document break here: a fresh window, this span with the space prefix
                var alt = b.CloneText();
                alt.Cache = TakeCache();
                alt.Steps.Add(new CodedStep(flagContext, true, 0, 0, 0, 0, 0));
                alt.Bits += BreakBits;
                Restart(alt);
                alt.Prefixed = true;
                alt.DropSpace = Symbols.AddsSpacePrefix;
                alt.Kind = 1;
                Fork(lane, alt);
            }
        }
        var c = cumulative[k];
        uint total = c[^1];
        uint bosFrequency = c[bos + 1] - c[bos];
        if (main && CanFork(lane) && flagContext < 0 && b.LastFed != bos
            && bosFrequency >= total * BosTrial && 4 * bosFrequency >= NextFrequency(text, b, c) && trials[0].Take())
        {
            // try a BOS token here (likely enough, and not much less likely than the next token): the same window continues after it
            var alt = b.CloneText();
            var cache = (Float32KvCache)TakeCache();
            cache.CopyFrom((Float32KvCache)b.Cache!, b.Position);
            alt.Cache = cache;
            alt.Steps.Add(new CodedStep(-1, false, bos, c[bos], bosFrequency, total, Nll(k, bos)));
            alt.Bits += Math.Log2((double)total / bosFrequency);
            Feed(alt, bos);
            Fork(lane, alt);
        }

        int symbol = text.Next(b);
        if (++b.Index == (b.Prefixed ? text.Prefixed[b.Span]! : text.Continuing[b.Span]).Count)
        {
            b.Span++;
            b.Index = 0;
            b.Prefixed = false;
        }
        ReadOnlySpan<byte> bytes;
        if (symbol >= 0)
        {
            uint frequency = c[symbol + 1] - c[symbol];
            b.Steps.Add(new CodedStep(flagContext, false, symbol, c[symbol], frequency, total, Nll(k, symbol)));
            b.Bits += Math.Log2((double)total / frequency);
            bytes = Symbols.Bytes(symbol);
        }
        else
        {
            double bits = Math.Log2(total) + 8;
            b.Steps.Add(new CodedStep(flagContext, false, symbol, c[vocab], 1, total, bits));
            b.Bits += bits;
            bytes = lane.Text.AsSpan(b.Bytes, 1);
        }
        if (b.DropSpace)
        {
            bytes = bytes[1..];
            b.DropSpace = false;
        }
        Advance(b, bytes);
        b.Boundaries?.TryAdd(b.Bytes, b.Bits);
        FinishOrFeed(b, lane.Length, symbol);
    }

    /// <summary>The frequency of the token <paramref name="b"/> codes next (an escape's for an escaped byte).</summary>
    private uint NextFrequency(Spans text, Branch b, uint[] c)
    {
        int symbol = text.Next(b);
        return symbol >= 0 ? c[symbol + 1] - c[symbol] : c[vocab + 1] - c[vocab];
    }

    private bool CanFork(Lane lane) => lookahead > 0 && lane.Alternatives.Count < MaxAlternatives && alternatives < lanesInBlock;

    private void Fork(Lane lane, Branch alternative)
    {
        alternatives++;
        lane.Alternatives.Add(alternative);
        lane.Main.Boundaries ??= [];
    }

    /// <summary>Ends each comparison once the two parses stand at the same byte after <c>lookahead</c> steps of the
    /// alternative: the cheaper goes on (a tie keeps the plain one; an alternative that wins replaces the parse and ends
    /// the other comparisons); after four times that many steps without a common byte, the alternative is dropped.</summary>
    private void Resolve(Lane lane)
    {
        var main = lane.Main;
        for (int a = 0; a < lane.Alternatives.Count; a++)
        {
            var alt = lane.Alternatives[a];
            if (++alt.ForkSteps < lookahead)
                continue;
            double mainBits, altBits;
            if (main.Boundaries!.TryGetValue(alt.Bytes, out mainBits))
                altBits = alt.Bits;
            else if (alt.Boundaries!.TryGetValue(main.Bytes, out altBits))
                mainBits = main.Bits;
            else if (alt.ForkSteps < 4 * lookahead)
                continue;
            else
                mainBits = altBits = 0;
            trials[alt.Kind].Report(altBits < mainBits);
            if (altBits < mainBits)
            {
                Release(main);
                foreach (var other in lane.Alternatives)
                {
                    if (other != alt)
                        Release(other);
                }
                alternatives -= lane.Alternatives.Count;
                lane.Alternatives.Clear();
                alt.Boundaries = null;
                lane.Main = alt;
                return;
            }
            Release(alt);
            lane.Alternatives.RemoveAt(a--);
            alternatives--;
        }
        if (lane.Alternatives.Count == 0)
            main.Boundaries = null;
    }

    /// <summary>Writes the lanes' recorded steps in the decoder's order: step by step, lane by lane.</summary>
    private BlockStats Write(List<Lane> lanes, RangeEncoder encoder)
    {
        var flags = new BreakFlags();
        long tokens = 0, escapes = 0, breakCount = 0, bosCount = 0;
        double modelBits = 0, escapeBits = 0;
        int steps = lanes.Max(l => l.Main.Steps.Count);
        for (int s = 0; s < steps; s++)
        {
            foreach (var lane in lanes)
            {
                if (s >= lane.Main.Steps.Count)
                    continue;
                var step = lane.Main.Steps[s];
                if (step.FlagContext >= 0)
                    flags.Encode(encoder, step.FlagContext, step.Break);
                if (step.Break)
                {
                    breakCount++;
                    continue;
                }
                encoder.Encode(step.Cumulative, step.Frequency, step.Total);
                if (step.Symbol >= 0)
                {
                    tokens++;
                    modelBits += step.Bits;
                    if (step.Symbol == bos)
                        bosCount++;
                }
                else
                {
                    encoder.EncodeUniform((uint)(-1 - step.Symbol), 8);
                    escapes++;
                    escapeBits += step.Bits;
                }
            }
        }
        return new BlockStats(tokens, escapes, breakCount, bosCount, modelBits, escapeBits);
    }

    public void Dispose() => runtime.Dispose();
}

/// <summary>The break flags' adaptive binary model (docs/FORMAT.md, .sqz section 3): a count pair per context (the length
/// of the newline run before the flag, 1 to 4 or more), shared by the block's segments in coding order.</summary>
internal sealed class BreakFlags
{
    private const int Contexts = 4;
    private const uint Limit = 1 << 16;
    private readonly uint[] zeros = [1, 1, 1, 1];
    private readonly uint[] ones = [1, 1, 1, 1];

    public static int Context(int newlineRun) => Math.Min(newlineRun, Contexts) - 1;

    public void Encode(RangeEncoder encoder, int context, bool value)
    {
        uint total = zeros[context] + ones[context];
        encoder.Encode(value ? zeros[context] : 0, value ? ones[context] : zeros[context], total);
        Update(context, value);
    }

    public bool Decode(RangeDecoder decoder, int context)
    {
        uint total = zeros[context] + ones[context];
        bool value = decoder.Target(total) >= zeros[context];
        decoder.Consume(value ? zeros[context] : 0, value ? ones[context] : zeros[context]);
        Update(context, value);
        return value;
    }

    private void Update(int context, bool value)
    {
        if (value)
            ones[context] += 2;
        else
            zeros[context] += 2;
        if (zeros[context] + ones[context] > Limit)
        {
            zeros[context] = (zeros[context] + 1) / 2;
            ones[context] = (ones[context] + 1) / 2;
        }
    }
}

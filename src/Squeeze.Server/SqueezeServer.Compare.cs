using System.Diagnostics;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Server;

public sealed partial class SqueezeServer
{
    /// <summary>
    /// <c>POST /compare</c> (the page's): a completion (<c>prompt</c>) or chat (<c>messages</c>) request answered by the
    /// model and, with <c>--base</c>, by the base model at once, as server-sent events: each token's text as it comes
    /// (<c>{"side", "index", "text"}</c>), then its KL divergence KL(base ‖ model) at that position
    /// (<c>{"side", "index", "kl"}</c>), and a summary per side (<c>{"side", "done", "tokens", "tokens_per_second",
    /// "finish_reason"}</c>). The divergence of the model's own answer comes from the base model running the same tokens
    /// (a <see cref="FollowerSequence"/>), and the other way round.
    /// </summary>
    private async Task Compare(HttpContext http)
    {
        OpenAiRequest request;
        int maxTokens;
        try
        {
            byte[] body = await ReadBody(http).ConfigureAwait(false);
            bool chat;
            try
            {
                using var peek = JsonDocument.Parse(body);
                chat = peek.RootElement.ValueKind == JsonValueKind.Object && peek.RootElement.TryGetProperty("messages", out _);
            }
            catch (JsonException e)
            {
                throw new RequestException(400, "the body is not valid JSON: " + e.Message);
            }
            request = OpenAiRequest.Parse(body, chat, Main.Model.Config.VocabSize);
            Prompt(Main, request);
            if (Base is { } b)
                Prompt(b, request);
            maxTokens = request.MaxTokens ?? Math.Min(options.MaxTokens, 256);
            if (maxTokens > options.MaxTokens)
                throw new RequestException(400, $"'max_tokens' {maxTokens} is above this server's limit of {options.MaxTokens}");
        }
        catch (RequestException e)
        {
            await Error(http, e.Status, e.Message).ConfigureAwait(false);
            return;
        }

        var events = Channel.CreateUnbounded<byte[]>();
        var sides = new List<Side>();
        try
        {
            sides.Add(new Side("model", Main, Base, Prompt(Main, request), request, maxTokens, options, events.Writer, baseIsGenerator: false, http.RequestAborted));
            if (Base is { } b)
                sides.Add(new Side("base", b, Main, Prompt(b, request), request, maxTokens, options, events.Writer, baseIsGenerator: true, http.RequestAborted));
            if (!sides.All(s => s.Submit()))
            {
                await Error(http, 429, "the server is busy; try again later").ConfigureAwait(false);
                return;
            }
            http.Response.StatusCode = 200;
            http.Response.ContentType = "text/event-stream";
            http.Response.Headers.CacheControl = "no-cache";
            var producers = Task.WhenAll(sides.Select(s => s.Run()));
            _ = producers.ContinueWith(_ => events.Writer.TryComplete(), TaskScheduler.Default);
            await foreach (byte[] e in events.Reader.ReadAllAsync(http.RequestAborted).ConfigureAwait(false))
                await Event(http, e, http.RequestAborted).ConfigureAwait(false);
            await producers.ConfigureAwait(false);
            await http.Response.WriteAsync("data: [DONE]\n\n", http.RequestAborted).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // the client went away
        }
        finally
        {
            foreach (var side in sides)
                await side.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>One model's answer on the comparison page, and the other model scoring it.</summary>
    private sealed class Side : IAsyncDisposable
    {
        private readonly string name;
        private readonly ModelWorker worker;
        private readonly ModelWorker? other;
        private readonly GenerationSequence generation;
        private readonly FollowerSequence? follower;
        private readonly ChannelWriter<byte[]> events;
        private readonly TextAssembler text;
        private readonly bool baseIsGenerator;
        private readonly Lock pairLock = new();
        private readonly Dictionary<int, float[]> generatorLogs = [];
        private readonly Dictionary<int, float[]> followerLogs = [];
        private readonly int promptEnd;

        public Side(string name, ModelWorker worker, ModelWorker? other, int[] prompt, OpenAiRequest request, int maxTokens, ServerOptions options,
            ChannelWriter<byte[]> events, bool baseIsGenerator, CancellationToken aborted)
        {
            this.name = name;
            this.worker = worker;
            this.other = other;
            this.events = events;
            this.baseIsGenerator = baseIsGenerator;
            promptEnd = prompt.Length - 1;
            text = new TextAssembler(worker.Model.Tokenizer, request.Stop);
            generation = new GenerationSequence(worker, prompt, request.Sampling, maxTokens, options.TimeLimit, aborted);
            if (other is not null)
            {
                follower = new FollowerSequence(other, prompt, (index, logits) => Pair(followerLogs, generatorLogs, index, logits), options.TimeLimit, aborted);
                generation.Follower = follower;
                generation.LogitsObserver = (position, logits) => Pair(generatorLogs, followerLogs, position - promptEnd, logits);
            }
        }

        public bool Submit() => worker.TrySubmit(generation) && (follower is null || other!.TrySubmit(follower));

        /// <summary>Writes this side's tokens as they come, then its summary; completes when its scoring is done too.</summary>
        public async Task Run()
        {
            var clock = Stopwatch.StartNew();
            double first = 0;
            int index = 0;
            await foreach (int token in generation.Tokens.ReadAllAsync().ConfigureAwait(false))
            {
                if (index == 0)
                    first = clock.Elapsed.TotalSeconds;
                string piece = text.Add(token);
                if (text.Stopped)
                    generation.Cancel();
                Write(new Dictionary<string, object> { ["side"] = name, ["index"] = index++, ["text"] = piece });
            }
            var reason = await generation.Finished.ConfigureAwait(false);
            string rest = text.Flush();
            if (rest.Length > 0)
                Write(new Dictionary<string, object> { ["side"] = name, ["index"] = index - 1, ["text"] = rest });
            double seconds = clock.Elapsed.TotalSeconds - first;
            if (follower is not null)
                await follower.Finished.ConfigureAwait(false);
            Write(new Dictionary<string, object>
            {
                ["side"] = name,
                ["done"] = true,
                ["tokens"] = generation.Generated,
                ["tokens_per_second"] = generation.Generated > 1 ? Math.Round((generation.Generated - 1) / Math.Max(seconds, 1e-9), 1) : 0,
                ["finish_reason"] = text.Stopped || reason == FinishReason.Stop ? "stop" : reason == FinishReason.Length ? "length" : reason.ToString().ToLowerInvariant(),
            });
        }

        // Called on either model's thread with the distribution for generated token `index`; the second of the pair
        // computes the divergence.
        private void Pair(Dictionary<int, float[]> mine, Dictionary<int, float[]> theirs, int index, ReadOnlySpan<float> logits)
        {
            var log = LogSoftmax(logits);
            float[]? partner;
            lock (pairLock)
            {
                if (!theirs.Remove(index, out partner))
                {
                    mine[index] = log;
                    return;
                }
            }
            bool mineIsGenerator = ReferenceEquals(mine, generatorLogs);
            bool mineIsBase = mineIsGenerator == baseIsGenerator;
            double kl = Divergence(mineIsBase ? log : partner, mineIsBase ? partner : log);
            Write(new Dictionary<string, object> { ["side"] = name, ["index"] = index, ["kl"] = Math.Round(kl, 6) });
        }

        private void Write(Dictionary<string, object> e) => events.TryWrite(JsonSerializer.SerializeToUtf8Bytes(e));

        /// <summary>Cancels what still runs and waits for the workers to let it go.</summary>
        public async ValueTask DisposeAsync()
        {
            generation.Cancel();
            worker.Wake();
            await generation.Finished.ConfigureAwait(false);
            generation.Dispose();
            if (follower is not null)
            {
                follower.Cancel();
                other!.Wake();
                await follower.Finished.ConfigureAwait(false);
                follower.Dispose();
            }
        }

        private static float[] LogSoftmax(ReadOnlySpan<float> logits)
        {
            var log = new float[logits.Length];
            float max = TensorPrimitives.Max(logits);
            TensorPrimitives.Subtract(logits, max, log);
            double sum = 0;
            foreach (float v in log)
                sum += Math.Exp(v);
            TensorPrimitives.Subtract(log, (float)Math.Log(sum), log);
            return log;
        }

        /// <summary>KL(P ‖ Q) = Σ p (log p − log q), from log-probabilities.</summary>
        private static double Divergence(float[] logP, float[] logQ)
        {
            double kl = 0;
            for (int i = 0; i < logP.Length; i++)
            {
                double p = Math.Exp(logP[i]);
                if (p > 0)
                    kl += p * (logP[i] - logQ[i]);
            }
            return Math.Max(0, kl);
        }
    }
}

using System.Diagnostics;
using Squeeze.Formats;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Bench;

/// <summary>
/// <c>llama-agreement --model FILE.gguf [--positions N]</c>: loads a GGUF file Squeeze wrote in llama.cpp (the build
/// LLamaSharp.Backend.Cpu ships, through the test suite's <see cref="LlamaCpp"/>) and in Squeeze's runtime, runs the
/// first <c>N</c> tokens (default 16) of <c>tinystories-calib.txt</c> through both and compares their logits at every
/// position (<see cref="RuntimeAgreement"/>): the tests' check, for files too large to write in a test.
/// </summary>
internal static class LlamaAgreementSuite
{
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        string path = Program.Value(args, "--model") ?? throw new ArgumentException("llama-agreement needs --model FILE.gguf");
        int positions = Program.Option(args, "--positions", 16);
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- llama-agreement {string.Join(' ', args)}`");
        Console.WriteLine();
        int[] tokens;
        using (var model = ModelLoader.Load(path))
            tokens = model.Tokenizer.Encode(File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt")), model.Vocabulary.AddBos)[..positions];
        var clock = Stopwatch.StartNew();
        var agreement = RuntimeAgreement.Measure(path, tokens);
        Console.WriteLine("| file | bytes | positions | same top token | mean KLD llama.cpp ‖ Squeeze | max KLD | max abs logit difference | seconds (both loads and runs) |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        Console.WriteLine($"| {Path.GetFileName(path)} | {new FileInfo(path).Length:N0} | {agreement.Positions} | {agreement.SameTopShare:P1} | {agreement.MeanKld:E2} | "
            + $"{agreement.MaxKld:E2} | {agreement.MaxAbsLogitDelta:E2} | {clock.Elapsed.TotalSeconds:0} |");
    }
}

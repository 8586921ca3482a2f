using System.CommandLine;
using Squeeze.Cli.Commands;

namespace Squeeze.Cli;

/// <summary>The <c>squeeze</c> command line: one subcommand per file under <c>Commands/</c>.</summary>
public static class Program
{
    /// <summary>Runs the subcommand <paramref name="args"/> name and returns its exit code (0: success, 1: an error printed on stderr).</summary>
    public static int Main(string[] args)
    {
        var root = new RootCommand("squeeze: compress language models to a size budget, measure what was lost, run them on the CPU.")
        {
            InspectCommand.Create(),
            GenerateCommand.Create(),
            EvalCommand.Create(),
            ConvertCommand.Create(),
            CalibrateCommand.Create(),
            CompressCommand.Create(),
            PlanCommand.Create(),
            ZipCommand.Create(),
            UnzipCommand.Create(),
            PromptCommand.Create(),
            BenchCommand.Create(),
            DemoCommand.Create(),
            ServeCommand.Create(),
            SelfTestCommand.Create(),
            EmbeddingsCommand.Create(),
            WorkerCommand.Create(),
        };
        return root.Parse(args).Invoke();
    }
}

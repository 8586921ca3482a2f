using System.CommandLine;
using Squeeze.Cli.Commands;

namespace Squeeze.Cli;

public static class Program
{
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
            BenchCommand.Create(),
            DemoCommand.Create(),
            SelfTestCommand.Create(),
        };
        return root.Parse(args).Invoke();
    }
}

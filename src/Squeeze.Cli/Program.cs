using System.CommandLine;

namespace Squeeze.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("squeeze: compress language models to a size budget, measure what was lost, run them on the CPU.");
        return root.Parse(args).Invoke();
    }
}

using System.CommandLine;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze demo</c>: the main job on the demo model (stories15M): evaluate it and print the size and quality table.</summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var command = new Command("demo", "Fetch the demo model (stories15M), evaluate it and print the size and quality table") { threads, json };
        command.SetAction(r => Cli.Run(() =>
        {
            var files = DemoModel.Locate(Cli.Status);
            return EvalCommand.Execute(new EvalCommand.Options(files.Model, files.Tokenizer, files.EvalText, 256, 0, null, r.GetValue(threads), r.GetValue(json)));
        }));
        return command;
    }
}

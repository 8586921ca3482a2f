using System.CommandLine;
using Squeeze.Diagnostics;
using Squeeze.Kernels;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze selftest kernels</c> (hidden): the kernels this process dispatches to against the scalar
/// references; exits 1 on any mismatch. Tests run it with <c>DOTNET_EnableAVX512=0</c> / <c>DOTNET_EnableAVX2=0</c>.</summary>
internal static class SelfTestCommand
{
    public static Command Create()
    {
        var kernels = new Command("kernels", "Check the SIMD kernels against the scalar references");
        kernels.SetAction(_ => KernelSelfTest.Run(Console.Out) == 0 ? 0 : 1);
        return new Command("selftest", "Internal checks of this machine's code paths") { Hidden = true, Subcommands = { kernels } };
    }
}

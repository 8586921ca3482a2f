using System.Diagnostics;
using System.IO.Compression;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Xml.Linq;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Packaging;

/// <summary>
/// The three packages as a user gets them: <c>dotnet pack</c> of the solution (the build the tests run on, not built
/// again), then the tool installed from that folder into a tool path of its own and run. The tool's package store lives
/// in the tool path, so the installed tool is the one just packed, never a cached copy.
/// </summary>
public sealed class PackedPackages : IDisposable
{
    private readonly TempDirectory temp = new();

    /// <summary>Packs Squeeze, Squeeze.Charts and Squeeze.Cli into <see cref="Folder"/> and installs the tool into <see cref="Tools"/>.</summary>
    public PackedPackages()
    {
        Version = XDocument.Load(Path.Combine(Repository.Root, "Directory.Build.props")).Descendants("Version").Single().Value;
        string configuration = typeof(PackedPackages).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()!.Configuration;
        Folder = Path.Combine(temp.Path, "packages");
        Tools = Path.Combine(temp.Path, "tools");
        Dotnet.Run(Repository.Root, "pack", "Squeeze.slnx", "-c", configuration, "--no-build", "-nodeReuse:false", "-o", Folder);
        Dotnet.Run(temp.Path, "tool", "install", "Squeeze.Cli", "--version", Version, "--tool-path", Tools, "--add-source", Folder);
    }

    /// <summary>The version in Directory.Build.props, the one place it is set.</summary>
    public string Version { get; }

    /// <summary>The folder holding the .nupkg files.</summary>
    public string Folder { get; }

    /// <summary>The tool path the tool was installed into.</summary>
    public string Tools { get; }

    /// <summary>The file names inside package <paramref name="id"/> and its .nuspec.</summary>
    public (IReadOnlyList<string> Entries, XDocument Nuspec) Open(string id)
    {
        using var zip = ZipFile.OpenRead(Path.Combine(Folder, $"{id}.{Version}.nupkg"));
        var nuspec = zip.GetEntry($"{id}.nuspec") ?? throw new InvalidDataException($"{id}: no {id}.nuspec in the package");
        using var stream = nuspec.Open();
        return ([.. zip.Entries.Select(e => e.FullName)], XDocument.Load(stream));
    }

    /// <summary>The ids of the packages <paramref name="id"/> depends on.</summary>
    public IReadOnlyList<string> Dependencies(string id)
        => [.. Open(id).Nuspec.Descendants().Where(e => e.Name.LocalName == "dependency").Select(e => e.Attribute("id")!.Value)];

    /// <inheritdoc/>
    public void Dispose() => temp.Dispose();
}

public class PackageTests(PackedPackages packages) : IClassFixture<PackedPackages>
{
    /// <summary>Packages whose binaries are native code for each platform (ScottPlot brings the other two).</summary>
    private static readonly string[] NativeAssetPackages = ["ScottPlot", "SkiaSharp", "HarfBuzzSharp"];

    private static bool IsNative(string id) => NativeAssetPackages.Any(n => id.StartsWith(n, StringComparison.OrdinalIgnoreCase));

    [Fact]
    public void The_library_depends_on_managed_packages_only()
    {
        var dependencies = packages.Dependencies("Squeeze");
        Assert.NotEmpty(dependencies);
        Assert.DoesNotContain(dependencies, IsNative);
        Assert.DoesNotContain(packages.Open("Squeeze").Entries, e => e.StartsWith("runtimes/", StringComparison.Ordinal));
        // The charts package is where the native dependency went: the check above does see one when it is there.
        Assert.Contains("Squeeze", packages.Dependencies("Squeeze.Charts"));
        Assert.Contains(packages.Dependencies("Squeeze.Charts"), IsNative);
        // ASP.NET Core is the server package's framework, never the library's.
        Assert.Empty(FrameworkReferences("Squeeze"));
        Assert.Equal(["Microsoft.AspNetCore.App"], FrameworkReferences("Squeeze.Server"));
        Assert.Contains("Squeeze", packages.Dependencies("Squeeze.Server"));
        // Orleans is the cluster package's, never the library's.
        Assert.DoesNotContain(dependencies, d => d.StartsWith("Microsoft.Orleans", StringComparison.OrdinalIgnoreCase));
        Assert.Contains("Squeeze", packages.Dependencies("Squeeze.Cluster"));
        Assert.Contains("Microsoft.Orleans.Server", packages.Dependencies("Squeeze.Cluster"));
    }

    private IEnumerable<string> FrameworkReferences(string id)
        => packages.Open(id).Nuspec.Descendants().Where(e => e.Name.LocalName == "frameworkReference").Select(e => e.Attribute("name")!.Value).Distinct();

    [Theory]
    [InlineData("Squeeze", "lib/net10.0/Squeeze.xml")]
    [InlineData("Squeeze.Charts", "lib/net10.0/Squeeze.Charts.xml")]
    [InlineData("Squeeze.Server", "lib/net10.0/Squeeze.Server.xml")]
    [InlineData("Squeeze.Cluster", "lib/net10.0/Squeeze.Cluster.xml")]
    public void Library_packages_carry_documentation_license_and_readme(string id, string documentation)
    {
        var (entries, nuspec) = packages.Open(id);
        Assert.Contains(documentation, entries);
        Assert.Contains("LICENSE", entries);
        Assert.Contains("README.md", entries);
        var metadata = nuspec.Root!.Elements().Single(e => e.Name.LocalName == "metadata");
        string Field(string name) => metadata.Elements().Single(e => e.Name.LocalName == name).Value;
        Assert.Equal(packages.Version, Field("version"));
        Assert.Equal("LICENSE", Field("license"));
        Assert.Equal("README.md", Field("readme"));
        Assert.False(string.IsNullOrWhiteSpace(Field("description")));
    }

    [Fact]
    public void Installed_tool_prints_its_version()
    {
        string squeeze = Path.Combine(packages.Tools, OperatingSystem.IsWindows() ? "squeeze.exe" : "squeeze");
        string output = Dotnet.Capture(squeeze, packages.Tools, "--version");
        Assert.Equal(packages.Version, output.Trim());
    }
}

/// <summary>Runs the .NET command line (and programs it installed) as a child process.</summary>
internal static class Dotnet
{
    /// <summary>Runs <c>dotnet ARGS</c> in <paramref name="directory"/>; throws with its output when it fails.</summary>
    public static void Run(string directory, params string[] arguments) => Capture("dotnet", directory, arguments);

    /// <summary>Runs <paramref name="program"/> and returns its standard output; throws with all its output when it fails.</summary>
    public static string Capture(string program, string directory, params string[] arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in arguments)
            start.ArgumentList.Add(a);
        // The runtime the tests run on, so an installed tool's launcher finds it wherever .NET is installed.
        start.Environment["DOTNET_ROOT"] = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)}: still running after 3 minutes");
        }
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)}: exit code {process.ExitCode}\n{output.Result}\n{error.Result}");
        return output.Result;
    }
}

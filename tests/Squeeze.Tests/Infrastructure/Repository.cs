namespace Squeeze.Tests.Infrastructure;

/// <summary>The repository the tests were built from: the first folder above the test assembly holding Squeeze.slnx.</summary>
public static class Repository
{
    private static readonly Lazy<string> RootPath = new(FindRoot);

    /// <summary>The repository root.</summary>
    public static string Root => RootPath.Value;

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Squeeze.slnx")))
                return dir.FullName;
        }
        throw new DirectoryNotFoundException("repository root (Squeeze.slnx) not found above " + AppContext.BaseDirectory);
    }
}

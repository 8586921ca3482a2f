namespace Squeeze.Formats;

/// <summary>Checks on where an output file goes, made before any work so a bad path fails at once.</summary>
public static class OutputPaths
{
    /// <summary>Throws when the directory that would hold <paramref name="path"/> does not exist.</summary>
    /// <exception cref="DirectoryNotFoundException">The message names the path and the missing directory.</exception>
    public static void RequireDirectory(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null && !Directory.Exists(directory))
            throw new DirectoryNotFoundException($"{path}: the directory {directory} does not exist");
    }
}

namespace Squeeze.Tensors;

/// <summary>A file that cannot be read as what it claims to be: truncated, corrupt, or of an unsupported kind.
/// The message names the file and what is wrong.</summary>
public sealed class ModelFormatException : Exception
{
    public ModelFormatException(string path, string problem)
        : base($"{path}: {problem}")
    {
        Path = path;
        Problem = problem;
    }

    public ModelFormatException(string path, string problem, Exception inner)
        : base($"{path}: {problem}", inner)
    {
        Path = path;
        Problem = problem;
    }

    public ModelFormatException()
        : this("?", "invalid model file")
    {
    }

    public ModelFormatException(string message)
        : this("?", message)
    {
    }

    public ModelFormatException(string message, Exception inner)
        : this("?", message, inner)
    {
    }

    /// <summary>The file that could not be read.</summary>
    public string Path { get; }

    /// <summary>What is wrong with it.</summary>
    public string Problem { get; }
}

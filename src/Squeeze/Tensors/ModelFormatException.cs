namespace Squeeze.Tensors;

/// <summary>A file that cannot be read as what it claims to be: truncated, corrupt, or of an unsupported kind.
/// The message names the file and what is wrong.</summary>
public sealed class ModelFormatException : Exception
{
    /// <summary>The file <paramref name="path"/> cannot be read because of <paramref name="problem"/> (the message is "path: problem").</summary>
    public ModelFormatException(string path, string problem)
        : base($"{path}: {problem}")
    {
        Path = path;
        Problem = problem;
    }

    /// <summary>As <see cref="ModelFormatException(string, string)"/>, caused by <paramref name="inner"/>.</summary>
    public ModelFormatException(string path, string problem, Exception inner)
        : base($"{path}: {problem}", inner)
    {
        Path = path;
        Problem = problem;
    }

    /// <summary>An unreadable model file whose path is unknown.</summary>
    public ModelFormatException()
        : this("?", "invalid model file")
    {
    }

    /// <summary>The problem <paramref name="message"/> in a file whose path is unknown.</summary>
    public ModelFormatException(string message)
        : this("?", message)
    {
    }

    /// <summary>The problem <paramref name="message"/>, caused by <paramref name="inner"/>, in a file whose path is unknown.</summary>
    public ModelFormatException(string message, Exception inner)
        : this("?", message, inner)
    {
    }

    /// <summary>The file that could not be read.</summary>
    public string Path { get; }

    /// <summary>What is wrong with it.</summary>
    public string Problem { get; }
}

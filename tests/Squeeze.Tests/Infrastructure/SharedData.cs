namespace Squeeze.Tests.Infrastructure;

/// <summary>Paths into the read-only shared data (../shared from the repository root, or $SQUEEZE_SHARED).</summary>
public static class SharedData
{
    private static readonly Lazy<string> RootPath = new(FindRoot);

    /// <summary>The shared folder; tests that need it fail loudly when it is missing.</summary>
    public static string Root => RootPath.Value;

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    public static string Stories15M => Path("models", "stories15M", "stories15M.bin");

    public static string Stories15MTokenizerBin => Path("models", "stories15M", "tokenizer.bin");

    public static string Stories15MTokenizerModel => Path("models", "stories15M", "tokenizer.model");

    public static string Stories260K => Path("models", "stories260K", "stories260K.bin");

    public static string Stories260KTokenizer => Path("models", "stories260K", "tok512.bin");

    public static string Golden(string name) => Path("golden", name);

    public static string Synthetic(string name) => Path("golden", "synthetic", name);

    public static string Corpus(string name) => Path("corpora", name);

    private static string FindRoot()
    {
        string? env = Environment.GetEnvironmentVariable("SQUEEZE_SHARED");
        if (!string.IsNullOrEmpty(env))
            return Directory.Exists(env) ? env : throw new DirectoryNotFoundException($"SQUEEZE_SHARED={env} does not exist");
        string shared = System.IO.Path.GetFullPath(System.IO.Path.Combine(Repository.Root, "..", "shared"));
        return Directory.Exists(shared) ? shared : throw new DirectoryNotFoundException($"shared data not found at {shared}; set SQUEEZE_SHARED");
    }
}

using System.Collections;
using System.Security.Cryptography;

namespace Squeeze.Cli;

/// <summary>
/// An npm registry reached with .NET alone (no Node.js): the registry npm is configured to use, a package's tarball
/// address there, and a download checked against a known SHA-256. Credentials (<c>_authToken</c> …) are not read, so
/// the registry or mirror must serve tarballs to anyone, as registry.npmjs.org does.
/// </summary>
internal static class NpmRegistry
{
    /// <summary>npm's own default registry.</summary>
    public static readonly Uri Default = new("https://registry.npmjs.org/");

    /// <summary>How long a download may go without receiving a byte before it is given up.</summary>
    private static readonly TimeSpan StallTimeout = TimeSpan.FromSeconds(60);

    private static readonly HttpClient Http = CreateClient();

    /// <summary>The registry npm would use in the current directory for this user (see the overload for the order).</summary>
    public static Uri Configured()
    {
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry e in Environment.GetEnvironmentVariables())
            environment[(string)e.Key] = (string?)e.Value ?? "";
        return Configured(environment, Environment.CurrentDirectory, Environment.GetFolderPath(Environment.SpecialFolder.UserProfile));
    }

    /// <summary>
    /// The registry as npm reads its configuration, first found wins: the environment variable
    /// <c>npm_config_registry</c> (any case), then a <c>registry=</c> line in the project's <c>.npmrc</c> (in
    /// <paramref name="currentDirectory"/>), the user's (<c>$npm_config_userconfig</c>, else <c>~/.npmrc</c>) and the
    /// global one (<c>$npm_config_globalconfig</c>, else <c>etc/npmrc</c> under <c>$npm_config_prefix</c>, <c>$PREFIX</c>,
    /// the prefix of the <c>node</c> on the PATH, <c>/usr/local</c>, <c>/usr</c> or <c>/</c>: the first that exists),
    /// else <see cref="Default"/>. <c>${NAME}</c> in a file's value is replaced by that environment variable, as npm does.
    /// </summary>
    /// <exception cref="InvalidDataException">The registry found is not an http or https URL; the message names where it was set.</exception>
    public static Uri Configured(IReadOnlyDictionary<string, string> environment, string currentDirectory, string home)
    {
        if (Variable(environment, "npm_config_registry") is { } set)
            return Parse(set, "npm_config_registry");
        foreach (string file in ConfigFiles(environment, currentDirectory, home))
        {
            if (RegistryLine(file, environment) is { } value)
                return Parse(value, file);
        }
        return Default;
    }

    /// <summary>Where an unscoped package's tarball is in a registry: <c>{registry}/{name}/-/{name}-{version}.tgz</c>.</summary>
    public static Uri Tarball(Uri registry, string name, string version)
        => new(registry, $"{name}/-/{name}-{version}.tgz");

    /// <summary>
    /// Downloads <paramref name="url"/> into a new file at <paramref name="destination"/>, reporting bytes received and
    /// the total when the server states it, and keeps the file only when its SHA-256 is <paramref name="sha256"/>
    /// (lowercase hex). On any failure or cancellation the file is deleted.
    /// </summary>
    /// <exception cref="IOException">The registry cannot be reached, answers with an error, stops sending or closes
    /// early; the message is one line naming the URL.</exception>
    /// <exception cref="InvalidDataException">The bytes received are not the expected ones (the message names the URL and both hashes).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> was cancelled.</exception>
    public static void Download(Uri url, string sha256, string destination, IProgress<(long Received, long? Total)> progress, CancellationToken cancellation)
        => DownloadAsync(url, sha256, destination, progress, cancellation).GetAwaiter().GetResult();

    private static async Task DownloadAsync(Uri url, string sha256, string destination, IProgress<(long Received, long? Total)> progress, CancellationToken cancellation)
    {
        bool kept = false;
        long received = 0;
        long? total = null;
        using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        try
        {
            stall.CancelAfter(StallTimeout);
            using var response = await Http.GetAsync(url, HttpCompletionOption.ResponseHeadersRead, stall.Token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
                throw new IOException($"{url}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}");
            total = response.Content.Headers.ContentLength;
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var body = await response.Content.ReadAsStreamAsync(stall.Token).ConfigureAwait(false);
            await using (body.ConfigureAwait(false))
            {
                var file = new FileStream(destination, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
                await using (file.ConfigureAwait(false))
                {
                    var buffer = new byte[1 << 16];
                    progress.Report((0, total));
                    while (true)
                    {
                        stall.CancelAfter(StallTimeout);
                        int n = await body.ReadAsync(buffer, stall.Token).ConfigureAwait(false);
                        if (n == 0)
                            break;
                        hash.AppendData(buffer, 0, n);
                        await file.WriteAsync(buffer.AsMemory(0, n), cancellation).ConfigureAwait(false);
                        received += n;
                        progress.Report((received, total));
                    }
                }
            }
            if (total is { } length && received != length)
                throw new IOException($"{url}: the connection closed after {received} of {length} bytes");
            string actual = Convert.ToHexStringLower(hash.GetHashAndReset());
            if (actual != sha256)
                throw new InvalidDataException($"{url}: SHA-256 of the {received} bytes received is {actual}, expected {sha256}");
            kept = true;
        }
        catch (OperationCanceledException) when (!cancellation.IsCancellationRequested)
        {
            throw new IOException($"{url}: nothing received for {StallTimeout.TotalSeconds:0} s after {Received(received, total)}");
        }
        catch (HttpRequestException e)
        {
            throw new IOException($"{url}: {OneLine(e)}", e);
        }
        catch (HttpIOException e)
        {
            throw new IOException($"{url}: the download broke off after {Received(received, total)} ({OneLine(e)})", e);
        }
        finally
        {
            if (!kept)
                File.Delete(destination);
        }
    }

    private static string Received(long received, long? total) => total is { } t ? $"{received} of {t} bytes" : $"{received} bytes";

    /// <summary>An exception's message with its cause's when that adds something (a TLS failure says "see inner exception").</summary>
    private static string OneLine(Exception e)
    {
        string message = e.InnerException is { } inner && !e.Message.Contains(inner.Message, StringComparison.Ordinal)
            ? $"{e.Message} ({inner.Message})"
            : e.Message;
        return message.ReplaceLineEndings(" ");
    }

    private static HttpClient CreateClient()
    {
        var client = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(30) }) { Timeout = Timeout.InfiniteTimeSpan };
        client.DefaultRequestHeaders.UserAgent.ParseAdd("squeeze");
        return client;
    }

    private static Uri Parse(string value, string source)
    {
        string withSlash = value.EndsWith('/') ? value : value + "/";
        if (!Uri.TryCreate(withSlash, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            throw new InvalidDataException($"{source}: registry {value} is not an http or https URL");
        return uri;
    }

    /// <summary>An environment variable npm would read as configuration: any case, and empty means unset.</summary>
    private static string? Variable(IReadOnlyDictionary<string, string> environment, string name)
        => environment.Where(e => string.Equals(e.Key, name, StringComparison.OrdinalIgnoreCase) && e.Value.Length > 0).Select(e => e.Value).FirstOrDefault();

    /// <summary>The project, user and global npmrc files, in npm's order of precedence (only those that exist).</summary>
    private static IEnumerable<string> ConfigFiles(IReadOnlyDictionary<string, string> environment, string currentDirectory, string home)
    {
        string project = Path.Combine(currentDirectory, ".npmrc");
        string user = Variable(environment, "npm_config_userconfig") ?? Path.Combine(home, ".npmrc");
        string? global = Variable(environment, "npm_config_globalconfig")
            ?? GlobalPrefixes(environment).Select(p => Path.Combine(p, "etc", "npmrc")).FirstOrDefault(File.Exists);
        return new[] { project, user, global }.OfType<string>().Where(File.Exists);
    }

    /// <summary>Where npm may be installed, most specific first: its prefix is the folder above node's bin/.</summary>
    private static IEnumerable<string> GlobalPrefixes(IReadOnlyDictionary<string, string> environment)
    {
        if (Variable(environment, "npm_config_prefix") is { } configured)
            yield return configured;
        if (Variable(environment, "PREFIX") is { } prefix)
            yield return prefix;
        foreach (string directory in (Variable(environment, "PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var node = new FileInfo(Path.Combine(directory, OperatingSystem.IsWindows() ? "node.exe" : "node"));
            if (!node.Exists)
                continue;
            string real = node.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? node.FullName;
            if (Path.GetDirectoryName(Path.GetDirectoryName(real)) is { } above)
                yield return above;
            break;
        }
        yield return "/usr/local";
        yield return "/usr";
        yield return "/";
    }

    /// <summary>The value of the last top-level <c>registry=</c> line of an npmrc (ini) file, or null.</summary>
    private static string? RegistryLine(string file, IReadOnlyDictionary<string, string> environment)
    {
        string? value = null;
        bool inSection = false;
        foreach (string raw in File.ReadLines(file))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line[0] is ';' or '#')
                continue;
            if (line[0] == '[')
            {
                inSection = true;
                continue;
            }
            int equals = line.IndexOf('=', StringComparison.Ordinal);
            if (inSection || equals < 0 || Unquote(line[..equals].Trim()) != "registry")
                continue;
            value = ReplaceVariables(Unquote(line[(equals + 1)..].Trim()), environment);
        }
        return value;
    }

    /// <summary>An ini value: the text inside quotes, or else the text before an inline ; or # comment.</summary>
    private static string Unquote(string text)
    {
        if (text.Length >= 2 && text[0] is '"' or '\'' && text[^1] == text[0])
            return text[1..^1];
        int comment = text.IndexOfAny([';', '#']);
        return (comment < 0 ? text : text[..comment]).Trim();
    }

    /// <summary>npm's <c>${NAME}</c> substitution; a variable that is not set is left as written.</summary>
    private static string ReplaceVariables(string text, IReadOnlyDictionary<string, string> environment)
        => System.Text.RegularExpressions.Regex.Replace(text, @"\$\{([^${}]+)\}", m => environment.TryGetValue(m.Groups[1].Value, out var v) ? v : m.Value);
}

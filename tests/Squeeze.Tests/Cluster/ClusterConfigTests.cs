using System.Net;
using Squeeze.Cluster;
using Squeeze.Tensors;

namespace Squeeze.Tests.Cluster;

public sealed class ClusterConfigTests
{
    [Fact]
    public void LocalhostMembershipReadsItsEndpointsAndDefaults()
    {
        var config = ClusterConfig.Parse("""{ "membership": "localhost", "primary": "127.0.0.1:11111", "gateways": ["127.0.0.1:30000", "localhost:30001"], "itemTimeoutSeconds": 90, "partBytes": 65536 }""", "c.json");
        Assert.Equal(MembershipKind.Localhost, config.Membership);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 11111), config.Primary);
        Assert.Equal([new IPEndPoint(IPAddress.Loopback, 30000), new IPEndPoint(IPAddress.Loopback, 30001)], config.Gateways);
        Assert.Equal(TimeSpan.FromSeconds(90), config.ItemTimeout);
        Assert.Equal(65536, config.PartBytes);
        Assert.Equal(32 << 20, ClusterConfig.Parse("{}", "c.json").PartBytes);
        Assert.Equal("squeeze", config.ClusterId);
        // Without gateways, the primary's machine at the gateway port.
        Assert.Equal([new IPEndPoint(IPAddress.Parse("10.0.0.5"), 31000)], ClusterConfig.Parse("""{ "primary": "10.0.0.5:11111", "gatewayPort": 31000 }""", "c.json").Gateways);
        var adonet = ClusterConfig.Parse("""{ "membership": "adonet", "connectionString": "Host=db;Database=orleans" }""", "c.json");
        Assert.Equal("Host=db;Database=orleans", adonet.ConnectionString);
    }

    [Theory]
    [InlineData("""{ "membership": "zookeeper" }""", "membership \"zookeeper\" is not one of localhost, adonet")]
    [InlineData("""{ "membership": "adonet" }""", "adonet membership needs a connectionString")]
    [InlineData("""{ "primary": "127.0.0.1" }""", "\"primary\": \"127.0.0.1\" is not host:port")]
    [InlineData("""{ "siloPort": 70000 }""", "\"siloPort\" must be a port number")]
    [InlineData("""{ "partBytes": 104857600 }""", "\"partBytes\" must be a number of bytes from 1024 to 67108864")]
    [InlineData("""{ "gateways": [] }""", "\"gateways\" must be a non-empty array")]
    [InlineData("""{ "primary": "127.0.0.1:1", "extra": 1 }""", "unknown field \"extra\"")]
    [InlineData("""[1]""", "must be a JSON object")]
    [InlineData("""{ "membership": """, "bad cluster configuration")]
    public void ABadConfigurationIsOneLineNamingTheFile(string json, string problem)
    {
        var e = Assert.Throws<ModelFormatException>(() => ClusterConfig.Parse(json, "cluster.json"));
        Assert.Contains("cluster.json", e.Message, StringComparison.Ordinal);
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }
}

using System.Net;
using System.Text.Json;

namespace Squeeze.Cluster;

/// <summary>How the cluster's machines find each other.</summary>
public enum MembershipKind
{
    /// <summary>Orleans' development clustering: every worker names one primary worker's silo endpoint; the client
    /// connects to the listed gateways. For workers on one machine (or a fixed set of addresses).</summary>
    Localhost,

    /// <summary>Orleans' ADO.NET membership table on PostgreSQL (Npgsql): workers and clients read each other's
    /// addresses from the database named by the connection string.</summary>
    AdoNet,
}

/// <summary>
/// A cluster's settings, read from the JSON file <c>--cluster CONFIG</c> names:
/// <code>
/// { "membership": "localhost", "primary": "127.0.0.1:11111", "gateways": ["127.0.0.1:30000", "127.0.0.1:30001"] }
/// { "membership": "adonet", "connectionString": "Host=db;Database=orleans;Username=squeeze;Password=…" }
/// </code>
/// Optional in both: <c>clusterId</c> and <c>serviceId</c> (default "squeeze"), <c>siloPort</c> and <c>gatewayPort</c>
/// (a worker's defaults, 11111 and 30000), <c>itemTimeoutSeconds</c> (how long a client waits for one work item, 3600),
/// <c>partBytes</c> (the most bytes of an item or a result one message carries, 32 MiB; 1 KiB to 64 MiB, under Orleans'
/// 100 MB message limit).
/// Unknown fields and wrong types are refused with one line naming the file.
/// </summary>
public sealed record ClusterConfig
{
    /// <summary>How machines find each other.</summary>
    public MembershipKind Membership { get; init; } = MembershipKind.Localhost;

    /// <summary>The primary worker's silo endpoint (localhost membership).</summary>
    public IPEndPoint Primary { get; init; } = new(IPAddress.Loopback, 11111);

    /// <summary>The workers' gateway endpoints the client connects to (localhost membership).</summary>
    public IReadOnlyList<IPEndPoint> Gateways { get; init; } = [new(IPAddress.Loopback, 30000)];

    /// <summary>The ADO.NET connection string of the membership database (adonet membership).</summary>
    public string ConnectionString { get; init; } = "";

    /// <summary>Orleans' cluster id: workers and clients with the same id form one cluster.</summary>
    public string ClusterId { get; init; } = "squeeze";

    /// <summary>Orleans' service id.</summary>
    public string ServiceId { get; init; } = "squeeze";

    /// <summary>A worker's silo port, unless <c>squeeze worker --port</c> says otherwise.</summary>
    public int SiloPort { get; init; } = 11111;

    /// <summary>A worker's gateway port (what clients connect to), unless <c>squeeze worker --gateway-port</c> says otherwise.</summary>
    public int GatewayPort { get; init; } = 30000;

    /// <summary>How long a client waits for one work item before it counts the worker as lost.</summary>
    public TimeSpan ItemTimeout { get; init; } = TimeSpan.FromHours(1);

    /// <summary>The most bytes of an item's input or result one message carries, unless the file says otherwise: 32 MiB.</summary>
    public const int DefaultPartBytes = 32 << 20;

    /// <summary>The most bytes of an item's input or result one message carries: larger ones travel in parts
    /// (<see cref="Payload"/>), each well under Orleans' message size limit (100 MB, which closes the connection).</summary>
    public int PartBytes { get; init; } = DefaultPartBytes;

    /// <summary>Reads <paramref name="path"/>.</summary>
    /// <exception cref="Tensors.ModelFormatException">The file is not valid JSON, has an unknown field, a wrong type or a
    /// value out of range.</exception>
    public static ClusterConfig Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Tensors.ModelFormatException(path, $"cannot read the cluster configuration: {e.Message}");
        }
        return Parse(text, path);
    }

    /// <summary>Parses a configuration's JSON; <paramref name="path"/> names it in errors.</summary>
    public static ClusterConfig Parse(string json, string path)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var document = JsonDocument.Parse(json);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new FormatException("the configuration must be a JSON object");
            var config = new ClusterConfig();
            bool gatewaysGiven = false;
            foreach (var p in document.RootElement.EnumerateObject())
            {
                config = p.Name switch
                {
                    "membership" => config with { Membership = String(p) switch
                    {
                        "localhost" => MembershipKind.Localhost,
                        "adonet" => MembershipKind.AdoNet,
                        var other => throw new FormatException($"membership \"{other}\" is not one of localhost, adonet"),
                    } },
                    "primary" => config with { Primary = Endpoint(p.Name, String(p)) },
                    "gateways" => config with { Gateways = GatewayList(p) },
                    "connectionString" => config with { ConnectionString = String(p) },
                    "clusterId" => config with { ClusterId = String(p) },
                    "serviceId" => config with { ServiceId = String(p) },
                    "siloPort" => config with { SiloPort = Port(p) },
                    "gatewayPort" => config with { GatewayPort = Port(p) },
                    "itemTimeoutSeconds" => config with { ItemTimeout = TimeSpan.FromSeconds(Positive(p)) },
                    "partBytes" => config with { PartBytes = PartSize(p) },
                    _ => throw new FormatException($"unknown field \"{p.Name}\""),
                };
                gatewaysGiven |= p.Name == "gateways";
            }
            if (config.Membership == MembershipKind.AdoNet && config.ConnectionString.Length == 0)
                throw new FormatException("adonet membership needs a connectionString");
            if (config.Membership == MembershipKind.Localhost && !gatewaysGiven)
                config = config with { Gateways = [new IPEndPoint(config.Primary.Address, config.GatewayPort)] };
            return config;
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or System.Net.Sockets.SocketException)
        {
            throw new Tensors.ModelFormatException(path, $"bad cluster configuration: {e.Message}");
        }
    }

    private static string String(JsonProperty p) => p.Value.ValueKind == JsonValueKind.String
        ? p.Value.GetString()!
        : throw new FormatException($"\"{p.Name}\" must be a string");

    private static int Port(JsonProperty p) => p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out int port) && port is > 0 and < 65536
        ? port
        : throw new FormatException($"\"{p.Name}\" must be a port number (1 to 65535)");

    private static int PartSize(JsonProperty p) => p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out int bytes) && bytes is >= 1 << 10 and <= 64 << 20
        ? bytes
        : throw new FormatException($"\"{p.Name}\" must be a number of bytes from 1024 to 67108864");

    private static double Positive(JsonProperty p) => p.Value.ValueKind == JsonValueKind.Number && p.Value.GetDouble() is > 0 and var v && double.IsFinite(v)
        ? v
        : throw new FormatException($"\"{p.Name}\" must be a positive number");

    private static IReadOnlyList<IPEndPoint> GatewayList(JsonProperty p)
    {
        if (p.Value.ValueKind != JsonValueKind.Array || p.Value.GetArrayLength() == 0)
            throw new FormatException("\"gateways\" must be a non-empty array of \"host:port\" strings");
        return [.. p.Value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String
            ? Endpoint("gateways", e.GetString()!)
            : throw new FormatException("\"gateways\" must be a non-empty array of \"host:port\" strings"))];
    }

    private static IPEndPoint Endpoint(string field, string text)
    {
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), System.Globalization.NumberStyles.None, null, out int port) || port is <= 0 or >= 65536)
            throw new FormatException($"\"{field}\": \"{text}\" is not host:port");
        string host = text[..colon];
        if (IPAddress.TryParse(host, out var address))
            return new IPEndPoint(address, port);
        if (host == "localhost")
            return new IPEndPoint(IPAddress.Loopback, port);
        var addresses = Dns.GetHostAddresses(host);
        return addresses.Length > 0 ? new IPEndPoint(addresses[0], port) : throw new FormatException($"\"{field}\": host \"{host}\" has no address");
    }
}

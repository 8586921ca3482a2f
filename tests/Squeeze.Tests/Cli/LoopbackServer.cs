using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Squeeze.Tests.Cli;

/// <summary>
/// What the loopback server answers to one path: 404 when <see cref="File"/> is null, else 200 with the file's length as
/// Content-Length and its bytes, of which only the first <see cref="CutAfter"/> are sent when set; after the cut the
/// connection is closed, or held open without sending when <see cref="Stall"/>.
/// </summary>
internal sealed record LoopbackReply(string? File, long? CutAfter = null, bool Stall = false);

/// <summary>
/// A minimal HTTP/1.1 server on 127.0.0.1 and an ephemeral port, for GET requests only, one request per connection.
/// It stops when disposed, and by itself after two minutes so a failed test cannot leave it running.
/// </summary>
internal sealed class LoopbackServer : IDisposable
{
    private readonly TcpListener listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource stop = new(TimeSpan.FromMinutes(2));
    private readonly Func<string, LoopbackReply> route;
    private readonly Task accepting;

    public LoopbackServer(Func<string, LoopbackReply> route)
    {
        this.route = route;
        listener.Start();
        BaseAddress = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}/");
        accepting = AcceptAsync();
    }

    public Uri BaseAddress { get; }

    /// <summary>A port nothing listens on (taken from the system, then released).</summary>
    public static int ClosedPort()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    public void Dispose()
    {
        stop.Cancel();
        listener.Stop();
        try
        {
            accepting.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
        stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await listener.AcceptTcpClientAsync(stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using (client)
        {
            try
            {
                var stream = client.GetStream();
                string path = await ReadRequestPathAsync(stream);
                var reply = route(path);
                if (reply.File is null)
                {
                    await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), stop.Token);
                    return;
                }
                long length = new FileInfo(reply.File).Length;
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"), stop.Token);
                await using var file = File.OpenRead(reply.File);
                long left = reply.CutAfter ?? length;
                var buffer = new byte[1 << 16];
                while (left > 0)
                {
                    int n = await file.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, left)), stop.Token);
                    await stream.WriteAsync(buffer.AsMemory(0, n), stop.Token);
                    left -= n;
                }
                await stream.FlushAsync(stop.Token);
                if (reply.Stall)
                    await Task.Delay(Timeout.Infinite, stop.Token);
            }
            catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
            {
                // The client went away, or the server is stopping.
            }
        }
    }

    /// <summary>Reads the request line and headers, and returns the path of "GET /path HTTP/1.1".</summary>
    private async Task<string> ReadRequestPathAsync(NetworkStream stream)
    {
        var head = new StringBuilder();
        var one = new byte[1];
        while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
        {
            if (await stream.ReadAsync(one, stop.Token) == 0 || head.Length > 16384)
                throw new IOException("bad request");
            head.Append((char)one[0]);
        }
        return head.ToString().Split(' ')[1];
    }
}

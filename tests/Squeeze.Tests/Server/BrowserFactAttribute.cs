namespace Squeeze.Tests.Server;

/// <summary>A test that drives Debian's chromium (<c>apt-get install chromium</c>, about 300 MB installed); skipped, and
/// counted as skipped, on a machine without it.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class BrowserFactAttribute : FactAttribute
{
    /// <summary>Where Debian's package puts the browser.</summary>
    public const string Chromium = "/usr/bin/chromium";

    public BrowserFactAttribute()
    {
        if (!File.Exists(Chromium))
            Skip = $"no {Chromium}: apt-get install chromium to run the comparison page in a browser";
    }
}

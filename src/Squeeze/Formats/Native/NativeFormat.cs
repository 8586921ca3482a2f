namespace Squeeze.Formats.Native;

/// <summary>Names and constants of the Squeeze native format, version 2 (docs/FORMAT.md).</summary>
public static class NativeFormat
{
    /// <summary>The format version this build writes and the newest it reads.</summary>
    public const int Version = 3;

    /// <summary>Value of the <c>format</c> metadata key.</summary>
    public const string FormatName = "squeeze";

    /// <summary>Metadata key holding the format name.</summary>
    public const string FormatKey = "format";

    /// <summary>Metadata key holding the format version as a decimal integer string.</summary>
    public const string VersionKey = "squeeze.version";

    /// <summary>Prefix of the per-tensor scheme keys: <c>squeeze.scheme.NAME</c> holds NAME's scheme JSON.</summary>
    public const string SchemeKeyPrefix = "squeeze.scheme.";

    /// <summary>Suffix of the packed-codes companion tensor.</summary>
    public const string CodesSuffix = ".codes";

    /// <summary>Suffix of the scales companion tensor.</summary>
    public const string ScalesSuffix = ".scales";

    /// <summary>Suffix of the mins companion tensor (asymmetric schemes).</summary>
    public const string MinsSuffix = ".mins";

    /// <summary>The weights file inside a native model directory.</summary>
    public const string WeightsFile = "model.safetensors";

    /// <summary>The Hugging Face-shaped configuration inside a native model directory.</summary>
    public const string ConfigFile = "config.json";
}

using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "dfloat11" scheme (format version 2, docs/FORMAT.md "dfloat11"): a BF16 matrix stored losslessly
/// (<see cref="DFloat11Weight"/>): <c>PREFIX.sign_mantissa</c> U8 [rows, cols] and the exponents as
/// <c>PREFIX.exponent_frequencies</c>, <c>PREFIX.exponent_chunks</c>, <c>PREFIX.exponent_streams</c>
/// (<see cref="RansCompanions"/>). Decoded at load into a BF16 tensor.</summary>
internal sealed class DFloat11NativeScheme : INativeScheme
{
    private const string SignMantissaSuffix = ".sign_mantissa";
    private const string ExponentStem = ".exponent_";

    public static DFloat11NativeScheme Instance { get; } = new();

    public string Name => "dfloat11";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is DFloat11Weight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var coded = (DFloat11Weight)weight;
        var (signMantissa, exponents) = coded.Code(Environment.ProcessorCount);
        sink.Add(prefix + SignMantissaSuffix, SafetensorsDType.U8, [coded.Rows, coded.Columns], signMantissa);
        RansCompanions.Store(sink, prefix + ExponentStem, exponents);
        return new JsonObject { ["coder"] = RansCompanions.Coder, ["chunk_rows"] = coded.ChunkRows };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        json.String("coder", RansCompanions.Coder);
        int chunkRows = json.Int("chunk_rows", 1, int.MaxValue / columns);
        var signMantissa = source.Companion<byte>(prefix + SignMantissaSuffix, SafetensorsDType.U8, [rows, columns]);
        var exponents = RansCompanions.Read(source, prefix + ExponentStem, 256, (long)rows * columns, chunkRows * columns);
        try
        {
            return DFloat11Weight.Decode(name, rows, columns, signMantissa.Span, exponents, chunkRows, Environment.ProcessorCount);
        }
        catch (InvalidDataException e)
        {
            throw source.Fail(prefix + ExponentStem + "streams", e.Message);
        }
    }
}

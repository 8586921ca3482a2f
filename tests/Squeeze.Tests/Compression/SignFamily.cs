using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Squeeze.Compression.Representations;
using Squeeze.Compression;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Tuning;
using Squeeze.Weights;

namespace Squeeze.Tests.Compression;

// A representation defined outside the library, through public types only and one registration call
// (NativeRepresentation.Register(SignFamily.Instance)): one sign bit per weight times an f16 scale per row.

/// <summary>W[r, c] = ±scale[r]: bit c of row r set for a negative weight (bit c % 8 of byte c / 8), f16 row scales.</summary>
public sealed class SignWeight : LinearWeight
{
    private readonly byte[] signs;   // [rows, RowBytes]
    private readonly ushort[] scales; // [rows] f16

    public SignWeight(string name, int rows, int columns, byte[] signs, ushort[] scales)
        : base(name, rows, columns)
    {
        ArgumentNullException.ThrowIfNull(signs);
        ArgumentNullException.ThrowIfNull(scales);
        if (signs.Length != (long)rows * RowBytes || scales.Length != rows)
            throw new ArgumentException($"{name}: {signs.Length} sign bytes and {scales.Length} scales for [{rows}, {columns}]");
        this.signs = signs;
        this.scales = scales;
    }

    public int RowBytes => (Columns + 7) / 8;

    public ReadOnlySpan<byte> Signs => signs;

    public ReadOnlySpan<ushort> Scales => scales;

    public override long StoredBytes => signs.Length + 2L * scales.Length;

    public override string Scheme => "sign";

    /// <summary>−1 or +1: the sign of W[row, column].</summary>
    public float Sign(int row, int column) => ((signs[row * RowBytes + (column >> 3)] >> (column & 7)) & 1) != 0 ? -1f : 1f;

    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        float scale = (float)BitConverter.UInt16BitsToHalf(scales[row]);
        for (int c = 0; c < Columns; c++)
            destination[c] = Sign(row, c) * scale;
    }

    /// <summary>The signs of <paramref name="values"/> ([rows, columns]) and per row the f16 of mean |w| (rms: √mean w²).</summary>
    public static SignWeight Encode(string name, ReadOnlySpan<float> values, int rows, int columns, bool rms)
    {
        int rowBytes = (columns + 7) / 8;
        var signs = new byte[rows * rowBytes];
        var scales = new ushort[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = values.Slice(r * columns, columns);
            double sum = 0;
            for (int c = 0; c < columns; c++)
            {
                sum += rms ? (double)row[c] * row[c] : Math.Abs(row[c]);
                if (row[c] < 0)
                    signs[r * rowBytes + (c >> 3)] |= (byte)(1 << (c & 7));
            }
            scales[r] = BitConverter.HalfToUInt16Bits((Half)(rms ? Math.Sqrt(sum / columns) : sum / columns));
        }
        return new SignWeight(name, rows, columns, signs, scales);
    }
}

/// <summary>The native scheme <c>test-sign</c>: <c>PREFIX.signs</c> U8 [rows, ceil(columns / 8)], <c>PREFIX.scales</c> F16 [rows].</summary>
public sealed class SignNativeScheme : INativeScheme
{
    public static SignNativeScheme Instance { get; } = new();

    public string Name => "test-sign";

    public int Version => NativeFormat.Version;

    public bool CanStore(LinearWeight weight) => weight is SignWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var s = (SignWeight)weight;
        sink.Add(prefix + ".signs", SafetensorsDType.U8, [s.Rows, s.RowBytes], s.Signs.ToArray());
        sink.Add(prefix + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [s.Rows], MemoryMarshal.AsBytes(s.Scales).ToArray());
        return new JsonObject { ["scale"] = "f16" };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        json.String("scale", "f16");
        var signs = source.Companion<byte>(prefix + ".signs", SafetensorsDType.U8, [rows, (columns + 7) / 8]).ToArray();
        var scales = source.Companion<ushort>(prefix + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [rows]).ToArray();
        return new SignWeight(name, rows, columns, signs, scales);
    }
}

/// <summary>Spec <c>sign:mean</c> or <c>sign:rms</c>: the row scale is the mean |w| or the root mean square.</summary>
public sealed record SignRepresentation(bool Rms) : NativeRepresentation
{
    public override string Spec => Rms ? "sign:rms" : "sign:mean";

    public override bool Fits(int rows, int columns) => true;

    // One bit per weight and an f16 scale per row, as SignWeight stores them.
    public override long StoredBytesBound(int rows, int columns) => (long)rows * ((columns + 7) / 8 + 2);

    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var weight = SignWeight.Encode(name, encoder.Values(name), encoder.Rows(name), encoder.Columns(name), Rms);
        return new NativeEncoded(weight, "sign", encoder.RelativeError(name, weight));
    }
}

/// <summary>The row scales tuned with the signs fixed: d loss / d scale[r] = Σ_c d loss / d W[r, c] · sign[r, c].</summary>
public sealed class TunableSigns : TunableWeight
{
    private readonly SignWeight weight;

    public TunableSigns(SignWeight weight) : base(weight)
    {
        this.weight = weight;
        Values = ToF32(weight.Scales);
        Units = [.. Values.Select(Math.Abs)];
    }

    public override float[] Values { get; }

    public override float[] Units { get; }

    public override void Decode(Span<float> dense)
    {
        for (int r = 0; r < weight.Rows; r++)
        {
            float scale = RoundToF16(Values[r]);
            for (int c = 0; c < weight.Columns; c++)
                dense[r * weight.Columns + c] = weight.Sign(r, c) * scale;
        }
    }

    public override void Backward(ReadOnlySpan<float> denseGradient, Span<float> gradient)
    {
        for (int r = 0; r < weight.Rows; r++)
        {
            double sum = 0;
            for (int c = 0; c < weight.Columns; c++)
                sum += denseGradient[r * weight.Columns + c] * weight.Sign(r, c);
            gradient[r] += (float)sum;
        }
    }

    public override LinearWeight Build() => new SignWeight(weight.Name, weight.Rows, weight.Columns, weight.Signs.ToArray(), ToF16(Values));
}

/// <summary>The family: keyword <c>sign</c>, its scheme and its tunable row scales; no default levels.</summary>
public sealed class SignFamily : RepresentationFamily
{
    public static SignFamily Instance { get; } = new();

    public override IReadOnlyList<string> Keywords => ["sign"];

    public override string Syntax => "sign:mean|rms";

    public override string Help => "one sign bit per weight times an f16 scale per row (mean |w| or root mean square)";

    public override IReadOnlyList<INativeScheme> Schemes => [SignNativeScheme.Instance];

    public override IReadOnlyList<TunableFactory> Tunables { get; } = [TunableFactory.For<SignWeight>(w => new TunableSigns(w))];

    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 2);
        return spec.Parts[1] switch
        {
            "mean" => new SignRepresentation(false),
            "rms" => new SignRepresentation(true),
            _ => throw spec.Fail("the scale is mean or rms"),
        };
    }
}

using Squeeze.Calibration;
using Squeeze.Runtime;

namespace Squeeze.Cluster;

/// <summary>The little binary encoding the kinds' payloads (<see cref="Payload"/>) use: arrays as a length then the
/// values, little-endian. An array of values may be larger than 2 GB as bytes (a 70B model's Gram matrix of doubles):
/// its bytes go to and from the stream a slice at a time.</summary>
internal static class Wire
{
    public static void Doubles(this BinaryWriter w, ReadOnlySpan<double> values)
    {
        w.Write(values.Length);
        Write(w, values);
    }

    public static double[] Doubles(this BinaryReader r)
    {
        var values = new double[Length(r, sizeof(double))];
        Read(r, values.AsSpan());
        return values;
    }

    public static void Floats(this BinaryWriter w, ReadOnlySpan<float> values)
    {
        w.Write(values.Length);
        Write(w, values);
    }

    public static float[] Floats(this BinaryReader r)
    {
        var values = new float[Length(r, sizeof(float))];
        Read(r, values.AsSpan());
        return values;
    }

    public static void Ints(this BinaryWriter w, ReadOnlySpan<int> values)
    {
        w.Write(values.Length);
        Write(w, values);
    }

    public static int[] Ints(this BinaryReader r)
    {
        var values = new int[Length(r, sizeof(int))];
        Read(r, values.AsSpan());
        return values;
    }

    public static void Bytes(this BinaryWriter w, ReadOnlySpan<byte> values)
    {
        w.Write(values.Length);
        w.Write(values);
    }

    public static byte[] Bytes(this BinaryReader r)
    {
        var values = new byte[Length(r, 1)];
        r.BaseStream.ReadExactly(values);
        return values;
    }

    public static void Longs(this BinaryWriter w, ReadOnlySpan<long> values)
    {
        w.Write(values.Length);
        foreach (long v in values)
            w.Write(v);
    }

    public static long[] Longs(this BinaryReader r)
    {
        var values = new long[Length(r, sizeof(long))];
        for (int i = 0; i < values.Length; i++)
            values[i] = r.ReadInt64();
        return values;
    }

    /// <summary>A layer input's statistics: its layer and kind, each routed expert's sums (null where no token reached
    /// it), then the input's own sums (token count, Σx², Σ|x|, max |x|, the Gram matrix when collected).</summary>
    public static void Statistics(this BinaryWriter w, ActivationStatistics s)
    {
        w.Write(s.Layer);
        w.Write((int)s.Kind);
        w.Write(s.Experts.Count);
        foreach (var e in s.Experts)
        {
            w.Write(e is not null);
            if (e is not null)
                Sums(w, e);
        }
        Sums(w, s);
    }

    public static ActivationStatistics Statistics(this BinaryReader r)
    {
        var (layer, kind) = (r.ReadInt32(), (LinearInput)r.ReadInt32());
        ActivationStatistics ReadSums(IReadOnlyList<ActivationStatistics?>? experts = null)
        {
            var (tokens, sumSquares, sumAbs, maxAbs) = (r.ReadInt64(), r.Doubles(), r.Doubles(), r.Floats());
            return new ActivationStatistics(layer, kind, tokens, sumSquares, sumAbs, maxAbs, r.ReadBoolean() ? r.Doubles() : null, experts);
        }
        var experts = new ActivationStatistics?[Length(r, 1)];
        for (int e = 0; e < experts.Length; e++)
            experts[e] = r.ReadBoolean() ? ReadSums() : null;
        return ReadSums(experts);
    }

    private static void Sums(BinaryWriter w, ActivationStatistics s)
    {
        w.Write(s.TokenCount);
        w.Doubles(s.SumSquares);
        w.Doubles(s.SumAbs);
        w.Floats(s.MaxAbs);
        w.Write(s.Gram is not null);
        if (s.Gram is not null)
            w.Doubles(s.Gram);
    }

    // Values a slice turns into bytes at most: 1 MiB, well inside a span's int length.
    internal static int Slice<T>() where T : unmanaged => (1 << 20) / System.Runtime.CompilerServices.Unsafe.SizeOf<T>();

    private static void Write<T>(BinaryWriter w, ReadOnlySpan<T> values) where T : unmanaged
    {
        for (int start = 0; start < values.Length; start += Slice<T>())
            w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.Slice(start, Math.Min(Slice<T>(), values.Length - start))));
    }

    private static void Read<T>(BinaryReader r, Span<T> values) where T : unmanaged
    {
        for (int start = 0; start < values.Length; start += Slice<T>())
            r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.Slice(start, Math.Min(Slice<T>(), values.Length - start))));
    }

    private static int Length(BinaryReader r, int size)
    {
        int n = r.ReadInt32();
        return n >= 0 && (long)n * size <= r.BaseStream.Length - r.BaseStream.Position ? n : throw new InvalidDataException($"an array of {n} values does not fit the payload");
    }
}

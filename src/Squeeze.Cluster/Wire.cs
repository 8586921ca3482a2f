namespace Squeeze.Cluster;

/// <summary>The little binary encoding the kinds' payloads use: arrays as a length then the values, little-endian.</summary>
internal static class Wire
{
    public static byte[] Write(Action<BinaryWriter> write)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream))
            write(writer);
        return stream.ToArray();
    }

    public static T Read<T>(byte[] payload, Func<BinaryReader, T> read)
    {
        using var reader = new BinaryReader(new MemoryStream(payload, writable: false));
        var value = read(reader);
        return reader.BaseStream.Position == payload.Length ? value : throw new InvalidDataException($"{payload.Length - reader.BaseStream.Position} bytes left over after a payload");
    }

    public static void Doubles(this BinaryWriter w, ReadOnlySpan<double> values)
    {
        w.Write(values.Length);
        w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
    }

    public static double[] Doubles(this BinaryReader r)
    {
        var values = new double[Length(r, sizeof(double))];
        r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    public static void Floats(this BinaryWriter w, ReadOnlySpan<float> values)
    {
        w.Write(values.Length);
        w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
    }

    public static float[] Floats(this BinaryReader r)
    {
        var values = new float[Length(r, sizeof(float))];
        r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    public static void Ints(this BinaryWriter w, ReadOnlySpan<int> values)
    {
        w.Write(values.Length);
        w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
    }

    public static int[] Ints(this BinaryReader r)
    {
        var values = new int[Length(r, sizeof(int))];
        r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
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

    private static int Length(BinaryReader r, int size)
    {
        int n = r.ReadInt32();
        return n >= 0 && (long)n * size <= r.BaseStream.Length - r.BaseStream.Position ? n : throw new InvalidDataException($"an array of {n} values does not fit the payload");
    }
}

using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// The "uniform" scheme of the Squeeze native format (docs/FORMAT.md): each row of a weight W [rows, cols] is cut into
/// groups of <see cref="Group"/> consecutive values; each group has an f16 scale (and, when asymmetric, an f16 min), and
/// each value a <see cref="Bits"/>-bit code q. Asymmetric: <c>w = scale * q + min</c>; symmetric:
/// <c>w = scale * (q - 2^(bits-1))</c>. Codes are packed least-significant bit first (see <see cref="UniformCodec"/>).
/// </summary>
public sealed record UniformScheme
{
    /// <summary>The scheme's name in the metadata JSON.</summary>
    public const string Name = "uniform";

    /// <summary>Creates a scheme; throws when <paramref name="bits"/> is outside 2..8 or <paramref name="group"/> is not positive.</summary>
    public UniformScheme(int bits, int group, bool symmetric)
    {
        if (bits is < 2 or > 8)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "uniform codes have 2 to 8 bits");
        if (group < 1)
            throw new ArgumentOutOfRangeException(nameof(group), group, "the group size must be positive");
        Bits = bits;
        Group = group;
        Symmetric = symmetric;
    }

    /// <summary>Bits per code, 2..8.</summary>
    public int Bits { get; }

    /// <summary>Values per group; must divide the row length of every tensor the scheme is applied to.</summary>
    public int Group { get; }

    /// <summary>Symmetric (scale only, zero point 2^(bits-1)) rather than asymmetric (scale and min).</summary>
    public bool Symmetric { get; }

    /// <summary>Largest code, 2^bits - 1.</summary>
    public int MaxCode => (1 << Bits) - 1;

    /// <summary>Bytes of one packed row of <paramref name="columns"/> codes: ceil(columns * bits / 8).</summary>
    public long RowBytes(long columns) => (columns * Bits + 7) / 8;

    /// <summary>Bytes a [<paramref name="rows"/>, <paramref name="columns"/>] weight takes in this scheme: its packed codes
    /// and an f16 scale (and min, unless symmetric) per group.</summary>
    public long StoredBytes(long rows, long columns) => rows * (RowBytes(columns) + 2L * (columns / Group) * (Symmetric ? 1 : 2));

    /// <summary>Checks that the scheme can store a row of <paramref name="columns"/> values.</summary>
    /// <exception cref="ArgumentException">The group does not divide the row.</exception>
    public void CheckColumns(long columns)
    {
        if (columns < 1 || columns % Group != 0)
            throw new ArgumentException($"group size {Group} does not divide the row length {columns}", nameof(columns));
    }

    /// <summary>The compact metadata JSON: <c>{"scheme":"uniform","bits":3,"group":96,"symmetric":false,"scale":"f16"}</c>.</summary>
    public string ToJson()
        => $"{{\"scheme\":\"{Name}\",\"bits\":{Bits},\"group\":{Group},\"symmetric\":{(Symmetric ? "true" : "false")},\"scale\":\"f16\"}}";

    /// <summary>A short label, e.g. <c>uniform b3 g96 asym</c>.</summary>
    public override string ToString() => $"{Name} b{Bits} g{Group} {(Symmetric ? "sym" : "asym")}";
}

/// <summary>
/// Scalar reference encode, pack, unpack and decode for <see cref="UniformScheme"/>. Arguments run inputs, then
/// scalars, then destinations.
/// </summary>
public static class UniformCodec
{
    /// <summary>Shrink factors tried for each end of a group's range by the importance-weighted search; 1 (plain
    /// min/max or absmax) is always a candidate, so the search is never worse than no search.</summary>
    public static ReadOnlySpan<float> ShrinkFactors => [1.00f, 0.95f, 0.90f, 0.85f, 0.80f, 0.75f, 0.70f, 0.60f];

    /// <summary>
    /// Encodes one row. Per group: asymmetric takes [min, max] (symmetric: absmax); with <paramref name="search"/>, both
    /// ends (symmetric: the absmax) are shrunk toward the middle by every pair of <see cref="ShrinkFactors"/> and the
    /// candidate with the least importance-weighted squared error is kept. Scale and min are rounded to f16 first and
    /// the codes are chosen against the rounded values: <c>q = clamp(round_half_even((w - min) / scale), 0, 2^bits-1)</c>
    /// (symmetric: <c>q = clamp(round(w / scale) + 2^(bits-1), 0, 2^bits-1)</c>); a zero scale gives code 0 (symmetric: the zero point).
    /// </summary>
    /// <param name="row">The values, length a multiple of the group.</param>
    /// <param name="importance">Per-value weights ≥ 0 for the search's error (empty: all 1).</param>
    /// <param name="scheme">Bits, group, symmetry.</param>
    /// <param name="search">Search shrink factors instead of taking the plain range.</param>
    /// <param name="codes">One code per value, each in 0..2^bits-1.</param>
    /// <param name="scales">One f16 scale per group.</param>
    /// <param name="mins">One f16 min per group (asymmetric only; may be empty when symmetric).</param>
    /// <exception cref="ArgumentException">A value is NaN or infinite, a range overflows f16, or a length is wrong.</exception>
    public static void EncodeRow(ReadOnlySpan<float> row, ReadOnlySpan<float> importance, UniformScheme scheme, bool search,
        Span<byte> codes, Span<ushort> scales, Span<ushort> mins)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        scheme.CheckColumns(row.Length);
        int groups = row.Length / scheme.Group;
        if (importance.Length != 0 && importance.Length != row.Length)
            throw new ArgumentException($"importance has {importance.Length} values for a row of {row.Length}", nameof(importance));
        if (codes.Length != row.Length)
            throw new ArgumentException($"codes has {codes.Length} entries for a row of {row.Length}", nameof(codes));
        if (scales.Length != groups)
            throw new ArgumentException($"scales has {scales.Length} entries for {groups} groups", nameof(scales));
        if (!scheme.Symmetric && mins.Length != groups)
            throw new ArgumentException($"mins has {mins.Length} entries for {groups} groups", nameof(mins));
        for (int i = 0; i < row.Length; i++)
        {
            if (!float.IsFinite(row[i]))
                throw new ArgumentException($"value {i} of the row is {row[i]}; only finite values can be quantized", nameof(row));
        }
        for (int i = 0; i < importance.Length; i++)
        {
            if (!(importance[i] >= 0) || !float.IsFinite(importance[i]))
                throw new ArgumentException($"importance {i} is {importance[i]}; importances must be finite and >= 0", nameof(importance));
        }

        int g = scheme.Group;
        Span<byte> trial = g <= 1024 ? stackalloc byte[g] : new byte[g];
        for (int k = 0; k < groups; k++)
        {
            var x = row.Slice(k * g, g);
            var w = importance.IsEmpty ? default : importance.Slice(k * g, g);
            var q = codes.Slice(k * g, g);
            float lo = float.MaxValue, hi = float.MinValue;
            foreach (float v in x)
            {
                lo = MathF.Min(lo, v);
                hi = MathF.Max(hi, v);
            }
            var factors = search ? ShrinkFactors : ShrinkFactors[..1];
            double best = double.PositiveInfinity;
            ushort bestScale = 0, bestMin = 0;
            if (scheme.Symmetric)
            {
                float absmax = MathF.Max(MathF.Abs(lo), MathF.Abs(hi));
                foreach (float f in factors)
                {
                    ushort s = ToHalf(absmax * f / ((1 << (scheme.Bits - 1)) - 1), nameof(row));
                    double err = Quantize(x, w, scheme, s, 0, trial);
                    if (err < best)
                    {
                        best = err;
                        bestScale = s;
                        trial.CopyTo(q);
                    }
                }
            }
            else
            {
                float mid = lo + (hi - lo) / 2;
                foreach (float fl in factors)
                {
                    foreach (float fh in factors)
                    {
                        float l = mid - (mid - lo) * fl, h = mid + (hi - mid) * fh;
                        ushort m = ToHalf(l, nameof(row));
                        // Scale from the rounded min, so the top code still reaches h.
                        ushort s = ToHalf(MathF.Max(0, h - HalfConversions.F16ToF32(m)) / scheme.MaxCode, nameof(row));
                        double err = Quantize(x, w, scheme, s, m, trial);
                        if (err < best)
                        {
                            best = err;
                            bestScale = s;
                            bestMin = m;
                            trial.CopyTo(q);
                        }
                    }
                }
                mins[k] = bestMin;
            }
            scales[k] = bestScale;
        }
    }

    /// <summary>Chooses codes for one group against f16 scale/min and returns the weighted squared error.</summary>
    private static double Quantize(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, UniformScheme scheme, ushort scaleBits, ushort minBits, Span<byte> codes)
    {
        float scale = HalfConversions.F16ToF32(scaleBits);
        float min = HalfConversions.F16ToF32(minBits);
        int zero = 1 << (scheme.Bits - 1);
        double err = 0;
        for (int i = 0; i < x.Length; i++)
        {
            int code;
            if (scale == 0)
                code = scheme.Symmetric ? zero : 0;
            else if (scheme.Symmetric)
                code = Math.Clamp((int)MathF.Round(x[i] / scale) + zero, 0, scheme.MaxCode);
            else
                code = Math.Clamp((int)MathF.Round((x[i] - min) / scale), 0, scheme.MaxCode);
            codes[i] = (byte)code;
            double d = x[i] - DecodeValue(code, scale, min, zero, scheme.Symmetric);
            err += (importance.IsEmpty ? 1.0 : importance[i]) * d * d;
        }
        return err;
    }

    private static ushort ToHalf(float value, string paramName)
    {
        ushort h = HalfConversions.F32ToF16(value);
        return float.IsFinite(HalfConversions.F16ToF32(h))
            ? h
            : throw new ArgumentException($"a group's range reaches {value}, beyond what an f16 scale or min can hold", paramName);
    }

    /// <summary>The value of one code: asymmetric <c>scale * q + min</c>, symmetric <c>scale * (q - zero)</c>, in binary32.</summary>
    internal static float DecodeValue(int code, float scale, float min, int zero, bool symmetric)
        => symmetric ? scale * (code - zero) : scale * code + min;

    /// <summary>
    /// Packs codes of <paramref name="bits"/> bits least-significant bit first: code i occupies bits
    /// [i*bits, (i+1)*bits) of the little-endian bit stream, where stream bit k is bit (k mod 8) of byte k/8. Unused
    /// high bits of the last byte are zero. <c>destination[i] = stream byte i</c>.
    /// </summary>
    /// <exception cref="ArgumentException">A code does not fit in <paramref name="bits"/> bits, or a length is wrong.</exception>
    public static void Pack(ReadOnlySpan<byte> codes, int bits, Span<byte> destination)
    {
        if (bits is < 1 or > 8)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "codes have 1 to 8 bits");
        long bytes = ((long)codes.Length * bits + 7) / 8;
        if (destination.Length != bytes)
            throw new ArgumentException($"{codes.Length} codes of {bits} bits need {bytes} bytes, destination has {destination.Length}", nameof(destination));
        destination.Clear();
        int limit = 1 << bits;
        long bit = 0;
        for (int i = 0; i < codes.Length; i++, bit += bits)
        {
            int c = codes[i];
            if (c >= limit)
                throw new ArgumentException($"code {i} is {c}, which does not fit in {bits} bits", nameof(codes));
            int at = (int)(bit >> 3), shift = (int)(bit & 7);
            int v = c << shift; // at most 15 bits wide
            destination[at] |= (byte)v;
            if (shift + bits > 8)
                destination[at + 1] |= (byte)(v >> 8);
        }
    }

    /// <summary>Unpacks <c>destination.Length</c> codes of <paramref name="bits"/> bits packed by <see cref="Pack"/>.</summary>
    public static void Unpack(ReadOnlySpan<byte> packed, int bits, Span<byte> destination)
    {
        if (bits is < 1 or > 8)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "codes have 1 to 8 bits");
        long bytes = ((long)destination.Length * bits + 7) / 8;
        if (packed.Length < bytes)
            throw new ArgumentException($"{destination.Length} codes of {bits} bits need {bytes} bytes, packed has {packed.Length}", nameof(packed));
        int mask = (1 << bits) - 1;
        long bit = 0;
        for (int i = 0; i < destination.Length; i++, bit += bits)
        {
            int at = (int)(bit >> 3), shift = (int)(bit & 7);
            int v = packed[at];
            if (shift + bits > 8)
                v |= packed[at + 1] << 8;
            destination[i] = (byte)((v >> shift) & mask);
        }
    }

    /// <summary>Decodes one packed row: <c>destination[i] = scale[i/group] * q[i] + min[i/group]</c> (symmetric:
    /// <c>scale[i/group] * (q[i] - 2^(bits-1))</c>), computed in binary32 from the f16 scale and min.</summary>
    /// <param name="packed">The row's packed codes, <see cref="UniformScheme.RowBytes"/> bytes.</param>
    /// <param name="scales">The row's f16 scales, one per group.</param>
    /// <param name="mins">The row's f16 mins (ignored when symmetric).</param>
    /// <param name="scheme">Bits, group, symmetry.</param>
    /// <param name="destination">The row, length a multiple of the group.</param>
    public static void DecodeRow(ReadOnlySpan<byte> packed, ReadOnlySpan<ushort> scales, ReadOnlySpan<ushort> mins, UniformScheme scheme, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        scheme.CheckColumns(destination.Length);
        int groups = destination.Length / scheme.Group;
        if (packed.Length != scheme.RowBytes(destination.Length))
            throw new ArgumentException($"packed has {packed.Length} bytes, a row of {destination.Length} codes needs {scheme.RowBytes(destination.Length)}", nameof(packed));
        if (scales.Length != groups || (!scheme.Symmetric && mins.Length != groups))
            throw new ArgumentException($"a row of {groups} groups needs {groups} scales{(scheme.Symmetric ? "" : " and mins")}", nameof(scales));
        int g = scheme.Group;
        Span<byte> codes = destination.Length <= 4096 ? stackalloc byte[destination.Length] : new byte[destination.Length];
        Unpack(packed, scheme.Bits, codes);
        int zero = 1 << (scheme.Bits - 1);
        for (int k = 0; k < groups; k++)
        {
            float scale = HalfConversions.F16ToF32(scales[k]);
            float min = scheme.Symmetric ? 0 : HalfConversions.F16ToF32(mins[k]);
            var q = codes.Slice(k * g, g);
            var dst = destination.Slice(k * g, g);
            for (int i = 0; i < g; i++)
                dst[i] = DecodeValue(q[i], scale, min, zero, scheme.Symmetric);
        }
    }
}

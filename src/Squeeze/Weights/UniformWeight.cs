using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// Uniform quantization at any bit width 2..8 and any group size dividing the row (the native format's "uniform"
/// scheme, docs/FORMAT.md): per group an f16 scale (and f16 min when asymmetric), per value a bit-packed code.
/// </summary>
public sealed class UniformWeight : LinearWeight
{
    private readonly ReadOnlyMemory<byte> codes;   // [rows, RowBytes(columns)]
    private readonly ReadOnlyMemory<ushort> scales; // [rows, groups] f16
    private readonly ReadOnlyMemory<ushort> mins;   // [rows, groups] f16, empty when symmetric
    private readonly int rowBytes, groups;

    /// <summary>A weight over <paramref name="codes"/>, <paramref name="scales"/> and <paramref name="mins"/> as given
    /// (arrays, or a native file's companions over its mapping: held, not copied).</summary>
    /// <exception cref="ArgumentException">The group does not divide the row, or an array has the wrong length.</exception>
    public UniformWeight(string name, int rows, int columns, UniformScheme scheme, ReadOnlyMemory<byte> codes, ReadOnlyMemory<ushort> scales, ReadOnlyMemory<ushort> mins)
        : base(name, rows, columns)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        scheme.CheckColumns(columns);
        UniformScheme = scheme;
        rowBytes = (int)scheme.RowBytes(columns);
        groups = columns / scheme.Group;
        if (codes.Length != (long)rows * rowBytes)
            throw new ArgumentException($"{name}: {codes.Length} code bytes, [{rows}, {columns}] in {scheme} needs {(long)rows * rowBytes}", nameof(codes));
        if (scales.Length != (long)rows * groups || mins.Length != (scheme.Symmetric ? 0 : (long)rows * groups))
            throw new ArgumentException($"{name}: [{rows}, {columns}] in {scheme} needs {(long)rows * groups} scales{(scheme.Symmetric ? "" : " and as many mins")}", nameof(scales));
        this.codes = codes;
        this.scales = scales;
        this.mins = mins;
    }

    /// <summary>Code width, group size and symmetry of the codes.</summary>
    public UniformScheme UniformScheme { get; }

    /// <summary>Packed codes, [Rows, ceil(Columns · bits / 8)].</summary>
    public ReadOnlySpan<byte> Codes => codes.Span;

    /// <summary><see cref="Codes"/> as memory the native writer references instead of copying.</summary>
    internal ReadOnlyMemory<byte> CodesMemory => codes;

    /// <summary>f16 scales, [Rows, Columns / group].</summary>
    public ReadOnlySpan<ushort> Scales => scales.Span;

    /// <summary>f16 mins, [Rows, Columns / group]; empty when symmetric.</summary>
    public ReadOnlySpan<ushort> Mins => mins.Span;

    /// <inheritdoc/>
    public override long StoredBytes => UniformScheme.StoredBytes(Rows, Columns);

    /// <inheritdoc/>
    public override string Scheme => UniformScheme.ToString();

    /// <summary>For fewer than <see cref="UniformProduct.MaxTokens"/> tokens outside the deterministic mode, when the row is
    /// whole blocks of 32 and the group whole runs of 8 codes, the fused product (<see cref="UniformProduct"/>: codes unpacked into integer dot products with activations quantized
    /// per block of 32 as the Q8_0 product does); otherwise, and always in the deterministic mode, the decoded product.</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(context);
        CheckProduct(x, tokens, y);
        if (UniformProduct.Runs(this, tokens, context))
            UniformProduct.Multiply(this, x, tokens, context, y);
        else
            DecodedProduct.Multiply(this, x, tokens, context, y);
    }

    /// <summary>Decodes a row as <see cref="UniformCodec.DecodeRow"/> does (the same bits: <c>s · q + m</c>, or
    /// <c>s · (q − zero)</c>, each a binary32 product and sum). Eight codes take exactly <c>bits</c> bytes, so when the
    /// group is a multiple of 8 each run of eight is read with one 64-bit load; otherwise through a bit buffer.</summary>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        var packed = codes.Span.Slice(row * rowBytes, rowBytes);
        var rowScales = scales.Span.Slice(row * groups, groups);
        var rowMins = UniformScheme.Symmetric ? default : mins.Span.Slice(row * groups, groups);
        if (UniformScheme.Group % 8 == 0)
            DecodeEights(packed, rowScales, rowMins, destination, VectorDecode);
        else
            DecodeBits(packed, rowScales, rowMins, destination);
    }

    /// <summary>Runs of eight codes are spread to bytes with BMI2 <c>pdep</c> and turned into floats eight at a time with
    /// AVX2 (the same operations, so the same bits, as the scalar loop).</summary>
    internal static bool VectorDecode { get; } = Bmi2.X64.IsSupported && Avx2.IsSupported;

    /// <summary><see cref="DecodeRow(int, Span{float})"/> with the vector path on or off (for the tests).</summary>
    internal void DecodeRow(int row, Span<float> destination, bool vector)
    {
        CheckRow(row, destination);
        if (UniformScheme.Group % 8 != 0)
            throw new InvalidOperationException("only groups of a multiple of 8 have the vector path");
        DecodeEights(codes.Span.Slice(row * rowBytes, rowBytes), scales.Span.Slice(row * groups, groups),
            UniformScheme.Symmetric ? default : mins.Span.Slice(row * groups, groups), destination, vector && VectorDecode);
    }

    private void DecodeEights(ReadOnlySpan<byte> packed, ReadOnlySpan<ushort> rowScales, ReadOnlySpan<ushort> rowMins, Span<float> destination, bool vector)
    {
        int bits = UniformScheme.Bits, group = UniformScheme.Group, zero = 1 << (bits - 1);
        ulong mask = (1ul << bits) - 1;
        ulong spread = mask * 0x0101010101010101ul; // the low `bits` bits of every byte
        bool symmetric = UniformScheme.Symmetric;
        Span<byte> tail = stackalloc byte[8];
        for (int k = 0, c = 0; k < groups; k++)
        {
            float scale = HalfConversions.F16ToF32(rowScales[k]);
            float min = symmetric ? 0 : HalfConversions.F16ToF32(rowMins[k]);
            var scales8 = Vector256.Create(scale);
            var mins8 = Vector256.Create(min);
            var zeros8 = Vector256.Create(zero);
            for (int end = c + group; c < end; c += 8)
            {
                int at = c / 8 * bits;
                ulong w;
                if (at + 8 <= packed.Length)
                {
                    w = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(packed[at..]);
                }
                else
                {
                    tail.Clear();
                    packed[at..].CopyTo(tail);
                    w = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(tail);
                }
                var d = destination.Slice(c, 8);
                if (vector)
                {
                    var q = Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(Bmi2.X64.ParallelBitDeposit(w, spread)).AsByte());
                    var values = symmetric
                        ? Vector256.Multiply(scales8, Vector256.ConvertToSingle(q - zeros8))
                        : Vector256.Add(Vector256.Multiply(scales8, Vector256.ConvertToSingle(q)), mins8);
                    values.CopyTo(d);
                }
                else if (symmetric)
                {
                    for (int i = 0; i < 8; i++)
                        d[i] = scale * ((int)((w >> (i * bits)) & mask) - zero);
                }
                else
                {
                    for (int i = 0; i < 8; i++)
                        d[i] = scale * (int)((w >> (i * bits)) & mask) + min;
                }
            }
        }
    }

    private void DecodeBits(ReadOnlySpan<byte> packed, ReadOnlySpan<ushort> rowScales, ReadOnlySpan<ushort> rowMins, Span<float> destination)
    {
        int bits = UniformScheme.Bits, group = UniformScheme.Group, zero = 1 << (bits - 1);
        uint mask = (1u << bits) - 1;
        bool symmetric = UniformScheme.Symmetric;
        ulong buffer = 0;
        int available = 0, next = 0, c = 0;
        for (int k = 0; k < groups; k++)
        {
            float scale = HalfConversions.F16ToF32(rowScales[k]);
            float min = symmetric ? 0 : HalfConversions.F16ToF32(rowMins[k]);
            for (int end = c + group; c < end; c++)
            {
                if (available < bits)
                {
                    while (available <= 56 && next < packed.Length)
                    {
                        buffer |= (ulong)packed[next++] << available;
                        available += 8;
                    }
                }
                int q = (int)(buffer & mask);
                buffer >>= bits;
                available -= bits;
                destination[c] = symmetric ? scale * (q - zero) : scale * q + min;
            }
        }
    }

    /// <summary>
    /// Encodes <paramref name="values"/> [rows, columns] row by row with <see cref="UniformCodec.EncodeRow"/>: with
    /// <paramref name="importance"/> (per column, ≥ 0) the importance-weighted range search, else plain min/max rounding.
    /// Deterministic.
    /// </summary>
    /// <exception cref="ArgumentException">A NaN or infinity, a group that does not divide the row, or a wrong length.</exception>
    public static UniformWeight Encode(string name, ReadOnlySpan<float> values, int rows, int columns, UniformScheme scheme, ReadOnlySpan<float> importance = default)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        scheme.CheckColumns(columns);
        if (values.Length != (long)rows * columns)
            throw new ArgumentException($"{name}: {values.Length} values are not [{rows}, {columns}]", nameof(values));
        if (!importance.IsEmpty && importance.Length != columns)
            throw new ArgumentException($"{name}: importance has {importance.Length} values but rows have {columns}", nameof(importance));
        int groups = columns / scheme.Group;
        int rowBytes = (int)scheme.RowBytes(columns);
        var codes = new byte[checked((long)rows * rowBytes)];
        var scales = new ushort[checked((long)rows * groups)];
        var mins = new ushort[scheme.Symmetric ? 0 : scales.Length];
        var rowCodes = new byte[columns];
        for (int r = 0; r < rows; r++)
        {
            try
            {
                UniformCodec.EncodeRow(values.Slice(r * columns, columns), importance, scheme, !importance.IsEmpty, rowCodes,
                    scales.AsSpan(r * groups, groups), scheme.Symmetric ? default : mins.AsSpan(r * groups, groups));
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"tensor '{name}' row {r}: {e.Message}", nameof(values), e);
            }
            UniformCodec.Pack(rowCodes, scheme.Bits, codes.AsSpan(r * rowBytes, rowBytes));
        }
        return new UniformWeight(name, rows, columns, scheme, codes, scales, mins);
    }

    /// <summary><see cref="Encode(string, ReadOnlySpan{float}, int, int, UniformScheme, ReadOnlySpan{float})"/> of a
    /// 2-D tensor in any GGUF type (decoded to f32 first).</summary>
    public static UniformWeight Encode(Tensor tensor, UniformScheme scheme, ReadOnlySpan<float> importance = default)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (tensor.Shape.Length != 2)
            throw new ArgumentException($"tensor '{tensor.Name}' has shape [{string.Join(", ", tensor.Shape)}]; only 2-D weights can be quantized", nameof(tensor));
        var values = new float[tensor.ElementCount];
        Dequantize.Tensor(tensor, values);
        return Encode(tensor.Name, values, checked((int)tensor.Rows), checked((int)tensor.Columns), scheme, importance);
    }
}

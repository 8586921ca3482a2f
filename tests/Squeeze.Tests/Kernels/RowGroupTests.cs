using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Kernels;

/// <summary>Decode steps on Q4_K and Q4_0 row groups (<see cref="VecDot.RowGroupProduct"/>, <see cref="MatMul.MultiplyRowGroups"/>,
/// <see cref="RowGroupWeight"/>) against the one-token kernel on the rows themselves, bit for bit, and the scalar reference.</summary>
public unsafe class RowGroupTests
{
    // The scalar reference sums the blocks in another order: relative to Σ |w·x| (as VecDotTests.SumOrderLimit)
    private const double SumOrderLimit = 2e-6;

    // Q4_0: whole groups of 8 blocks and blocks left over (32 to 2816 columns); Q4_K: 1 to 11 super-blocks
    private static readonly (int Rows, int Columns)[] Shapes = [(16, 256), (32, 512), (48, 768), (16, 2816), (64, 2048), (160, 1280)];
    private static readonly (int Rows, int Columns)[] Q4_0Shapes = [(16, 32), (32, 96), (16, 224), (48, 288), (16, 800), (64, 2048), (32, 2816)];

    public static TheoryData<GgmlType> Types() => new(GgmlType.Q4_0, GgmlType.Q4_K);

    private static bool Runs(GgmlType type) => VecDot.HasRowGroups(type, VecDot.Best);

    [Theory]
    [MemberData(nameof(Types))]
    public void A_row_group_gives_each_row_what_the_one_token_kernel_gives_it_bit_for_bit(GgmlType type)
    {
        if (!Runs(type))
            return; // no AVX-512BW: the runtime never makes row groups here
        delegate*<byte*, byte*, int, float> one = VecDot.For(type, VecDot.Best);
        delegate*<byte*, byte*, int, float> avx2 = VecDot.For(type, SimdLevel.Avx2);
        delegate*<byte*, byte*, int, float> scalar = VecDot.For(type, SimdLevel.Scalar);
        int compared = 0;
        foreach ((int rows, int columns) in type == GgmlType.Q4_0 ? Q4_0Shapes : Shapes)
        {
            for (int seed = 0; seed < 4; seed++)
            {
                var rng = new Random(seed * 7919 + columns + rows);
                byte[] w = KernelTestData.RandomRows(type, rows, columns, rng);
                float[] x = KernelTestData.RandomActivations(columns, rng);
                byte[] xq = KernelTestData.Prepared(type, x, columns, 1);
                float[] wf = KernelTestData.Dequantized(type, w, rows, columns), xf = KernelTestData.PreparedValues(type, xq, columns, 1);
                long rowBytes = GgmlTypes.RowBytes(type, columns), groupBytes = VecDot.RowGroupBytes(type, columns);
                var groups = new byte[MatMul.RowGroupsBytes(type, rows, columns)];
                var y = new float[rows];
                fixed (byte* pw = w, px = xq, pg = groups)
                fixed (float* py = y)
                {
                    MatMul.PackRowGroups(type, pw, rows, columns, pg);
                    for (int g = 0; g < rows / VecDot.RowGroupRows; g++)
                        VecDot.RowGroupProduct(type, pg + g * groupBytes, px, columns, py + g * VecDot.RowGroupRows);
                    for (int r = 0; r < rows; r++)
                    {
                        float expected = one(pw + r * rowBytes, px, columns);
                        Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(avx2(pw + r * rowBytes, px, columns)), "the one-token kernels differ");
                        if (BitConverter.SingleToInt32Bits(y[r]) != BitConverter.SingleToInt32Bits(expected))
                            Assert.Fail($"{type} {rows}x{columns} seed {seed}: row {r} = {y[r]}, one-token kernel {expected}");
                        float reference = scalar(pw + r * rowBytes, px, columns);
                        double magnitude = KernelTestData.Dot(wf.AsSpan(r * columns, columns), xf).Magnitude;
                        Assert.True(Math.Abs((double)y[r] - reference) <= SumOrderLimit * magnitude + 1e-30, $"{type} {rows}x{columns}: row {r} = {y[r]}, scalar {reference}");
                        compared++;
                    }
                }
            }
        }
        Assert.True(compared > 800, $"{compared} rows compared");
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void A_weight_over_a_mapped_file_decodes_on_row_groups_with_the_rows_results_and_leaves_other_products_to_them(GgmlType type)
    {
        const int rows = 96, columns = 768;
        var rng = new Random(3);
        byte[] w = KernelTestData.RandomRows(type, rows, columns, rng);
        using var allocated = NativeBuffer.Allocate(w.Length);
        w.CopyTo(new Span<byte>(allocated.Pointer, w.Length));
        var inMemory = new BlockWeight(new Tensor("blk.0.ffn_up.weight", type, [rows, columns], allocated, 0));
        Assert.Null(RowGroupWeight.For(inMemory)); // a copy of allocated rows would double their memory

        using var mapped = NativeBuffer.MapTemporary(w.Length, stream => stream.Write(w));
        var rowsWeight = new BlockWeight(new Tensor("blk.0.ffn_up.weight", type, [rows, columns], mapped, 0));
        using var grouped = RowGroupWeight.For(rowsWeight);
        if (!Runs(type))
        {
            Assert.Null(grouped);
            return;
        }
        Assert.NotNull(grouped);
        Assert.Equal(rowsWeight.StoredBytes, grouped.StoredBytes);
        Assert.Equal(type.ToString(), grouped.Scheme);
        using var context = new ComputeContext(2);
        foreach (int tokens in new[] { 1, 1, 3, 7 })
        {
            float[] x = KernelTestData.RandomActivations(tokens * columns, rng);
            var expected = new float[tokens * rows];
            var y = new float[tokens * rows];
            rowsWeight.Multiply(x, tokens, context, expected);
            grouped.Multiply(x, tokens, context, y);
            for (int i = 0; i < y.Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(y[i]), $"{type} {tokens} tokens: y[{i}] = {y[i]}, the rows give {expected[i]}");
        }
        var decoded = new float[columns];
        var reference = new float[columns];
        grouped.DecodeRow(17, decoded);
        rowsWeight.DecodeRow(17, reference);
        Assert.Equal(reference, decoded);
    }

    [Fact]
    public void Rows_that_are_not_whole_groups_or_other_types_are_not_wrapped()
    {
        var rng = new Random(4);
        foreach ((GgmlType type, int rows) in new[] { (GgmlType.Q4_K, 24), (GgmlType.Q4_0, 40), (GgmlType.Q6_K, 32), (GgmlType.Q8_0, 32) })
        {
            byte[] w = KernelTestData.RandomRows(type, rows, 256, rng);
            using var mapped = NativeBuffer.MapTemporary(w.Length, stream => stream.Write(w));
            Assert.Null(RowGroupWeight.For(new BlockWeight(new Tensor("w", type, [rows, 256], mapped, 0))));
        }
    }
}

using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Tests.Kernels;

public unsafe class MatMulTests
{
    /// <summary>MatMul vs Σ dequantize(w)·(activations as quantized) in double, relative to Σ |w·x|.</summary>
    private const double ReferenceLimit = 2e-5;

    public static TheoryData<GgmlType, int, int, int, int> Cases()
    {
        var data = new TheoryData<GgmlType, int, int, int, int>();
        (int Rows, int Columns)[] shapes32 = [(288, 288), (768, 288), (288, 768), (64, 64), (172, 64)];
        (int Rows, int Columns)[] shapes256 = [(288, 768), (64, 256), (172, 512), (33, 256)];
        foreach (GgmlType type in KernelTestData.WeightTypes)
            foreach ((int rows, int columns) in GgmlTypes.BlockSize(type) == 256 ? shapes256 : shapes32)
                foreach (int tokens in new[] { 1, 7 })
                    foreach (int threads in new[] { 1, 2 })
                        data.Add(type, rows, columns, tokens, threads);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Multiply_matches_naive_reference(GgmlType type, int rows, int columns, int tokens, int threads)
    {
        var rng = new Random(rows * 31 + columns * 7 + tokens + (int)type * 1000);
        byte[] w = KernelTestData.RandomRows(type, rows, columns, rng);
        float[] x = KernelTestData.RandomActivations(tokens * columns, rng);
        using NativeBuffer buffer = NativeBuffer.Allocate(w.Length + 64);
        fixed (byte* pw = w)
            Buffer.MemoryCopy(pw, buffer.Pointer + 64, w.Length, w.Length);
        var tensor = new Tensor("w", type, [rows, columns], buffer, 64);
        var y = new float[tokens * rows];
        using (var context = new ComputeContext(threads))
            MatMul.Multiply(tensor, x, tokens, context, y);

        float[] wf = KernelTestData.Dequantized(type, w, rows, columns);
        byte[] xq = KernelTestData.Prepared(type, x, columns, tokens);
        float[] xf = KernelTestData.PreparedValues(type, xq, columns, tokens);
        int rowBytes = (int)GgmlTypes.RowBytes(type, columns), xRowBytes = (int)VecDot.ActivationRowBytes(type, columns);
        for (int t = 0; t < tokens; t++)
        {
            for (int r = 0; r < rows; r++)
            {
                (double expected, double magnitude) = KernelTestData.ReferenceDot(type,
                    w.AsSpan(r * rowBytes, rowBytes), wf.AsSpan(r * columns, columns), xq.AsSpan(t * xRowBytes, xRowBytes), xf.AsSpan(t * columns, columns));
                double error = Math.Abs(y[t * rows + r] - expected);
                Assert.True(error <= ReferenceLimit * magnitude + 1e-30,
                    $"{type} {rows}x{columns} token {t} row {r}: got {y[t * rows + r]}, expected {expected}, |diff| {error:g3} > {ReferenceLimit} x {magnitude:g3}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(KernelTestData.WeightTypeData), MemberType = typeof(KernelTestData))]
    public void Results_do_not_depend_on_thread_count(GgmlType type)
    {
        int columns = GgmlTypes.BlockSize(type) == 256 ? 512 : 288;
        const int rows = 300, tokens = 5;
        var rng = new Random(5);
        byte[] w = KernelTestData.RandomRows(type, rows, columns, rng);
        float[] x = KernelTestData.RandomActivations(tokens * columns, rng);
        float[]? first = null;
        foreach (int threads in new[] { 1, 2, 3, 4 })
        {
            var y = new float[tokens * rows];
            using var context = new ComputeContext(threads);
            fixed (byte* pw = w)
            fixed (float* px = x, py = y)
                MatMul.Multiply(type, pw, px, rows, columns, tokens, rows, context, py);
            if (first is null)
                first = y;
            else
                Assert.Equal(first, y);
        }
    }

    [Theory]
    [MemberData(nameof(KernelTestData.WeightTypeData), MemberType = typeof(KernelTestData))]
    public void A_prompt_gives_the_same_outputs_as_one_token_at_a_time(GgmlType type)
    {
        int columns = GgmlTypes.BlockSize(type) == 256 ? 512 : 288;
        const int rows = 40, tokens = 23;
        var rng = new Random(11);
        byte[] w = KernelTestData.RandomRows(type, rows, columns, rng);
        float[] x = KernelTestData.RandomActivations(tokens * columns, rng);
        var prompt = new float[tokens * rows];
        var single = new float[tokens * rows];
        using var context = new ComputeContext(2);
        fixed (byte* pw = w)
        fixed (float* px = x, pp = prompt, ps = single)
        {
            MatMul.Multiply(type, pw, px, rows, columns, tokens, rows, context, pp);
            for (int t = 0; t < tokens; t++)
                MatMul.Multiply(type, pw, px + t * columns, rows, columns, 1, rows, context, ps + t * rows);
        }
        Assert.Equal(single, prompt);
    }

    [Theory]
    [InlineData(GgmlType.F32, 1)]
    [InlineData(GgmlType.Q8_0, 1)]
    [InlineData(GgmlType.Q4_0, 2)]
    [InlineData(GgmlType.Q4_K, 2)]
    [InlineData(GgmlType.Q6_K, 1)]
    public void Multiply_does_not_allocate_once_warm(GgmlType type, int threads)
    {
        const int rows = 128, columns = 256, tokens = 7;
        var rng = new Random(3);
        byte[] w = KernelTestData.RandomRows(type, rows, columns, rng);
        float[] x = KernelTestData.RandomActivations(tokens * columns, rng);
        var y = new float[tokens * rows];
        using var context = new ComputeContext(threads);
        fixed (byte* pw = w)
        fixed (float* px = x, py = y)
        {
            MatMul.Multiply(type, pw, px, rows, columns, tokens, rows, context, py);
            const int Calls = 10_000;
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < Calls / 2; i++)
            {
                MatMul.Multiply(type, pw, px, rows, columns, tokens, rows, context, py);
                MatMul.Multiply(type, pw, px, rows, columns, 1, rows, context, py);
            }
            // Less than a byte per call: any per-call allocation (an object is ≥ 24 bytes) fails; the runtime's own
            // one-time allocations that can land in the window (tiered compilation, a lazily created lock: ~7.5 KB
            // seen) do not.
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(allocated < Calls, $"{allocated} bytes allocated over {Calls} calls");
        }
    }

    [Fact]
    public void Output_rows_can_sit_in_a_wider_buffer_and_a_context_is_reusable()
    {
        const int rows = 64, columns = 96, tokens = 3, stride = 100;
        var rng = new Random(9);
        byte[] w = KernelTestData.RandomRows(GgmlType.Q8_0, rows, columns, rng);
        float[] x = KernelTestData.RandomActivations(tokens * columns, rng);
        var packed = new float[tokens * rows];
        var wide = Enumerable.Repeat(-1f, tokens * stride).ToArray();
        using var context = new ComputeContext(2);
        fixed (byte* pw = w)
        fixed (float* px = x, pp = packed, pwd = wide)
        {
            MatMul.Multiply(GgmlType.Q8_0, pw, px, rows, columns, tokens, rows, context, pp);
            MatMul.Multiply(GgmlType.Q8_0, pw, px, rows, columns, tokens, stride, context, pwd);
        }
        for (int t = 0; t < tokens; t++)
        {
            Assert.Equal(packed.AsSpan(t * rows, rows).ToArray(), wide.AsSpan(t * stride, rows).ToArray());
            Assert.All(wide.AsSpan(t * stride + rows, stride - rows).ToArray(), v => Assert.Equal(-1f, v));
        }
    }

    [Fact]
    public void Too_short_buffers_are_rejected()
    {
        using NativeBuffer buffer = NativeBuffer.Allocate(GgmlTypes.RowBytes(GgmlType.F32, 32) * 4);
        var tensor = new Tensor("w", GgmlType.F32, [4, 32], buffer, 0);
        using var context = new ComputeContext(1);
        Assert.Throws<ArgumentException>(() => MatMul.Multiply(tensor, new float[31], 1, context, new float[4]));
        Assert.Throws<ArgumentException>(() => MatMul.Multiply(tensor, new float[32], 1, context, new float[3]));
    }

    [Fact]
    public void A_failing_part_on_a_worker_is_rethrown_on_the_caller()
    {
        using var context = new ComputeContext(2);
        var e = Assert.Throws<InvalidOperationException>(() => context.Run(new Failing(), 2));
        Assert.Equal("part 1", e.Message);
        // the pool still works afterwards, and runs every part exactly once however many there are
        for (int round = 0; round < 200; round++)
        {
            int parts = 1 + round % 13;
            var counter = new Counting(parts);
            context.Run(counter, parts);
            Assert.All(counter.Runs, r => Assert.Equal(1, r));
        }
    }

    private sealed class Failing : IParallelJob
    {
        public void Run(int part, int parts)
        {
            if (part == 1)
                throw new InvalidOperationException("part 1");
        }
    }

    private sealed class Counting(int parts) : IParallelJob
    {
        public int[] Runs { get; } = new int[parts];

        public void Run(int part, int parts) => Interlocked.Increment(ref Runs[part]);
    }
}

using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Weights;

public sealed unsafe partial class CodebookWeight
{
    /// <summary>
    /// Decodes whole 8-code steps of 2 to 4 bits from code <paramref name="c"/> (a multiple of 8) toward
    /// <paramref name="end"/>: the step's <c>bits</c> bytes are broadcast to eight lanes, each lane shifted to its code
    /// and masked, and the table looked up by <c>vpermps</c> (for 4 bits, two permutes of the 8-entry halves blended on
    /// the code's bit 3). Returns the first code not decoded. Same values as <see cref="DecodeRow"/>.
    /// </summary>
    private static int DecodeAvx2(byte* packed, int c, int end, int bits, long safeBytes, float* levels, float* destination)
    {
        var shifts = Vector256.Create(0u, (uint)bits, 2u * (uint)bits, 3u * (uint)bits, 4u * (uint)bits, 5u * (uint)bits, 6u * (uint)bits, 7u * (uint)bits);
        var mask = Vector256.Create((1u << bits) - 1);
        var low = Vector256.Load(levels);
        var high = Vector256.Load(levels + 8);
        for (; c + 8 <= end && (long)(c >> 3) * bits <= safeBytes; c += 8)
        {
            uint word = *(uint*)(packed + (c >> 3) * bits); // 8 codes of ≤ 4 bits: at most 32 bits
            var index = Avx2.ShiftRightLogicalVariable(Vector256.Create(word), shifts) & mask;
            var values = Avx2.PermuteVar8x32(low, index.AsInt32());
            if (bits == 4)
                values = Avx.BlendVariable(values, Avx2.PermuteVar8x32(high, index.AsInt32()), Avx2.ShiftLeftLogical(index, 28).AsSingle());
            values.Store(destination + c);
        }
        return c;
    }
}

using Squeeze.Tensors;

namespace Squeeze.Formats.HuggingFace;

/// <summary>
/// Reorders the rows of query/key projections between Hugging Face's rotate-half order (within each head of size
/// hd, row i pairs with row i + hd/2) and Meta's interleaved order (the pair sits at rows 2i and 2i + 1). This is
/// the inverse of the permutation transformers' and llama2.c's conversion scripts apply to Meta checkpoints.
/// Whole rows move, so any row-major type works (a 1-D bias moves element by element).
/// </summary>
internal static unsafe class RotaryOrder
{
    /// <summary>A copy of <paramref name="source"/> ([heads × hd, …]) with its rows reordered, in a new buffer added to
    /// <paramref name="owned"/>. <paramref name="toInterleaved"/>: rotate-half → interleaved; else the inverse.</summary>
    public static Tensor Permute(Tensor source, int heads, bool toInterleaved, ICollection<IDisposable> owned)
    {
        long rows = source.Shape[0];
        if (heads <= 0 || rows % heads != 0 || rows / heads % 2 != 0)
            throw new ArgumentException($"tensor '{source.Name}' has {rows} rows, which do not split into {heads} heads of even size", nameof(heads));
        long rowBytes = source.ByteLength / rows;
        long headDim = rows / heads, half = headDim / 2;
        var buffer = NativeBuffer.Allocate(source.ByteLength);
        owned.Add(buffer);
        byte* src = source.Data, dst = buffer.Pointer;
        for (long h = 0; h < heads; h++)
        {
            for (long i = 0; i < half; i++)
            {
                long rotateHalfA = h * headDim + i, rotateHalfB = rotateHalfA + half;
                long interleavedA = h * headDim + 2 * i, interleavedB = interleavedA + 1;
                if (toInterleaved)
                {
                    Copy(src, rotateHalfA, dst, interleavedA, rowBytes);
                    Copy(src, rotateHalfB, dst, interleavedB, rowBytes);
                }
                else
                {
                    Copy(src, interleavedA, dst, rotateHalfA, rowBytes);
                    Copy(src, interleavedB, dst, rotateHalfB, rowBytes);
                }
            }
        }
        return new Tensor(source.Name, source.Type, source.Shape, buffer, 0);
    }

    private static void Copy(byte* src, long srcRow, byte* dst, long dstRow, long rowBytes)
        => System.Buffer.MemoryCopy(src + srcRow * rowBytes, dst + dstRow * rowBytes, rowBytes, rowBytes);
}

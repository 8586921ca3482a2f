using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Formats.Llama2c;

public class Llama2cMutationTests
{
    private const int Iterations = 12_000;

    private static readonly int[] ExtremeInts = [0, 1, -1, 2, 3, int.MaxValue, int.MinValue, int.MaxValue - 1, int.MinValue + 1, 0x616b3432, 1 << 20, (1 << 20) + 1, 1 << 24, -(1 << 24), 65536, 4096, 4097, 255, 256];

    /// <summary>Every mutation of stories260K's header and length either loads or throws ModelFormatException,
    /// quickly and without allocating more than the file size.</summary>
    [Fact]
    public unsafe void Mutated_checkpoints_load_or_throw_ModelFormatException()
    {
        byte[] original = File.ReadAllBytes(SharedData.Stories260K);
        const int slack = 256;
        byte* memory = (byte*)NativeMemory.Alloc((nuint)(original.Length + slack));
        try
        {
            original.CopyTo(new Span<byte>(memory, original.Length));
            var random = new Random(42);
            int loaded = 0, rejected = 0;
            var stopwatch = Stopwatch.StartNew();
            for (int iteration = 0; iteration < Iterations; iteration++)
            {
                // Restore the region mutations touch, then mutate.
                original.AsSpan(0, 64).CopyTo(new Span<byte>(memory, 64));
                long length = original.Length;
                var header = new Span<byte>(memory, 28);
                int kind = random.Next(6);
                string what;
                switch (kind)
                {
                    case 0: // flip 1-4 random bytes of the header
                        {
                            int flips = random.Next(1, 5);
                            for (int i = 0; i < flips; i++)
                                header[random.Next(28)] ^= (byte)random.Next(1, 256);
                            what = $"{flips} byte flips";
                            break;
                        }
                    case 1: // one header field set to an extreme value
                        {
                            int field = random.Next(7);
                            int value = ExtremeInts[random.Next(ExtremeInts.Length)];
                            BinaryPrimitives.WriteInt32LittleEndian(header[(4 * field)..], value);
                            what = $"field {field} = {value}";
                            break;
                        }
                    case 2: // truncation, biased toward the header
                        length = random.Next(2) == 0 ? random.Next(0, 64) : random.NextInt64(0, original.Length);
                        what = $"truncated to {length}";
                        break;
                    case 3: // extension with random bytes
                        {
                            int extra = random.Next(1, slack + 1);
                            random.NextBytes(new Span<byte>(memory + original.Length, extra));
                            length += extra;
                            what = $"extended by {extra}";
                            break;
                        }
                    case 4: // a field scaled so the sizes still look plausible
                        {
                            int field = random.Next(7);
                            int value = BinaryPrimitives.ReadInt32LittleEndian(header[(4 * field)..]);
                            value = random.Next(3) switch { 0 => value * 2, 1 => value / 2, _ => -value };
                            BinaryPrimitives.WriteInt32LittleEndian(header[(4 * field)..], value);
                            what = $"field {field} rescaled to {value}";
                            break;
                        }
                    default: // extreme field and truncation together
                        {
                            int field = random.Next(7);
                            int value = ExtremeInts[random.Next(ExtremeInts.Length)];
                            BinaryPrimitives.WriteInt32LittleEndian(header[(4 * field)..], value);
                            length = random.NextInt64(0, original.Length + 1);
                            what = $"field {field} = {value}, truncated to {length}";
                            break;
                        }
                }

                using var buffer = new ViewBuffer(memory, length, "mutant.bin");
                long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
                try
                {
                    var (config, tensors) = Llama2cReader.Read(buffer);
                    Assert.All(tensors, t => Assert.True(t.Offset + t.ByteLength <= length));
                    Assert.True(config.Dim > 0 && config.LayerCount > 0);
                    loaded++;
                }
                catch (ModelFormatException e)
                {
                    Assert.Equal("mutant.bin", e.Path);
                    rejected++;
                }
                catch (Exception e)
                {
                    Assert.Fail($"iteration {iteration} ({what}): {e.GetType().Name}: {e.Message}");
                }
                long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
                Assert.True(allocated <= length + 65536, $"iteration {iteration} ({what}) allocated {allocated} bytes for a {length}-byte file");
            }
            Assert.Equal(Iterations, loaded + rejected);
            Assert.True(rejected > Iterations / 2, $"only {rejected} rejected");
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(30), $"took {stopwatch.Elapsed}");
        }
        finally
        {
            NativeMemory.Free(memory);
        }
    }
}

using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Squeeze.Formats;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;

namespace Squeeze.Tests.Formats.Safetensors;

public class SafetensorsMutationTests
{
    private const int Iterations = 12_000;

    private static readonly ulong[] ExtremeLengths = [0, 1, 2, 7, 8, ulong.MaxValue, long.MaxValue, (ulong)long.MaxValue + 1, uint.MaxValue, 100_000_000, 100_000_001];

    private static readonly string[] ExtremeNumbers = ["0", "-1", "1", "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616", "4294967296", "1e400", "1.5", "-0", "2147483648", "99999999999999999999999"];

    /// <summary>Every mutation of a small safetensors file either opens (and every tensor's bytes are readable) or
    /// throws ModelFormatException, quickly and without allocating beyond a few times the file size.</summary>
    [Fact]
    public unsafe void Mutated_files_open_or_throw_ModelFormatException()
    {
        var stream = new MemoryStream();
        SafetensorsTests.SampleWriter().WriteTo(stream);
        byte[] original = stream.ToArray();
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
        string headerText = Encoding.UTF8.GetString(original, 8, headerLength);
        byte[] data = original[(8 + headerLength)..];

        int capacity = original.Length * 4;
        byte* memory = (byte*)NativeMemory.Alloc((nuint)capacity);
        try
        {
            var random = new Random(42);
            int opened = 0, rejected = 0;
            var stopwatch = Stopwatch.StartNew();
            for (int iteration = 0; iteration < Iterations; iteration++)
            {
                byte[] mutant = original;
                string what;
                switch (random.Next(6))
                {
                    case 0: // flip 1-3 bytes of the length field or header
                        {
                            mutant = (byte[])original.Clone();
                            int flips = random.Next(1, 4);
                            for (int i = 0; i < flips; i++)
                                mutant[random.Next(8 + headerLength)] ^= (byte)random.Next(1, 256);
                            what = $"{flips} byte flips";
                            break;
                        }
                    case 1: // extreme header length
                        {
                            mutant = (byte[])original.Clone();
                            ulong value = random.Next(4) == 0 ? (ulong)random.NextInt64() : ExtremeLengths[random.Next(ExtremeLengths.Length)];
                            if (random.Next(3) == 0)
                                value = (ulong)(headerLength + random.Next(-9, 10));
                            BinaryPrimitives.WriteUInt64LittleEndian(mutant, value);
                            what = $"header length {value}";
                            break;
                        }
                    case 2: // truncation
                        mutant = original[..random.Next(0, original.Length)];
                        what = $"truncated to {mutant.Length}";
                        break;
                    case 3: // one number in the JSON replaced by an extreme value, header length kept consistent
                        {
                            var numbers = System.Text.RegularExpressions.Regex.Matches(headerText, "[0-9]+");
                            var m = numbers[random.Next(numbers.Count)];
                            string number = ExtremeNumbers[random.Next(ExtremeNumbers.Length)];
                            string text = headerText[..m.Index] + number + headerText[(m.Index + m.Length)..];
                            mutant = SafetensorsTests.Build(text, data);
                            what = $"number at {m.Index} = {number}";
                            break;
                        }
                    case 4: // a random 8-byte extreme value written anywhere in the header
                        {
                            mutant = (byte[])original.Clone();
                            int at = random.Next(0, 8 + headerLength - 8);
                            BinaryPrimitives.WriteUInt64LittleEndian(mutant.AsSpan(at), ExtremeLengths[random.Next(ExtremeLengths.Length)]);
                            what = $"8 bytes at {at}";
                            break;
                        }
                    default: // a JSON token swapped in, header length kept consistent
                        {
                            string[] tokens = ["\"U8\"", "\"F32\"", "\"__metadata__\"", "null", "[]", "{}", "[0]", "\"\\uD800\"", "\"", "true", ",", "]"];
                            int at = random.Next(headerText.Length);
                            int cut = random.Next(0, 6);
                            string text = headerText[..at] + tokens[random.Next(tokens.Length)] + headerText[Math.Min(headerText.Length, at + cut)..];
                            mutant = SafetensorsTests.Build(text, data);
                            what = $"token at {at}";
                            break;
                        }
                }

                if (mutant.Length > capacity)
                    continue;
                mutant.CopyTo(new Span<byte>(memory, mutant.Length));
                using var buffer = new ViewBuffer(memory, mutant.Length, "mutant.safetensors");
                long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
                try
                {
                    using var file = SafetensorsFile.Parse(buffer, ownsBuffer: false);
                    foreach (var t in file.Tensors)
                    {
                        Assert.Equal(t.ByteLength, file.GetBytes(t).Length);
                        if (t.IsFloat && t.ElementCount > 0 && t.Shape.Length <= 4)
                            Assert.Equal(t.ByteLength, file.GetTensor(t.Name).ByteLength);
                    }
                    opened++;
                }
                catch (ModelFormatException e)
                {
                    Assert.Equal("mutant.safetensors", e.Path);
                    rejected++;
                }
                catch (Exception e)
                {
                    Assert.Fail($"iteration {iteration} ({what}): {e.GetType().Name}: {e.Message}");
                }
                long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
                Assert.True(allocated <= 16L * mutant.Length + 65536, $"iteration {iteration} ({what}) allocated {allocated} bytes for a {mutant.Length}-byte file");
            }
            Assert.True(opened + rejected >= 10_000, $"only {opened + rejected} mutants parsed");
            Assert.True(rejected > Iterations / 2, $"only {rejected} rejected");
            Assert.True(opened > 0, "no mutant opened: the mutations never exercise the accepting path");
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(30), $"took {stopwatch.Elapsed}");
        }
        finally
        {
            NativeMemory.Free(memory);
        }
    }
}

using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests;

/// <summary>The library's folders are floors that only look down, as docs/ARCHITECTURE.md draws them.</summary>
public sealed class ArchitectureTests
{
    private static string RepositoryRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Squeeze.slnx")))
                    return dir.FullName;
            }
            throw new DirectoryNotFoundException("no Squeeze.slnx above the test binaries");
        }
    }

    private static Floors DocumentedFloors => Floors.Read(File.ReadAllText(Path.Combine(RepositoryRoot, "docs", "ARCHITECTURE.md")));

    [Fact]
    public void EveryFolderUsesOnlyTheFloorsBelowIt()
    {
        var problems = DocumentedFloors.Check(Path.Combine(RepositoryRoot, "src", "Squeeze"));
        Assert.True(problems.Count == 0, "arrows that do not point down:\n" + string.Join('\n', problems));
    }

    [Fact]
    public void ThePictureDrawsEveryFolderOfTheLibraryOnce()
    {
        var floors = DocumentedFloors;
        string library = Path.Combine(RepositoryRoot, "src", "Squeeze");
        var folders = Directory.EnumerateDirectories(library).Select(d => Path.GetFileName(d)!).Where(n => n is not ("bin" or "obj")).Order(StringComparer.Ordinal).ToList();
        var drawn = floors.Folders.Where(f => Directory.Exists(Path.Combine(library, f))).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(folders, drawn);
        // The order the issue of the floors asks for, bottom up (floors with several folders in any order).
        string[] expected = ["Tensors", "Coding", "Tokenizers", "Kernels", "Weights", "Models", "Formats", "Runtime", "Calibration Embeddings Evaluation Generation SavedCaches Zip", "LowRank Prompts Pruning Quantization", "Tuning", "Compression", "Allocation"];
        var libraryFloors = floors.BottomUp.Select(f => string.Join(' ', f.Where(n => folders.Contains(n)).Order(StringComparer.Ordinal))).Where(f => f.Length > 0).ToList();
        Assert.Equal(expected, libraryFloors.Take(expected.Length));
        Assert.Equal("Squeeze.Bench Squeeze.Cli", string.Join(' ', floors.BottomUp[^1].Order(StringComparer.Ordinal)));
    }

    [Fact]
    public void UpwardAndSidewaysArrowsAreFoundWithTheirFileAndLine()
    {
        string root = Directory.CreateTempSubdirectory("squeeze-floors-").FullName;
        try
        {
            Write(root, "Low/Fine.cs", "using System.Runtime.Intrinsics;\nnamespace Squeeze.Low;\n// Squeeze.High is only named in a comment\ninternal static class Fine { const string S = \"Squeeze.High.X\"; }\n");
            Write(root, "Low/Up.cs", "using Squeeze.High;\n\nnamespace Squeeze.Low;\n\ninternal static class Up\n{\n    static object A() => new Squeeze.Side.Thing();\n    static object B() => High.Maker.Make();\n    static object C() => global::Squeeze.High.Maker.Make();\n    static int D(Thing t) => t.High.Count;\n}\n");
            Write(root, "Low/Nested/Wrong.cs", "namespace Squeeze.Low;\n");
            Write(root, "High/Maker.cs", "using Squeeze.Low;\nnamespace Squeeze.High;\n");
            Write(root, "Side/Thing.cs", "namespace Squeeze.Side;\n");
            Write(root, "Loose/Stray.cs", "namespace Squeeze.Loose;\n");
            var floors = new Floors([["Low", "Side"], ["High"]]);

            var problems = floors.Check(root);

            Assert.Equal(
                [
                    "Loose/Stray.cs:1: folder Loose is on no floor of docs/ARCHITECTURE.md",
                    "Low/Nested/Wrong.cs:1: namespace Squeeze.Low is not its folder's (Squeeze.Low.Nested)",
                    "Low/Up.cs:1: Low uses High, on a floor above it (using Squeeze.High;)",
                    "Low/Up.cs:7: Low uses Side, beside it on the same floor (static object A() => new Squeeze.Side.Thing();)",
                    "Low/Up.cs:8: Low uses High, on a floor above it (static object B() => High.Maker.Make();)",
                    "Low/Up.cs:9: Low uses High, on a floor above it (static object C() => global::Squeeze.High.Maker.Make();)",
                ],
                problems);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void FloorsAreReadFromTheBoxesOfThePicture()
    {
        const string markdown = "# A\n\n## Floors\n\n```text\n┌─────┐\n│ Top │\n└──┬──┘\n   ▼\n┌──────────┐\n│ A    B   │\n└──────────┘\n```\n│ Ignored │\n";
        var floors = Floors.Read(markdown);
        Assert.Equal(["A", "B"], floors.BottomUp[0]);
        Assert.Equal(["Top"], floors.BottomUp[1]);
        Assert.Equal(2, floors.BottomUp.Count);
    }

    private static void Write(string root, string relative, string text)
    {
        string path = Path.Combine(root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
    }
}

using System.Text;
using System.Text.RegularExpressions;

namespace Squeeze.Tests.Infrastructure;

/// <summary>
/// The library's floors (docs/ARCHITECTURE.md): folders of <c>src/Squeeze</c> stacked so that each uses only the floors
/// below it. <see cref="Read"/> takes them from the picture in the document; <see cref="Check"/> reads every source
/// file's <c>using</c> directives and its qualified names (<c>Squeeze.Weights.X</c>, <c>global::Squeeze.Weights.X</c>,
/// and <c>Weights.X</c>, which inside <c>namespace Squeeze.…</c> means the same) and names each arrow that points up or
/// sideways, by file and line. A file's namespace must be its folder's, so these are the only ways one folder can reach
/// another's types. Files at the library's root form the ground floor.
/// </summary>
public sealed partial class Floors
{
    private readonly Dictionary<string, int> floorOf;

    /// <summary>Floors from the bottom up; each floor is a set of top-level folder names.</summary>
    public Floors(IReadOnlyList<IReadOnlyList<string>> bottomUp)
    {
        ArgumentNullException.ThrowIfNull(bottomUp);
        BottomUp = bottomUp;
        floorOf = [];
        for (int i = 0; i < bottomUp.Count; i++)
        {
            foreach (string folder in bottomUp[i])
            {
                if (!floorOf.TryAdd(folder, i + 1))
                    throw new ArgumentException($"folder {folder} is on two floors");
            }
        }
    }

    public IReadOnlyList<IReadOnlyList<string>> BottomUp { get; }

    public IEnumerable<string> Folders => floorOf.Keys;

    /// <summary>
    /// The floors drawn in <paramref name="markdown"/>: the first code block after the heading <c>## Floors</c>, whose
    /// boxes (<c>│ A   B │</c> lines) are floors from the top down. Words in a box that are not folder names (the CLI
    /// and the bench, drawn on top) are kept as they are.
    /// </summary>
    public static Floors Read(string markdown)
    {
        ArgumentNullException.ThrowIfNull(markdown);
        int heading = markdown.IndexOf("\n## Floors", StringComparison.Ordinal);
        if (heading < 0)
            throw new FormatException("no '## Floors' heading");
        int open = markdown.IndexOf("```", heading, StringComparison.Ordinal);
        int close = markdown.IndexOf("```", open + 3, StringComparison.Ordinal);
        if (open < 0 || close < 0)
            throw new FormatException("no code block after '## Floors'");
        var topDown = new List<IReadOnlyList<string>>();
        foreach (string line in markdown[open..close].Split('\n'))
        {
            string t = line.Trim();
            if (t.Length > 2 && t[0] == '│' && t[^1] == '│')
                topDown.Add(t[1..^1].Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        }
        topDown.Reverse();
        return new Floors(topDown);
    }

    /// <summary>Every reference in the .cs files under <paramref name="library"/> to a folder not below the file's own,
    /// and every file whose namespace is not its folder's, as <c>path:line: what</c> (paths relative to
    /// <paramref name="library"/>).</summary>
    public IReadOnlyList<string> Check(string library)
    {
        var problems = new List<string>();
        foreach (string path in Directory.EnumerateFiles(library, "*.cs", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            string relative = Path.GetRelativePath(library, path).Replace('\\', '/');
            if (relative.StartsWith("obj/", StringComparison.Ordinal) || relative.StartsWith("bin/", StringComparison.Ordinal))
                continue;
            string[] folders = relative.Split('/')[..^1];
            string own = folders.Length == 0 ? "" : folders[0];
            int ownFloor = own.Length == 0 ? 0 : floorOf.GetValueOrDefault(own, -1);
            if (ownFloor < 0)
            {
                problems.Add($"{relative}:1: folder {own} is on no floor of docs/ARCHITECTURE.md");
                continue;
            }
            string[] lines = StripCommentsAndStrings(File.ReadAllText(path)).Split('\n');
            string expected = string.Join('.', ["Squeeze", .. folders]);
            bool namespaced = false;
            for (int i = 0; i < lines.Length; i++)
            {
                var ns = NamespaceLine().Match(lines[i]);
                if (ns.Success)
                {
                    namespaced = true;
                    if (ns.Groups[1].Value != expected)
                        problems.Add($"{relative}:{i + 1}: namespace {ns.Groups[1].Value} is not its folder's ({expected})");
                    continue;
                }
                foreach (Match m in Reference().Matches(lines[i]))
                {
                    string target = m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value;
                    if (target == own || !floorOf.TryGetValue(target, out int targetFloor))
                        continue;
                    if (targetFloor >= ownFloor)
                    {
                        string direction = targetFloor == ownFloor ? "beside it on the same floor" : "on a floor above it";
                        problems.Add($"{relative}:{i + 1}: {DescribeFolder(own)} uses {target}, {direction} ({lines[i].Trim()})");
                    }
                }
            }
            if (!namespaced)
                problems.Add($"{relative}:1: no file-scoped namespace ({expected})");
        }
        return problems;
    }

    private static string DescribeFolder(string folder) => folder.Length == 0 ? "the library's root" : folder;

    /// <summary>The source with comments, string and character literals blanked out, line breaks kept.</summary>
    private static string StripCommentsAndStrings(string source)
    {
        var s = new StringBuilder(source.Length);
        int i = 0;
        while (i < source.Length)
        {
            char c = source[i];
            char next = i + 1 < source.Length ? source[i + 1] : '\0';
            if (c == '/' && next == '/')
            {
                while (i < source.Length && source[i] != '\n')
                    i++;
            }
            else if (c == '/' && next == '*')
            {
                int end = source.IndexOf("*/", i + 2, StringComparison.Ordinal);
                end = end < 0 ? source.Length : end + 2;
                Blank(source, i, end, s);
                i = end;
            }
            else if (c == '"' && next == '"' && i + 2 < source.Length && source[i + 2] == '"')
            {
                int quotes = 3;
                while (i + quotes < source.Length && source[i + quotes] == '"')
                    quotes++;
                string fence = new('"', quotes);
                int end = source.IndexOf(fence, i + quotes, StringComparison.Ordinal);
                end = end < 0 ? source.Length : end + quotes;
                Blank(source, i, end, s);
                i = end;
            }
            else if (c == '"' || c == '\'')
            {
                bool verbatim = i > 0 && source[i - 1] == '@' || i > 1 && source[i - 1] == '$' && source[i - 2] == '@';
                int j = i + 1;
                while (j < source.Length)
                {
                    if (!verbatim && source[j] == '\\')
                        j += 2;
                    else if (verbatim && source[j] == '"' && j + 1 < source.Length && source[j + 1] == '"')
                        j += 2;
                    else if (source[j] == c || source[j] == '\n' && !verbatim)
                        break;
                    else
                        j++;
                }
                int end = Math.Min(source.Length, j + 1);
                Blank(source, i, end, s);
                i = end;
            }
            else
            {
                s.Append(c);
                i++;
            }
        }
        return s.ToString();
    }

    private static void Blank(string source, int from, int to, StringBuilder s)
    {
        for (int k = from; k < to; k++)
            s.Append(source[k] == '\n' ? '\n' : ' ');
    }

    [GeneratedRegex(@"^\s*namespace\s+([\w.]+)\s*;")]
    private static partial Regex NamespaceLine();

    // Squeeze.Folder (absolute, also after global::) or Folder.Type (relative to namespace Squeeze, not a member access).
    [GeneratedRegex(@"(?<![\w.])(?:global::)?Squeeze\.([A-Z]\w*)|(?<![\w.:])([A-Z]\w*)\.(?=[A-Z])")]
    private static partial Regex Reference();
}

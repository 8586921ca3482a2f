namespace Squeeze.Tokenizers;

/// <summary>A piece of the input: raw text (<see cref="TokenId"/> &lt; 0) or a special token found in it.</summary>
internal readonly record struct Fragment(int Start, int Length, int TokenId)
{
    public bool IsToken => TokenId >= 0;
}

/// <summary>
/// Cuts special tokens out of the text before the tokenizer sees it, as llama.cpp's <c>tokenizer_st_partition</c> does:
/// tokens longest first, each cutting every remaining raw fragment at its leftmost non-overlapping occurrences.
/// User-defined tokens are always cut out; control and unknown tokens only with parse_special.
/// </summary>
internal sealed class SpecialTokenSplitter
{
    private readonly (string Text, int Id, bool Always)[] specials;

    public SpecialTokenSplitter(Vocabulary vocabulary)
    {
        var list = new List<(string Text, int Id, bool Always)>();
        for (int id = 0; id < vocabulary.Count; id++)
        {
            TokenType type = vocabulary.Types[id];
            if (vocabulary.Tokens[id].Length > 0 && type is TokenType.Control or TokenType.UserDefined or TokenType.Unknown)
                list.Add((vocabulary.Tokens[id], id, type == TokenType.UserDefined));
        }
        // Longest first; ties by id so the result does not depend on sort stability.
        list.Sort((a, b) => a.Text.Length != b.Text.Length ? b.Text.Length.CompareTo(a.Text.Length) : a.Id.CompareTo(b.Id));
        specials = [.. list];
    }

    public List<Fragment> Split(string text, bool parseSpecial)
    {
        var fragments = new List<Fragment>();
        if (text.Length == 0)
            return fragments;
        fragments.Add(new Fragment(0, text.Length, -1));
        foreach (var (special, id, always) in specials)
        {
            if (!always && !parseSpecial)
                continue;
            List<Fragment>? next = null;
            for (int f = 0; f < fragments.Count; f++)
            {
                Fragment fragment = fragments[f];
                int end = fragment.Start + fragment.Length;
                int at = fragment.IsToken ? -1 : text.IndexOf(special, fragment.Start, fragment.Length, StringComparison.Ordinal);
                if (at < 0)
                {
                    next?.Add(fragment);
                    continue;
                }
                next ??= fragments.GetRange(0, f);
                int position = fragment.Start;
                while (at >= 0)
                {
                    if (at > position)
                        next.Add(new Fragment(position, at - position, -1));
                    next.Add(new Fragment(at, special.Length, id));
                    position = at + special.Length;
                    at = position < end ? text.IndexOf(special, position, end - position, StringComparison.Ordinal) : -1;
                }
                if (position < end)
                    next.Add(new Fragment(position, end - position, -1));
            }
            if (next is not null)
                fragments = next;
        }
        return fragments;
    }
}

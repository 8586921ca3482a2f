using System.Text;
using Squeeze.Tokenizers;

namespace Squeeze.Server;

/// <summary>
/// Turns a request's generated tokens into the text sent to the client: the tokens' UTF-8 bytes decoded across token
/// boundaries, and the stop texts cut out. Text is held back while it could still be the beginning of a stop text, so
/// a stream never sends what a stop text later takes back.
/// </summary>
internal sealed class TextAssembler(Tokenizer tokenizer, IReadOnlyList<string> stops)
{
    private readonly Decoder decoder = Encoding.UTF8.GetDecoder();
    private readonly StringBuilder text = new();
    private readonly int holdBack = stops.Count == 0 ? 0 : stops.Max(s => s.Length) - 1;
    private int sent;

    /// <summary>Whether a stop text has been found (the answer ends before it).</summary>
    public bool Stopped { get; private set; }

    /// <summary>The text of the whole answer so far (without any stop text).</summary>
    public string Text => text.ToString();

    /// <summary>Adds <paramref name="token"/>; returns the text that can be sent now (possibly empty).</summary>
    public string Add(int token)
    {
        if (Stopped)
            return "";
        byte[] bytes = tokenizer.TokenBytes(token);
        var chars = new char[decoder.GetCharCount(bytes, flush: false)];
        decoder.GetChars(bytes, chars, flush: false);
        text.Append(chars);
        return Release(final: false);
    }

    /// <summary>The text held back, at the end of the answer.</summary>
    public string Flush()
    {
        if (!Stopped)
        {
            var chars = new char[decoder.GetCharCount([], flush: true)];
            decoder.GetChars([], chars, flush: true);
            text.Append(chars);
        }
        return Release(final: true);
    }

    private string Release(bool final)
    {
        if (!Stopped && stops.Count > 0)
        {
            string all = text.ToString();
            int from = Math.Max(0, sent - holdBack);
            int cut = -1;
            foreach (string stop in stops)
            {
                int at = all.IndexOf(stop, from, StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || at < cut))
                    cut = at;
            }
            if (cut >= 0)
            {
                text.Length = cut;
                Stopped = true;
            }
        }
        int end = Stopped || final ? text.Length : Math.Max(sent, text.Length - holdBack);
        // never split a surrogate pair between two sends
        if (end > sent && end < text.Length && char.IsHighSurrogate(text[end - 1]))
            end--;
        string piece = text.ToString(sent, end - sent);
        sent = end;
        return piece;
    }
}

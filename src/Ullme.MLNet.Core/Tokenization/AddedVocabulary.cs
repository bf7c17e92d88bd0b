namespace Ullme.MLNet.Tokenization;

/// <summary>A token added on top of the model vocabulary (HF <c>AddedToken</c>).</summary>
internal sealed record AddedToken(int Id, string Content, bool Special, bool Normalized = false, bool LStrip = false,
    bool RStrip = false, bool SingleWord = false);

/// <summary>
/// Finds added tokens in text before the model sees it, as HF's AddedVocabulary does: leftmost-longest matching,
/// whole-word tokens only between non-word chars, and lstrip/rstrip swallowing neighbouring whitespace.
/// Non-normalized tokens are matched in the raw text; normalized ones in each normalized piece.
/// </summary>
internal sealed class AddedTokenMatcher
{
    // First char → candidate tokens, longest first.
    private readonly Dictionary<char, AddedToken[]> _byFirstChar;
    private readonly System.Buffers.SearchValues<char> _firstChars;

    public AddedTokenMatcher(IEnumerable<(string Pattern, AddedToken Token)> tokens)
    {
        _byFirstChar = tokens.Where(t => t.Pattern.Length > 0)
            .GroupBy(t => t.Pattern[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Pattern.Length)
                .Select(t => t.Token with { Content = t.Pattern }).ToArray());
        IsEmpty = _byFirstChar.Count == 0;
        _firstChars = System.Buffers.SearchValues.Create(_byFirstChar.Keys.ToArray());
    }

    public bool IsEmpty { get; }

    /// <summary>
    /// Splits <paramref name="text"/> into segments: (start, end, token) where token is null for plain text.
    /// Segments cover the text; whitespace swallowed by lstrip/rstrip belongs to the token's segment.
    /// </summary>
    public void Split(ReadOnlySpan<char> text, List<(int Start, int End, AddedToken? Token)> segments)
    {
        segments.Clear();
        int startOffset = 0;
        int pos = 0;
        while (pos < text.Length)
        {
            // Leftmost-longest: the earliest position where any token matches, the longest token there.
            int matchStart = -1;
            AddedToken? match = null;
            for (int i = pos; i < text.Length && match is null; i++)
            {
                int skip = text[i..].IndexOfAny(_firstChars);
                if (skip < 0) break;
                i += skip;
                var candidates = _byFirstChar[text[i]];
                foreach (var t in candidates)
                {
                    if (text[i..].StartsWith(t.Content, StringComparison.Ordinal))
                    {
                        match = t;
                        matchStart = i;
                        break;
                    }
                }
            }
            if (match is null) break;
            int start = matchStart, stop = matchStart + match.Content.Length;
            pos = stop;
            if (match.SingleWord)
            {
                bool startSpace = start == 0 || !EndsWithWordChar(text[..start]);
                bool stopSpace = stop == text.Length || !StartsWithWordChar(text[stop..]);
                if (!startSpace || !stopSpace) continue;
            }
            if (match.LStrip)
            {
                int newStart = start;
                while (newStart > 0 && UnicodeClasses.IsWhiteSpace(text[newStart - 1])) newStart--;
                start = Math.Max(newStart, startOffset);
            }
            if (match.RStrip)
            {
                while (stop < text.Length && UnicodeClasses.IsWhiteSpace(text[stop])) stop++;
            }
            if (startOffset < start) segments.Add((startOffset, start, null));
            segments.Add((start, stop, match));
            startOffset = stop;
        }
        if (startOffset < text.Length || segments.Count == 0) segments.Add((startOffset, text.Length, null));
    }

    private static bool EndsWithWordChar(ReadOnlySpan<char> s)
    {
        if (s.IsEmpty) return false;
        int i = s.Length - 1;
        if (i > 0 && char.IsLowSurrogate(s[i]) && char.IsHighSurrogate(s[i - 1])) i--;
        return UnicodeClasses.IsWordChar(UnicodeClasses.CodePointAt(s, i, out _));
    }

    private static bool StartsWithWordChar(ReadOnlySpan<char> s) =>
        !s.IsEmpty && UnicodeClasses.IsWordChar(UnicodeClasses.CodePointAt(s, 0, out _));
}

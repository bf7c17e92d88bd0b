using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Ullme.MLNet.Tokenization;

/// <summary>
/// A regex that matches per Unicode code point, as HF's Oniguruma regexes do. .NET regexes see UTF-16 units, so a
/// character outside the BMP (emoji, 𝐀, 𠀀) is two "surrogate" units of category Cs, not a letter/number/symbol:
/// e.g. GPT-2's <c>[^\r\n\p{L}\p{N}]?\p{L}+</c> would not glue "😀" to the following word as HF does. When the text has
/// surrogate pairs we match on a shadow string holding one BMP character of the same Unicode category per code
/// point, then map the match offsets back.
/// </summary>
internal sealed class CodePointRegex
{
    private readonly Regex _regex;
    private readonly char[] _representative = new char[32];
    private readonly SplitPatternScanner? _scanner;

    /// <param name="pattern">The .NET regex.</param>
    /// <param name="useScanner">Use a hand-written scanner when the pattern is one it implements (GPT-2 / Qwen2 /
    /// Llama-3 splits); false forces the Regex (the tests compare the two).</param>
    public CodePointRegex(string pattern, bool useScanner = true)
    {
        Pattern = pattern;
        _scanner = useScanner ? SplitPatternScanner.TryCreate(pattern) : null;
        _regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);
        // One stand-in per general category: a non-ASCII BMP char that the pattern does not mention and whose case
        // forms are not ASCII, so only its category can influence the match.
        for (int c = 0x100; c < 0xD800; c++)
        {
            char ch = (char)c;
            var cat = (int)char.GetUnicodeCategory(ch);
            if (_representative[cat] != '\0') continue;
            if (pattern.Contains(ch) || char.ToLowerInvariant(ch) < 0x80 || char.ToUpperInvariant(ch) < 0x80) continue;
            _representative[cat] = ch;
        }
        // No BMP char is unassigned-but-safe in every Unicode version; fall back to a private-use char for the rest.
        for (int i = 0; i < _representative.Length; i++)
            if (_representative[i] == '\0') _representative[i] = '\uE000';
    }

    public string Pattern { get; }

    /// <summary>Appends the (start, end) offsets of every match in <paramref name="text"/> to <paramref name="matches"/>.</summary>
    public void FindMatches(ReadOnlySpan<char> text, List<(int Start, int End, bool IsMatch)> matches, EncodeScratch scratch)
    {
        if (_scanner is not null)
        {
            _scanner.FindMatches(text, matches);
            return;
        }
        if (text.IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            foreach (ValueMatch m in _regex.EnumerateMatches(text))
                matches.Add((m.Index, m.Index + m.Length, true));
            return;
        }
        Span<char> shadow = scratch.CharSpan(text.Length);
        Span<int> map = scratch.IntSpan(text.Length + 1);
        int n = 0;
        for (int i = 0; i < text.Length;)
        {
            int cp = UnicodeClasses.CodePointAt(text, i, out int width);
            shadow[n] = width == 1 ? text[i] : _representative[(int)CharUnicodeInfo.GetUnicodeCategory(cp)];
            map[n++] = i;
            i += width;
        }
        map[n] = text.Length;
        foreach (ValueMatch m in _regex.EnumerateMatches(shadow[..n]))
            matches.Add((map[m.Index], map[m.Index + m.Length], true));
    }
}

/// <summary>
/// The byte-level BPE split regexes, matched by hand: GPT-2's
/// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c> and the Qwen2/Qwen3 (one digit) and
/// Llama-3 (up to three digits) one,
/// <c>(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+</c>.
/// It gives exactly the matches <see cref="CodePointRegex"/> gets from .NET's backtracking Regex (per code point:
/// first alternative that matches wins, greedy runs, the backtracking of <c>\s*[\r\n]+</c> and <c>\s+(?!\S)</c>
/// written out), without the regex engine's per-match overhead. Every code point is matched by some alternative
/// (letters, numbers, "other" = not space/letter/number, spaces), so the matches tile the text. Only these exact
/// pattern strings are recognised; any other pattern runs on the Regex.
/// </summary>
internal sealed class SplitPatternScanner
{
    public const string Qwen2Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private const byte Letter = 1, Number = 2, Space = 4;

    /// <summary>Class flags of every BMP char: <c>\p{L}</c>, <c>\p{N}</c> (general category) and <c>\s</c> (.NET:
    /// char.IsWhiteSpace, i.e. [\f\n\r\t\v\x85\p{Z}]). Surrogates are category Cs: none of them.</summary>
    private static readonly byte[] s_flags = BuildFlags();

    private readonly bool _gpt2;
    private readonly int _maxDigits;

    private SplitPatternScanner(bool gpt2, int maxDigits)
    {
        _gpt2 = gpt2;
        _maxDigits = maxDigits;
    }

    public static SplitPatternScanner? TryCreate(string pattern) => pattern switch
    {
        ByteLevelPreTokenizer.Gpt2Pattern => new SplitPatternScanner(gpt2: true, maxDigits: int.MaxValue),
        Qwen2Pattern => new SplitPatternScanner(gpt2: false, maxDigits: 1),
        Llama3Pattern => new SplitPatternScanner(gpt2: false, maxDigits: 3),
        _ => null,
    };

    private static byte[] BuildFlags()
    {
        var flags = new byte[65536];
        for (int c = 0; c < 65536; c++)
        {
            char ch = (char)c;
            flags[c] = (byte)(CategoryFlags(char.GetUnicodeCategory(ch)) & ~Space | (char.IsWhiteSpace(ch) ? Space : 0));
        }
        return flags;
    }

    private static byte CategoryFlags(UnicodeCategory cat) => cat switch
    {
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Letter,
        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Number,
        UnicodeCategory.SpaceSeparator or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator => Space,
        _ => 0,
    };

    /// <summary>Flags of the code point at <paramref name="i"/>; a character outside the BMP counts by its category,
    /// as <see cref="CodePointRegex"/>'s shadow string makes it.</summary>
    private static int Flags(ReadOnlySpan<char> s, int i, out int width)
    {
        char c = s[i];
        if (!char.IsHighSurrogate(c) || i + 1 >= s.Length || !char.IsLowSurrogate(s[i + 1]))
        {
            width = 1;
            return s_flags[c];
        }
        width = 2;
        return CategoryFlags(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(c, s[i + 1])));
    }

    /// <summary>End of the run of code points whose flags satisfy <paramref name="want"/> (any of them) starting at <paramref name="i"/>.</summary>
    private static int RunOf(ReadOnlySpan<char> s, int i, int want)
    {
        while (i < s.Length && (Flags(s, i, out int w) & want) != 0) i += w;
        return i;
    }

    /// <summary>End of the run of "other" code points (not \s, \p{L}, \p{N}) starting at <paramref name="i"/>.</summary>
    private static int RunOfOther(ReadOnlySpan<char> s, int i)
    {
        while (i < s.Length && Flags(s, i, out int w) == 0) i += w;
        return i;
    }

    public void FindMatches(ReadOnlySpan<char> text, List<(int Start, int End, bool IsMatch)> matches)
    {
        for (int i = 0; i < text.Length;)
        {
            int end = _gpt2 ? MatchGpt2(text, i) : MatchQwen2(text, i);
            matches.Add((i, end, true));
            i = end;
        }
    }

    /// <summary>Length of the contraction <c>'s|'t|'re|'ve|'m|'ll|'d</c> at <paramref name="i"/> (0 if none).</summary>
    private static int Contraction(ReadOnlySpan<char> s, int i, bool ignoreCase)
    {
        if (s[i] != '\'' || i + 1 >= s.Length) return 0;
        int fold = ignoreCase ? 0x20 : 0; // ASCII letters only: .NET's invariant case folding adds no other char for these
        int a = s[i + 1] | fold;
        if (a is 's' or 't' or 'm' or 'd') return 2;
        if (i + 2 >= s.Length) return 0;
        int b = s[i + 2] | fold;
        return (a is 'r' or 'v') && b == 'e' || a == 'l' && b == 'l' ? 3 : 0;
    }

    private int MatchQwen2(ReadOnlySpan<char> s, int i)
    {
        int k = Contraction(s, i, ignoreCase: true);
        if (k > 0) return i + k;
        char c0 = s[i];
        int f0 = Flags(s, i, out int w0);
        int j = i + w0;
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if ((f0 & Letter) != 0) return RunOf(s, j, Letter);
        if ((f0 & Number) == 0 && c0 != '\r' && c0 != '\n' && j < s.Length && (Flags(s, j, out _) & Letter) != 0)
            return RunOf(s, j, Letter);
        // \p{N} or \p{N}{1,3}
        if ((f0 & Number) != 0)
        {
            for (int d = 1; d < _maxDigits && j < s.Length && (Flags(s, j, out int w) & Number) != 0; d++) j += w;
            return j;
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        int p = f0 == 0 ? i : c0 == ' ' && j < s.Length && Flags(s, j, out _) == 0 ? j : -1;
        if (p >= 0)
        {
            int e = RunOfOther(s, p);
            while (e < s.Length && s[e] is '\r' or '\n') e++;
            return e;
        }
        // c0 is a space. \s*[\r\n]+: the space run, given back down to just after its last \r or \n.
        int spaceEnd = RunOf(s, i, Space);
        int lastBreak = s[i..spaceEnd].LastIndexOfAny('\r', '\n');
        if (lastBreak >= 0) return i + lastBreak + 1;
        return SpaceTail(s, i, spaceEnd);
    }

    private static int MatchGpt2(ReadOnlySpan<char> s, int i)
    {
        int k = Contraction(s, i, ignoreCase: false);
        if (k > 0) return i + k;
        int f0 = Flags(s, i, out int w0);
        int j = i + w0;
        //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ : an optional leading space, then a run of one class.
        int p = i, f = f0;
        if (s[i] == ' ' && j < s.Length)
        {
            int f1 = Flags(s, j, out _);
            if ((f1 & Space) == 0)
            {
                p = j;
                f = f1;
            }
        }
        if ((f & Letter) != 0) return RunOf(s, p, Letter);
        if ((f & Number) != 0) return RunOf(s, p, Number);
        if (f == 0) return RunOfOther(s, p);
        return SpaceTail(s, i, RunOf(s, i, Space));
    }

    /// <summary><c>\s+(?!\S)|\s+</c> on the space run [i, spaceEnd): all of it at the end of the text, else all but
    /// its last char (which then leads the next word) unless that leaves nothing.</summary>
    private static int SpaceTail(ReadOnlySpan<char> s, int i, int spaceEnd) =>
        spaceEnd == s.Length || spaceEnd - i == 1 ? spaceEnd : spaceEnd - 1;
}

/// <summary>How a split treats the matched delimiters (HF <c>SplitDelimiterBehavior</c>).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>
/// One HF pre-tokenizer. HF pre-tokenizers both split and transform text (ByteLevel maps bytes to chars, Metaspace
/// replaces spaces), which Microsoft.ML.Tokenizers' offsets-only <c>PreTokenizer</c> cannot express, so these are ours.
/// </summary>
internal abstract class PreTokenizerStep
{
    /// <summary>Splits one piece into <paramref name="output"/>.</summary>
    public abstract void Split(ReadOnlySpan<char> piece, bool atOrigin, PieceList output, EncodeScratch scratch);

    /// <summary>Applies HF's split-behaviour rules to a full cover of <paramref name="piece"/> by match/non-match parts.</summary>
    protected static void Emit(ReadOnlySpan<char> piece, bool atOrigin, List<(int Start, int End, bool IsMatch)> cover,
        SplitBehavior behavior, PieceList output, List<(int Start, int End, bool IsMatch)> parts)
    {
        parts.Clear();
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                parts.AddRange(cover);
                break;
            case SplitBehavior.Removed:
                foreach (var p in cover) if (!p.IsMatch) parts.Add(p);
                break;
            case SplitBehavior.MergedWithPrevious:
            {
                bool previousMatch = false;
                foreach (var p in cover)
                {
                    if (p.IsMatch && !previousMatch && parts.Count > 0)
                        parts[^1] = (parts[^1].Start, p.End, false);
                    else parts.Add(p);
                    previousMatch = p.IsMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                bool previousMatch = false;
                for (int i = cover.Count - 1; i >= 0; i--)
                {
                    var p = cover[i];
                    if (p.IsMatch && !previousMatch && parts.Count > 0)
                        parts[^1] = (p.Start, parts[^1].End, false);
                    else parts.Add(p);
                    previousMatch = p.IsMatch;
                }
                parts.Reverse();
                break;
            }
            case SplitBehavior.Contiguous:
            {
                bool previousMatch = false;
                foreach (var p in cover)
                {
                    if (p.IsMatch == previousMatch && parts.Count > 0)
                        parts[^1] = (parts[^1].Start, p.End, false);
                    else parts.Add(p);
                    previousMatch = p.IsMatch;
                }
                break;
            }
        }
        foreach (var p in parts)
            output.Add(piece[p.Start..p.End], atOrigin && p.Start == 0);
    }

    /// <summary>Turns a list of matches into a full cover (HF <c>find_matches</c>), optionally inverted.</summary>
    protected static void Cover(List<(int Start, int End, bool IsMatch)> matches, int length, bool invert,
        List<(int Start, int End, bool IsMatch)> cover)
    {
        cover.Clear();
        if (length == 0)
        {
            cover.Add((0, 0, invert));
            return;
        }
        int prev = 0;
        foreach (var m in matches)
        {
            if (prev != m.Start) cover.Add((prev, m.Start, invert));
            cover.Add((m.Start, m.End, !invert));
            prev = m.End;
        }
        if (prev != length) cover.Add((prev, length, invert));
    }
}

/// <summary>Applies several pre-tokenizers in order.</summary>
internal sealed class SequencePreTokenizer(IReadOnlyList<PreTokenizerStep> steps) : PreTokenizerStep
{
    public IReadOnlyList<PreTokenizerStep> Steps { get; } = steps;

    public override void Split(ReadOnlySpan<char> piece, bool atOrigin, PieceList output, EncodeScratch scratch) =>
        throw new InvalidOperationException("SequencePreTokenizer is flattened by the pipeline.");
}

/// <summary>HF <c>Split</c>: split on a regex (or literal string) with a delimiter behaviour, optionally inverted.</summary>
internal sealed class RegexSplitPreTokenizer(CodePointRegex regex, SplitBehavior behavior, bool invert) : PreTokenizerStep
{
    public override void Split(ReadOnlySpan<char> piece, bool atOrigin, PieceList output, EncodeScratch scratch)
    {
        // The pipeline runs steps one after another, so Matches/Parts are free here.
        var matches = scratch.Matches;
        matches.Clear();
        regex.FindMatches(piece, matches, scratch);
        var cover = scratch.Cover;
        Cover(matches, piece.Length, invert, cover);
        Emit(piece, atOrigin, cover, behavior, output, scratch.Parts);
    }
}

/// <summary>Splits on single characters chosen by a predicate (HF char-pattern splits: whitespace, punctuation, digits).</summary>
internal sealed class CharSplitPreTokenizer(Func<int, bool> isDelimiter, SplitBehavior behavior) : PreTokenizerStep
{
    public override void Split(ReadOnlySpan<char> piece, bool atOrigin, PieceList output, EncodeScratch scratch)
    {
        var matches = scratch.Matches;
        matches.Clear();
        for (int i = 0; i < piece.Length;)
        {
            int cp = UnicodeClasses.CodePointAt(piece, i, out int width);
            if (isDelimiter(cp)) matches.Add((i, i + width, true));
            i += width;
        }
        if (matches.Count == 0)
        {
            output.Add(piece, atOrigin);
            return;
        }
        var cover = scratch.Cover;
        Cover(matches, piece.Length, invert: false, cover);
        Emit(piece, atOrigin, cover, behavior, output, scratch.Parts);
    }
}

/// <summary>
/// HF <c>BertPreTokenizer</c>: split on whitespace (removed), then isolate every punctuation character. Written out
/// because Microsoft.ML.Tokenizers' BERT pre-tokenizer drops <c>$ + &lt; = &gt; ^ ` | ~</c> and keeps <c>_</c> inside words.
/// </summary>
internal sealed class BertPreTokenizer : PreTokenizerStep
{
    public override void Split(ReadOnlySpan<char> piece, bool atOrigin, PieceList output, EncodeScratch scratch)
    {
        int wordStart = -1;
        for (int i = 0; i < piece.Length;)
        {
            int cp = UnicodeClasses.CodePointAt(piece, i, out int width);
            if (UnicodeClasses.IsWhiteSpace(cp))
            {
                if (wordStart >= 0) output.Add(piece[wordStart..i], atOrigin && wordStart == 0);
                wordStart = -1;
            }
            else if (UnicodeClasses.IsBertPunctuation(cp))
            {
                if (wordStart >= 0) output.Add(piece[wordStart..i], atOrigin && wordStart == 0);
                output.Add(piece.Slice(i, width), atOrigin && i == 0);
                wordStart = -1;
            }
            else if (wordStart < 0) wordStart = i;
            i += width;
        }
        if (wordStart >= 0) output.Add(piece[wordStart..], atOrigin && wordStart == 0);
    }
}

/// <summary>
/// HF <c>ByteLevel</c> pre-tokenizer: optional prefix space, optional GPT-2 regex split, then every UTF-8 byte is
/// mapped to a printable char (GPT-2's bytes_to_unicode table), the alphabet byte-level BPE vocabularies use.
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizerStep
{
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly CodePointRegex s_gpt2 = new(Gpt2Pattern);

    /// <summary>byte → char of GPT-2's reversible byte-to-unicode table.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>char → byte (or -1) for decoding.</summary>
    public static readonly short[] CharToByte = BuildCharToByte();

    private static char[] BuildByteToChar()
    {
        var table = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is (>= '!' and <= '~') or (>= 0xA1 and <= 0xAC) or (>= 0xAE and <= 0xFF);
            table[b] = printable ? (char)b : (char)(256 + n++);
        }
        return table;
    }

    private static short[] BuildCharToByte()
    {
        var table = new short[512];
        Array.Fill(table, (short)-1);
        for (int b = 0; b < 256; b++) table[ByteToChar[b]] = (short)b;
        return table;
    }

    public override void Split(ReadOnlySpan<char> piece, bool atOrigin, PieceList output, EncodeScratch scratch)
    {
        if (addPrefixSpace && (piece.IsEmpty || piece[0] != ' '))
        {
            // Prepend a space: build " " + piece in scratch and split that.
            var buf = new char[piece.Length + 1];
            buf[0] = ' ';
            piece.CopyTo(buf.AsSpan(1));
            SplitCore(buf, atOrigin, output, scratch);
        }
        else SplitCore(piece, atOrigin, output, scratch);
    }

    private void SplitCore(ReadOnlySpan<char> piece, bool atOrigin, PieceList output, EncodeScratch scratch)
    {
        if (!useRegex)
        {
            AddMapped(piece, atOrigin, output, scratch);
            return;
        }
        var matches = scratch.Matches;
        matches.Clear();
        s_gpt2.FindMatches(piece, matches, scratch);
        int prev = 0;
        // Isolated split: matches and the gaps between them are all pieces.
        foreach (var (start, end, _) in matches)
        {
            if (start > prev) AddMapped(piece[prev..start], atOrigin && prev == 0, output, scratch);
            AddMapped(piece[start..end], atOrigin && start == 0, output, scratch);
            prev = end;
        }
        if (prev < piece.Length) AddMapped(piece[prev..], atOrigin && prev == 0, output, scratch);
    }

    /// <summary>Appends the byte-level form of <paramref name="text"/> as one piece.</summary>
    public static void AddMapped(ReadOnlySpan<char> text, bool atOrigin, PieceList output, EncodeScratch scratch)
    {
        if (text.IsEmpty) return;
        int max = Encoding.UTF8.GetMaxByteCount(text.Length);
        Span<byte> bytes = scratch.ByteSpan(max);
        int n = Encoding.UTF8.GetBytes(text, bytes);
        Span<char> dest = output.Reserve(n);
        for (int i = 0; i < n; i++) dest[i] = ByteToChar[bytes[i]];
        output.Commit(n, atOrigin);
    }
}

/// <summary>
/// HF <c>Metaspace</c>: spaces become the replacement char (▁), a ▁ is prepended per the prepend scheme, and the text
/// is optionally split before each ▁.
/// </summary>
internal sealed class MetaspacePreTokenizer(char replacement, string prependScheme, bool split) : PreTokenizerStep
{
    public override void Split(ReadOnlySpan<char> piece, bool atOrigin, PieceList output, EncodeScratch scratch)
    {
        bool prepend = prependScheme switch
        {
            "always" => piece.IsEmpty || piece[0] != replacement && piece[0] != ' ',
            "first" => atOrigin && (piece.IsEmpty || piece[0] != replacement && piece[0] != ' '),
            _ => false,
        };
        int length = piece.Length + (prepend ? 1 : 0);
        Span<char> text = scratch.CharSpan(length);
        int k = 0;
        if (prepend) text[k++] = replacement;
        foreach (char c in piece) text[k++] = c == ' ' ? replacement : c;
        if (!split)
        {
            output.Add(text, atOrigin);
            return;
        }
        // MergedWithNext on each ▁: every ▁ starts a new piece (a run of ▁ leaves single ▁ pieces before the last).
        int start = 0;
        for (int i = 1; i < text.Length; i++)
        {
            if (text[i] == replacement)
            {
                output.Add(text[start..i], atOrigin && start == 0);
                start = i;
            }
        }
        output.Add(text[start..], atOrigin && start == 0);
    }
}

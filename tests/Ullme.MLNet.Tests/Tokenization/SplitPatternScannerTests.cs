using System.Text;
using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Tests.Tokenization;

/// <summary>
/// The hand-written scanner for the GPT-2 / Qwen2 / Llama-3 split regexes must give exactly the matches of .NET's
/// Regex on the same pattern (what <see cref="CodePointRegex"/> produced before, and what the HF-equality tests
/// check against HF): on generated strings mixing the tricky classes, on hand-picked edge cases, and with every BMP
/// character in several contexts (so the class tables agree with the Regex's \p{L}, \p{N}, \s for all of them).
/// </summary>
public sealed class SplitPatternScannerTests
{
    public static TheoryData<string> Patterns => new()
    {
        ByteLevelPreTokenizer.Gpt2Pattern,
        SplitPatternScanner.Qwen2Pattern,
        SplitPatternScanner.Llama3Pattern,
    };

    /// <summary>Pieces the generator strings together: each class the patterns distinguish, contractions in both
    /// cases, CR/LF runs, Unicode spaces, letters/numbers/marks outside ASCII, surrogate pairs and a lone surrogate.</summary>
    private static readonly string[] Alphabet =
    [
        "a", "Z", "x", "s", "t", "re", "ve", "m", "ll", "d", "S", "T", "RE", "Ve", "LL", "D", "'", "'", "'",
        "0", "7", "42", "٣", "½", "Ⅻ", "²",
        " ", " ", " ", "  ", "\t", "\r", "\n", "\r\n", "\v", "\f", "\u0085", "\u00A0", "\u2003", "\u3000", "\u2028", "\u1680",
        "é", "ß", "Ж", "中", "ا", "\u0301", "\u0903", "\u200D", "\u200B", "ǅ", "ʰ",
        "!", ".", ",", "-", "_", "$", "€", "(", "\"", "«", "…", "\u0000", "\u007F",
        "😀", "👍🏽", "𝐀", "𠀀", "𝟘", "\U000E0001", "\uD800", "\uDC00",
    ];

    private static readonly string[] EdgeCases =
    [
        "", " ", "  ", "\n", "\r\n", " \r\n ", "a  b", "a \n b", "a\t\tb", "  \n\n  x", "x  ", "x \n", "'s", "'S", "'re",
        "'RE", "'rE", "'ll", "'l", "'r", "'", "''s", "don't", "DON'T", "I'm", "we'Ve", " 's", "x's", "!'s", "12345",
        "1234567", " 123", "a1b2", "3.14", "😀😀 x", " 😀", "𝐀𝐁c", "e\u0301t", " \u0301x", "\u00A0x", "\u3000中文",
        "a\u2028b", "!!\r\n\r\nx", "?? \n", "x\n\n", "\n\n\n", " \t\n \tx", "\uD800x", "x\uDC00 y",
    ];

    [Theory]
    [MemberData(nameof(Patterns))]
    public void Scanner_IsUsedForTheKnownPattern(string pattern) =>
        Assert.NotNull(SplitPatternScanner.TryCreate(pattern));

    [Fact]
    public void Scanner_IsNotUsedForAnyOtherPattern()
    {
        Assert.Null(SplitPatternScanner.TryCreate(@"\s+"));
        Assert.Null(SplitPatternScanner.TryCreate(SplitPatternScanner.Qwen2Pattern.Replace("\\p{N}|", "\\p{N}{1,2}|")));
        Assert.Null(SplitPatternScanner.TryCreate(ByteLevelPreTokenizer.Gpt2Pattern + "|x"));
    }

    [Theory]
    [MemberData(nameof(Patterns))]
    public void Scanner_EqualsRegex_OnEdgeCases(string pattern)
    {
        foreach (string text in EdgeCases) AssertSameMatches(pattern, text);
    }

    [Theory]
    [MemberData(nameof(Patterns))]
    public void Scanner_EqualsRegex_OnGeneratedStrings(string pattern)
    {
        var random = new Random(20261127);
        var sb = new StringBuilder();
        for (int n = 0; n < 4000; n++)
        {
            sb.Clear();
            int pieces = random.Next(0, 24);
            for (int k = 0; k < pieces; k++) sb.Append(Alphabet[random.Next(Alphabet.Length)]);
            AssertSameMatches(pattern, sb.ToString());
        }
    }

    [Theory]
    [MemberData(nameof(Patterns))]
    public void Scanner_EqualsRegex_ForEveryBmpCharacterInContext(string pattern)
    {
        // Each char next to letters, digits, spaces, line breaks, an apostrophe and itself; 256 chars per string.
        var sb = new StringBuilder();
        for (int block = 0; block < 65536; block += 256)
        {
            sb.Clear();
            for (int c = block; c < block + 256; c++)
            {
                if (c is >= 0xD800 and <= 0xDFFF) continue; // lone surrogates: covered by the generated strings
                char ch = (char)c;
                sb.Append(ch).Append('a').Append(' ').Append(ch).Append('1').Append(ch).Append(ch).Append('\'')
                    .Append(ch).Append("\n").Append(ch).Append("  ").Append(ch).Append(" x");
            }
            AssertSameMatches(pattern, sb.ToString());
        }
    }

    private static void AssertSameMatches(string pattern, string text)
    {
        var scratch = new EncodeScratch();
        var expected = new List<(int Start, int End, bool IsMatch)>();
        Get(pattern, useScanner: false).FindMatches(text, expected, scratch);
        var actual = new List<(int Start, int End, bool IsMatch)>();
        Get(pattern, useScanner: true).FindMatches(text, actual, scratch);
        if (expected.SequenceEqual(actual)) return;
        int i = 0;
        while (i < Math.Min(expected.Count, actual.Count) && expected[i] == actual[i]) i++;
        string Show(List<(int Start, int End, bool IsMatch)> m) => i < m.Count ? $"[{m[i].Start},{m[i].End}) '{Escape(text[m[i].Start..m[i].End])}'" : "none";
        Assert.Fail($"pattern {pattern}\ntext '{Escape(text)}'\nmatch #{i}: regex {Show(expected)}, scanner {Show(actual)}");
    }

    private static readonly Dictionary<(string, bool), CodePointRegex> s_regexes = new();

    private static CodePointRegex Get(string pattern, bool useScanner)
    {
        lock (s_regexes)
        {
            if (!s_regexes.TryGetValue((pattern, useScanner), out var r))
                s_regexes[(pattern, useScanner)] = r = new CodePointRegex(pattern, useScanner);
            return r;
        }
    }

    private static string Escape(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s) sb.Append(c is >= ' ' and < '\u007F' ? c.ToString() : $"\\u{(int)c:X4}");
        return sb.ToString();
    }
}

using System.Text;
using Ullme.MLNet.Tokenization;
using HfTokenizer = Tokenizers.DotNet.Tokenizer;

namespace Ullme.MLNet.Tests.Tokenization;

/// <summary>Compares our tokenizer with HF's Rust tokenizers (Tokenizers.DotNet) text by text.</summary>
public static class TokenizerComparison
{
    /// <summary>
    /// Encodes every text with both (with and without special tokens, the latter against a reference whose
    /// post-processor was removed) and decodes HF's ids with both. Returns one line per difference.
    /// </summary>
    public static List<string> Compare(ITextTokenizer ours, HfTokenizer reference, HfTokenizer? referenceWithoutSpecials,
        IEnumerable<string> texts, bool compareDecode = true)
    {
        var failures = new List<string>();
        foreach (string text in texts)
        {
            int[] expected = reference.Encode(text).Select(i => (int)i).ToArray();
            int[] actual = ours.Encode(text).ToArray();
            if (!expected.SequenceEqual(actual)) failures.Add("ids " + Describe(ours, text, expected, actual));
            if (referenceWithoutSpecials is not null)
            {
                int[] expectedPlain = referenceWithoutSpecials.Encode(text).Select(i => (int)i).ToArray();
                int[] actualPlain = ours.Encode(text, addSpecialTokens: false).ToArray();
                if (!expectedPlain.SequenceEqual(actualPlain)) failures.Add("ids without specials " + Describe(ours, text, expectedPlain, actualPlain));
            }
            if (compareDecode)
            {
                string expectedText = reference.Decode(expected.Select(i => (uint)i).ToArray());
                string actualText = ours.Decode(expected);
                if (expectedText != actualText)
                    failures.Add($"decode of {Escape(text)}: HF {Escape(expectedText)} ours {Escape(actualText)}");
            }
        }
        return failures;
    }

    public static string Report(List<string> failures, int total) =>
        $"{failures.Count} differences over {total} texts:\n" + string.Join("\n", failures.Take(8));

    private static string Describe(ITextTokenizer ours, string text, int[] expected, int[] actual)
    {
        int first = 0;
        while (first < expected.Length && first < actual.Length && expected[first] == actual[first]) first++;
        string Around(int[] ids) => string.Join(",", ids.Skip(Math.Max(0, first - 2)).Take(6)
            .Select(i => ours is HuggingFaceTokenizer h ? $"{i}:{Escape(h.IdToToken(i) ?? "?")}" : i.ToString()));
        return $"differ at {first} for {Escape(text.Length > 120 ? text[..120] + "…" : text)}\n    HF   [{Around(expected)}] ({expected.Length})\n    ours [{Around(actual)}] ({actual.Length})";
    }

    public static string Escape(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in s)
        {
            if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (c < 0x20 || char.IsSurrogate(c) || c is '\u200B' or '\u200F' or '\u00AD' or '\uFFFD') sb.Append($"\\u{(int)c:X4}");
            else sb.Append(c);
        }
        return sb.Append('"').ToString();
    }
}

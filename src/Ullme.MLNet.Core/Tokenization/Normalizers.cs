using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using MlNormalizer = Microsoft.ML.Tokenizers.Normalizer;

namespace Ullme.MLNet.Tokenization;

/// <summary>
/// An HF normalizer as a Microsoft.ML.Tokenizers <see cref="MlNormalizer"/> (so it can be plugged into ML.NET
/// tokenizers too). The library has only lower/upper-case and SentencePiece normalizers, so the HF ones are ours.
/// </summary>
internal abstract class HfNormalizer : MlNormalizer
{
    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());

    /// <summary>True when this normalizer needs ICU's Unicode normalisation (NFC/NFD/NFKC/NFKD).</summary>
    public virtual bool NeedsUnicodeNormalization => false;

    /// <summary>
    /// Under .NET invariant globalization (no ICU) string.Normalize silently does nothing, which would give wrong ids
    /// (accented words become [UNK]); fail loudly instead.
    /// </summary>
    public static void EnsureUnicodeNormalizationWorks(string file)
    {
        bool works;
        try
        {
            works = "\u00E9".Normalize(NormalizationForm.FormD) == "e\u0301" && "e\u0301".Normalize(NormalizationForm.FormC) == "\u00E9";
        }
        catch (PlatformNotSupportedException)
        {
            works = false;
        }
        if (!works)
            throw new UllmeException(
                $"The tokenizer in '{file}' needs Unicode normalisation, but this process runs with invariant globalization " +
                "(no ICU), where string.Normalize does nothing. Install ICU (libicu) and do not set InvariantGlobalization / " +
                "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT.");
    }
}

internal sealed class UnicodeFormNormalizer(NormalizationForm form) : HfNormalizer
{
    public override bool NeedsUnicodeNormalization => true;

    public override string Normalize(string original)
    {
        // ASCII is invariant under every normalisation form.
        if (System.Text.Ascii.IsValid(original)) return original;
        return original.IsNormalized(form) ? original : original.Normalize(form);
    }
}

/// <summary>HF <c>Lowercase</c>: Rust's full per-char lowercase mapping (İ → i̇), no final-sigma rule.</summary>
internal sealed class LowercaseNormalizer : HfNormalizer
{
    public override string Normalize(string original) => Lower(original);

    public static string Lower(string s)
    {
        if (s.Contains('\u0130')) s = s.Replace("\u0130", "i\u0307");
        return s.ToLowerInvariant();
    }
}

internal sealed class PrependNormalizer(string prepend) : HfNormalizer
{
    public override string Normalize(string original) => original.Length == 0 ? original : prepend + original;
}

internal sealed class ReplaceNormalizer : HfNormalizer
{
    private readonly string? _literal;
    private readonly Regex? _regex;
    private readonly string _content;

    public ReplaceNormalizer(string? literal, string? regex, string content)
    {
        _literal = literal;
        _regex = regex is null ? null : new Regex(regex, RegexOptions.Compiled | RegexOptions.CultureInvariant);
        _content = content;
    }

    public override string Normalize(string original)
    {
        if (_literal is not null) return _literal.Length == 0 ? original : original.Replace(_literal, _content, StringComparison.Ordinal);
        return _regex!.Replace(original, _content.Replace("$", "$$"));
    }
}

internal sealed class StripNormalizer(bool left, bool right) : HfNormalizer
{
    public override string Normalize(string original)
    {
        int start = 0, end = original.Length;
        if (left) while (start < end && UnicodeClasses.IsWhiteSpace(original[start])) start++;
        if (right) while (end > start && UnicodeClasses.IsWhiteSpace(original[end - 1])) end--;
        return start == 0 && end == original.Length ? original : original[start..end];
    }
}

/// <summary>HF <c>StripAccents</c>: removes non-spacing marks (Mn); no decomposition of its own.</summary>
internal sealed class StripAccentsNormalizer : HfNormalizer
{
    public override string Normalize(string original) => RemoveNonSpacingMarks(original);

    public static string RemoveNonSpacingMarks(string s)
    {
        if (System.Text.Ascii.IsValid(s)) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length;)
        {
            int cp = UnicodeClasses.CodePointAt(s, i, out int width);
            if (CharUnicodeInfo.GetUnicodeCategory(cp) != UnicodeCategory.NonSpacingMark) sb.Append(s, i, width);
            i += width;
        }
        return sb.ToString();
    }
}

internal sealed class SequenceNormalizer(IReadOnlyList<HfNormalizer> steps) : HfNormalizer
{
    public override bool NeedsUnicodeNormalization => steps.Any(s => s.NeedsUnicodeNormalization);

    public override string Normalize(string original)
    {
        foreach (var step in steps) original = step.Normalize(original);
        return original;
    }
}

/// <summary>
/// HF <c>BertNormalizer</c> (= transformers' BasicTokenizer text cleaning): drop U+0000, U+FFFD and control/format/
/// unassigned/private-use chars; every whitespace (incl. \t \n \r) becomes a space; CJK ideographs get spaces around
/// them; accents are stripped (NFD, drop Mn) when lowercasing unless strip_accents says otherwise; then lowercase.
/// Ours because Microsoft.ML.Tokenizers' BertTokenizer normalisation differs from HF's (see platform notes).
/// </summary>
internal sealed class BertNormalizer(bool cleanText, bool handleChineseChars, bool? stripAccents, bool lowercase) : HfNormalizer
{
    private readonly bool _strip = stripAccents ?? lowercase;

    public override bool NeedsUnicodeNormalization => _strip;

    public override string Normalize(string original)
    {
        string s = original;
        if (cleanText || handleChineseChars) s = CleanAndSpace(s);
        if (_strip && !System.Text.Ascii.IsValid(s))
            s = StripAccentsNormalizer.RemoveNonSpacingMarks(s.Normalize(NormalizationForm.FormD));
        if (lowercase) s = LowercaseNormalizer.Lower(s);
        return s;
    }

    private string CleanAndSpace(string s)
    {
        // Fast path: printable ASCII without anything to clean.
        bool plain = true;
        foreach (char c in s)
        {
            if (c < 0x20 || c >= 0x7F) { plain = false; break; }
        }
        if (plain) return s;

        var sb = new StringBuilder(s.Length + 16);
        for (int i = 0; i < s.Length;)
        {
            int cp = UnicodeClasses.CodePointAt(s, i, out int width);
            i += width;
            if (cleanText)
            {
                if (cp == 0 || cp == 0xFFFD || IsControl(cp)) continue;
                if (cp is '\t' or '\n' or '\r' || UnicodeClasses.IsWhiteSpace(cp))
                {
                    sb.Append(' ');
                    continue;
                }
            }
            if (handleChineseChars && UnicodeClasses.IsChineseChar(cp))
            {
                sb.Append(' ');
                sb.Append(s, i - width, width);
                sb.Append(' ');
            }
            else sb.Append(s, i - width, width);
        }
        return sb.ToString();
    }

    /// <summary>Categories C* (control, format, unassigned, private use), except \t \n \r which count as whitespace.</summary>
    private static bool IsControl(int cp)
    {
        if (cp is '\t' or '\n' or '\r') return false;
        return CharUnicodeInfo.GetUnicodeCategory(cp) is UnicodeCategory.Control or UnicodeCategory.Format
            or UnicodeCategory.OtherNotAssigned or UnicodeCategory.PrivateUse or UnicodeCategory.Surrogate;
    }
}

using System.Globalization;
using System.Text;

namespace Ullme.MLNet.Tokenization;

/// <summary>
/// Pieces of text produced by pre-tokenization. Every piece is a slice of one growing char buffer, so splitting a
/// text into words allocates nothing once the buffers have grown (one list per thread, reused across calls).
/// </summary>
internal sealed class PieceList
{
    public char[] Buffer = new char[512];
    public int Used;
    public Piece[] Pieces = new Piece[64];
    public int Count;

    public void Clear()
    {
        Used = 0;
        Count = 0;
    }

    public ReadOnlySpan<char> this[int index] => Buffer.AsSpan(Pieces[index].Start, Pieces[index].Length);

    /// <summary>Appends a piece (empty pieces are dropped, as HF drops empty splits).</summary>
    public void Add(ReadOnlySpan<char> text, bool atOrigin)
    {
        if (text.IsEmpty) return;
        Span<char> dest = Reserve(text.Length);
        text.CopyTo(dest);
        Commit(text.Length, atOrigin);
    }

    /// <summary>Room for <paramref name="length"/> chars at the end of the buffer; finish with <see cref="Commit"/>.</summary>
    public Span<char> Reserve(int length)
    {
        if (Used + length > Buffer.Length)
            Array.Resize(ref Buffer, Math.Max(Buffer.Length * 2, Used + length));
        return Buffer.AsSpan(Used, length);
    }

    /// <summary>Turns the first <paramref name="length"/> reserved chars into a piece.</summary>
    public void Commit(int length, bool atOrigin)
    {
        if (length == 0) return;
        if (Count == Pieces.Length) Array.Resize(ref Pieces, Pieces.Length * 2);
        Pieces[Count++] = new Piece(Used, length, atOrigin);
        Used += length;
    }
}

/// <summary>A slice of <see cref="PieceList.Buffer"/>; <c>AtOrigin</c> is true when the piece starts at offset 0 of the
/// original text (Metaspace prepend_scheme "first").</summary>
internal readonly record struct Piece(int Start, int Length, bool AtOrigin);

/// <summary>Per-thread working memory of one Encode call; tokenizers are shared between threads, scratch is not.</summary>
internal sealed class EncodeScratch
{
    [ThreadStatic] private static EncodeScratch? t_current;

    public static EncodeScratch Current => t_current ??= new EncodeScratch();

    public readonly PieceList A = new();
    public readonly PieceList B = new();
    public readonly List<(int Start, int End, bool IsMatch)> Matches = new();
    public readonly List<(int Start, int End, bool IsMatch)> Parts = new();
    public readonly List<(int Start, int End, bool IsMatch)> Cover = new();
    public char[] Chars = new char[256];
    public int[] Ints = new int[256];
    public byte[] Bytes = new byte[256];

    public Span<char> CharSpan(int length)
    {
        if (Chars.Length < length) Chars = new char[Math.Max(length, Chars.Length * 2)];
        return Chars.AsSpan(0, length);
    }

    public Span<int> IntSpan(int length)
    {
        if (Ints.Length < length) Ints = new int[Math.Max(length, Ints.Length * 2)];
        return Ints.AsSpan(0, length);
    }

    public Span<byte> ByteSpan(int length)
    {
        if (Bytes.Length < length) Bytes = new byte[Math.Max(length, Bytes.Length * 2)];
        return Bytes.AsSpan(0, length);
    }
}

/// <summary>Character classes exactly as HF's Rust tokenizers define them (code-point based, not UTF-16 based).</summary>
internal static class UnicodeClasses
{
    /// <summary>Rust <c>char::is_whitespace</c> (the Unicode White_Space property).</summary>
    public static bool IsWhiteSpace(int cp) => cp switch
    {
        >= 0x09 and <= 0x0D => true,
        0x20 or 0x85 or 0xA0 or 0x1680 or 0x2028 or 0x2029 or 0x202F or 0x205F or 0x3000 => true,
        >= 0x2000 and <= 0x200A => true,
        _ => false,
    };

    public static UnicodeCategory Category(int cp) => CharUnicodeInfo.GetUnicodeCategory(cp);

    /// <summary>Unicode general category P* (Rust unicode_categories <c>is_punctuation</c>).</summary>
    public static bool IsPunctuation(int cp) => Category(cp) is UnicodeCategory.ConnectorPunctuation
        or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation
        or UnicodeCategory.InitialQuotePunctuation or UnicodeCategory.FinalQuotePunctuation
        or UnicodeCategory.OtherPunctuation;

    /// <summary>BERT's punctuation: ASCII 33-47, 58-64, 91-96, 123-126, plus every Unicode P* character.</summary>
    public static bool IsBertPunctuation(int cp) =>
        cp is (>= 33 and <= 47) or (>= 58 and <= 64) or (>= 91 and <= 96) or (>= 123 and <= 126) || (cp > 127 && IsPunctuation(cp));

    /// <summary>Rust <c>char::is_numeric</c>: categories Nd, Nl, No.</summary>
    public static bool IsNumeric(int cp) => Category(cp) is UnicodeCategory.DecimalDigitNumber
        or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    /// <summary>The regex crate's <c>\w</c>: letters, marks, decimal digits, connector punctuation, letter numbers, joiners.</summary>
    public static bool IsWordChar(int cp)
    {
        if (cp is 0x200C or 0x200D) return true;
        return Category(cp) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
            or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter
            or UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.ConnectorPunctuation or UnicodeCategory.LetterNumber;
    }

    /// <summary>BERT's "Chinese character": the CJK ideograph blocks listed in HF's BertNormalizer.</summary>
    public static bool IsChineseChar(int cp) => cp is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF)
        or (>= 0x20000 and <= 0x2A6DF) or (>= 0x2A700 and <= 0x2B73F) or (>= 0x2B740 and <= 0x2B81F)
        or (>= 0x2B920 and <= 0x2CEAF) or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);

    /// <summary>Reads the code point at <paramref name="i"/>; <paramref name="width"/> is 1 or 2 UTF-16 units.</summary>
    public static int CodePointAt(ReadOnlySpan<char> s, int i, out int width)
    {
        char c = s[i];
        if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
        {
            width = 2;
            return char.ConvertToUtf32(c, s[i + 1]);
        }
        width = 1;
        return c;
    }

    /// <summary>Replaces unpaired surrogates (which no UTF-8 based tokenizer can see) with U+FFFD.</summary>
    public static string ReplaceLoneSurrogates(string text)
    {
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0) return text;
        StringBuilder? sb = null;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            bool lone = char.IsHighSurrogate(c) ? !(i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                : char.IsLowSurrogate(c) && !(i > 0 && char.IsHighSurrogate(text[i - 1]));
            if (lone)
            {
                sb ??= new StringBuilder(text, 0, i, text.Length);
                sb.Append('\uFFFD');
            }
            else sb?.Append(c);
        }
        return sb?.ToString() ?? text;
    }
}

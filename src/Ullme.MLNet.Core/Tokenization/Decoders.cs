using System.Text;
using System.Text.RegularExpressions;

namespace Ullme.MLNet.Tokenization;

/// <summary>An HF decoder: transforms the list of token strings; the results are concatenated at the end.</summary>
internal abstract class TokenDecoder
{
    public abstract List<string> DecodeChain(List<string> tokens);

    public string Decode(List<string> tokens) => string.Concat(DecodeChain(tokens));
}

internal sealed class SequenceDecoder(IReadOnlyList<TokenDecoder> steps) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        foreach (var step in steps) tokens = step.DecodeChain(tokens);
        return tokens;
    }
}

/// <summary>Byte-level: map chars back to bytes and read them as UTF-8 (invalid sequences become U+FFFD).</summary>
internal sealed class ByteLevelDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (string token in tokens)
        {
            bool allMapped = true;
            foreach (char c in token)
                if (c >= ByteLevelPreTokenizer.CharToByte.Length || ByteLevelPreTokenizer.CharToByte[c] < 0) { allMapped = false; break; }
            if (allMapped)
                foreach (char c in token) bytes.Add((byte)ByteLevelPreTokenizer.CharToByte[c]);
            else
                bytes.AddRange(Encoding.UTF8.GetBytes(token)); // e.g. an added token outside the byte alphabet
        }
        return [Encoding.UTF8.GetString(bytes.ToArray())];
    }
}

/// <summary>Metaspace: ▁ becomes a space; in the first token (unless prepend_scheme is never) the ▁s are dropped.</summary>
internal sealed class MetaspaceDecoder(char replacement, bool prepends) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var sb = new StringBuilder(tokens[i].Length);
            foreach (char c in tokens[i])
            {
                if (c != replacement) sb.Append(c);
                else if (!(i == 0 && prepends)) sb.Append(' ');
            }
            result.Add(sb.ToString());
        }
        return result;
    }
}

internal sealed class ReplaceDecoder(string? literal, string? regex, string content) : TokenDecoder
{
    private readonly Regex? _regex = regex is null ? null : new Regex(regex, RegexOptions.CultureInvariant);

    public override List<string> DecodeChain(List<string> tokens) =>
        tokens.Select(t => literal is not null
            ? (literal.Length == 0 ? t : t.Replace(literal, content, StringComparison.Ordinal))
            : _regex!.Replace(t, content.Replace("$", "$$"))).ToList();
}

/// <summary>Runs of &lt;0xNN&gt; tokens become the UTF-8 text they encode (one U+FFFD per byte if invalid).</summary>
internal sealed class ByteFallbackDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        void Flush()
        {
            if (pending.Count == 0) return;
            string? text = TryUtf8(pending.ToArray());
            if (text is not null) result.Add(text);
            else for (int k = 0; k < pending.Count; k++) result.Add("\uFFFD");
            pending.Clear();
        }
        foreach (string token in tokens)
        {
            if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            {
                pending.Add(b);
                continue;
            }
            Flush();
            result.Add(token);
        }
        Flush();
        return result;
    }

    private static string? TryUtf8(byte[] bytes)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return null;
        }
    }
}

internal sealed class FuseDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Strips up to <c>start</c> leading and <c>stop</c> trailing copies of a char from every token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        foreach (string t in tokens)
        {
            int s = 0, e = t.Length;
            while (s < start && s < e && t[s] == content) s++;
            int trailing = 0;
            while (trailing < stop && e > s && t[e - 1] == content) { e--; trailing++; }
            result.Add(t[s..e]);
        }
        return result;
    }
}

/// <summary>WordPiece: "##" pieces glue to the previous token, others get a space; then HF's cleanup of spaces
/// before punctuation and contractions.</summary>
internal sealed class WordPieceDecoder(string prefix, bool cleanup) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            string token = tokens[i];
            if (i != 0) token = token.StartsWith(prefix, StringComparison.Ordinal) ? token[prefix.Length..] : " " + token;
            if (cleanup) token = Cleanup(token);
            result.Add(token);
        }
        return result;
    }

    public static string Cleanup(string s) => s.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",")
        .Replace(" ' ", "'").Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" do not", " don't")
        .Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");
}

/// <summary>BPE with an end-of-word suffix: the suffix becomes a space (none after the last token).</summary>
internal sealed class BpeSuffixDecoder(string suffix) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
            result.Add(tokens[i].Replace(suffix, i == tokens.Count - 1 ? "" : " ", StringComparison.Ordinal));
        return result;
    }
}

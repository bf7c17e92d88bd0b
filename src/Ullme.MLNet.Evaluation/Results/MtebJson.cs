using System.Text;

namespace Ullme.MLNet.Evaluation.Results;

/// <summary>
/// Python's json module writes NaN, Infinity and -Infinity as bare tokens, which System.Text.Json rejects even with
/// named floating-point literals allowed (it expects them quoted). Reading quotes them outside string literals
/// first; writing emits bare tokens through <see cref="System.Text.Json.Utf8JsonWriter.WriteRawValue(string, bool)"/>.
/// </summary>
internal static class MtebJson
{
    private static readonly string[] Bare = ["-Infinity", "Infinity", "NaN"];

    /// <summary>Quotes bare NaN / Infinity / -Infinity tokens so System.Text.Json can parse them as named literals.</summary>
    public static string QuoteNamedLiterals(string json) => Rewrite(json);

    private static string Rewrite(string json)
    {
        var sb = new StringBuilder(json.Length + 16);
        int i = 0;
        while (i < json.Length)
        {
            char c = json[i];
            if (c == '"')
            {
                int end = StringEnd(json, i);
                sb.Append(json, i, end - i + 1);
                i = end + 1;
                continue;
            }
            string? token = Bare.FirstOrDefault(t => string.CompareOrdinal(json, i, t, 0, t.Length) == 0);
            if (token is not null)
            {
                sb.Append('"').Append(token).Append('"');
                i += token.Length;
                continue;
            }
            sb.Append(c);
            i++;
        }
        return sb.ToString();
    }

    // Index of the closing quote of the string starting at json[start] == '"'.
    private static int StringEnd(string json, int start)
    {
        for (int j = start + 1; j < json.Length; j++)
        {
            if (json[j] == '\\') { j++; continue; }
            if (json[j] == '"') return j;
        }
        throw new UllmeException("malformed JSON: unterminated string");
    }
}
